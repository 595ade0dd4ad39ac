"""The plugin module named by the ``medvision_eval`` entry point: three hook implementations."""

from medvision_eval.hookspecs import FamilyEntry, ModelEntry, TaskEntry, hookimpl


@hookimpl
def medvision_eval_models():
    return [
        ModelEntry(
            name="midpoint",
            target="medvision_eval_example.midpoint:MidpointModel",
            backend="example",
            description="Answers the middle of each task's plausible range (example plugin).",
        )
    ]


@hookimpl
def medvision_eval_tasks():
    return [
        TaskEntry(
            name="tl_area",
            target="medvision_eval_example.tl_area:LesionAreaTask",
            description="Area of the tumour/lesion ellipse in mm² (example plugin).",
        ),
        TaskEntry(
            name="structure_count",
            target="medvision_eval_example.structures:StructureCountTask",
            description="Number of labelled structures on a slice (example plugin; its own sample family).",
        ),
    ]


@hookimpl
def medvision_eval_families():
    return [
        FamilyEntry(
            name="structure_count",
            target="medvision_eval_example.structures:StructureCountSamples",
            description="one sample per annotated slice of the detection plans; target: number of labels",
        )
    ]
