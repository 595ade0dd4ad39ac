"""The plugin module named by the ``medvision_eval`` entry point: two hook implementations."""

from medvision_eval.hookspecs import ModelEntry, TaskEntry, hookimpl


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
        )
    ]
