"""A new task family from outside medvision-eval, with its own samples: how many labelled
structures a slice shows.

The sample builder reads the official detection plans of any MedVision data directory (one sample
per annotated slice; the target is the number of distinct labels with a box on that slice); the
task asks for that count. Registered through the ``medvision_eval_families`` and
``medvision_eval_tasks`` hooks in :mod:`medvision_eval_example.plugin`.
"""

from medvision_eval.data.families import SampleBuilder
from medvision_eval.schema import Target
from medvision_eval.tasks.base import Task
from medvision_eval.tasks.common import measurement_scores

FAMILY = "structure_count"


class StructureCountSamples(SampleBuilder):
    name = FAMILY
    planner_kind = "detection"  # the samples come from benchmark_plan_detection_v*.json.gz

    def configs(self, catalogue):
        """One structure-count config per detection config of the data root (else of the paper)."""
        sources = [catalogue.get(n) for n in catalogue.local] or catalogue.all()
        return [c.model_copy(update={"name": c.name.replace("_BoxSize_", "_StructureCount_"), "task": FAMILY})
                for c in sources if c.task == "detection"]

    def targets(self, data, config, facts, entry, height, width):
        labels = sorted({int(p["label"]) for p in entry.get("slice_profile", []) or [] if p.get("bboxes")})
        if labels:
            names = [facts["labels"].get(lab, str(lab)) for lab in labels]
            target = Target(values=(float(len(labels)),), unit="count", names=("count",))
            candidates = sorted(facts["labels"].values())  # every structure the dataset labels
            yield "count", ("structures", None, target, {"metric_key": "count", "present": names, "candidates": candidates})


class StructureCountTask(Task):
    name = FAMILY
    family = FAMILY
    description = "Number of labelled structures visible on a slice (example plugin family)."
    k, unit, answer_names, decimals = 1, "count", ("count",), 0

    def prompt(self, sample, geometry):
        candidates = sample.extra["candidates"]
        return (f"Task:\nGiven the input medical image: {sample.image_description}, count how many of these "
                f"structures are visible: {', '.join(candidates)}.\n"
                + self.protocol.format_block("The answer should be a single integer without any units or additional text."))

    def plausible_range(self, sample):
        return 0.0, float(len(sample.extra["candidates"]))

    def score(self, samples, predictions):
        return measurement_scores(self, samples, predictions)
