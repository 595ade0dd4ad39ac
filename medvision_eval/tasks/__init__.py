"""Built-in task families, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from ..hookspecs import TaskEntry, hookimpl


@hookimpl
def medvision_eval_tasks() -> list[TaskEntry]:
    return [
        TaskEntry(
            name="detection",
            target="medvision_eval.tasks.detection:DetectionTask",
            description="Bounding box of an anatomy or lesion (28 paper configs); IoU, F1, precision, recall.",
        ),
        TaskEntry(
            name="tl_size",
            target="medvision_eval.tasks.tl_size:TumorLesionSizeTask",
            description="Major and minor diameter of a tumour/lesion in mm (10 paper configs); MAE, MRE.",
        ),
        TaskEntry(
            name="ad_measure",
            target="medvision_eval.tasks.ad_measure:AngleDistanceTask",
            description="Angle (degrees) or distance (mm) from anatomical landmarks (5 paper configs); MAE, MRE.",
        ),
    ]
