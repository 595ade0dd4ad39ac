"""Angle/distance from anatomical landmarks: one value in degrees or mm (paper Table 4).

Prompt: v1 ``doc_to_text_BiometricsFromLandmarks`` with ``_get_biometric_prompt_angle`` /
``_get_biometric_prompt_distance`` (named and unnamed variants; distance units "mm" ->
"millimeters"; the pixel size always in "mm"). Sample fields read: ``extra["metric_type"]``
("angle" | "distance"), ``extra["metric_name"]`` (may be empty), landmark names
``extra["landmarks"]`` (list) or ``extra["p1"]..["p4"]``, ``extra["metric_key"]`` (for the label;
falls back to ``sample.label``), ``extra["unit"]`` (falls back to the target's unit).
Parse: the last number (paper; a negative answer counts as parsed, as in ``parse_outputs`` +
``summarize_AD_task`` that made the tables, although eval-time ``process_results`` rejected it)
or one non-negative number inside ``<answer>`` (corrected). Under ``corrected``, angle samples
with ground truth below 0.1 degrees are left out (``Protocol.keep``).
Aggregate: v1 labels ``<dataset>_<metric_type>_<metric_key>``, the overall line and the groups
FeTA-Distance, Ceph-Angle, Ceph-Distance; other datasets get ``<dataset>-<Angle|Distance>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ..schema import AnswerSpec, PerceivedGeometry, Sample
from . import groups as G
from . import measure as M
from . import prompts
from .base import Summary
from .common import MeasurementTask
from .parsing import StrictRules
from .tl_size import physical_diagonal

# v1 overall line: NaN label values are skipped in the numerator but their samples stay in the total.
OVERALL_SPEC = {m: "included" for m in M.OVERALL_METRICS}
# v1 group averages: every metric over the labels where it is defined.
GROUP_SPEC = {m: "valid" for m in M.OVERALL_METRICS}
PAPER_GROUPS = (("FeTA24_distance", "FeTA-Distance"), ("Ceph-Biometrics-400_angle", "Ceph-Angle"),
                ("Ceph-Biometrics-400_distance", "Ceph-Distance"))


def metric_type(sample: Sample) -> str:
    kind = str(sample.extra.get("metric_type") or "").lower()
    if kind in ("angle", "distance"):
        return kind
    return "angle" if sample.target.unit.startswith("deg") else "distance"


def landmark_names(sample: Sample) -> list[str]:
    names = sample.extra.get("landmarks")
    if names:
        return [str(n) for n in names]
    return [str(sample.extra[p]) for p in ("p1", "p2", "p3", "p4") if p in sample.extra]


def ad_label(sample: Sample) -> str:
    """v1's ``f"{dataset_name}_{metric_type}_{metric_key}"``."""
    key = sample.extra.get("metric_key") or sample.label
    return f"{sample.dataset}_{metric_type(sample)}_{key}"


def ad_group(label: str, dataset: str, kind: str) -> str:
    for needle, group in PAPER_GROUPS:
        if needle in label:
            return group
    return f"{dataset}-{kind.capitalize()}"


class AngleDistanceTask(MeasurementTask):
    name: ClassVar[str] = "ad_measure"
    prompt_version: ClassVar[str] = "v1.0"
    description: ClassVar[str] = "Angle (degrees) or distance (mm) from landmarks; MAE, MRE (paper Table 4)."
    k: ClassVar[int] = 1

    @staticmethod
    def unit_of(sample: Sample) -> str:
        return str(sample.extra.get("unit") or sample.target.unit or ("degree" if metric_type(sample) == "angle" else "mm"))

    # -- prompting ---------------------------------------------------------------------------
    def task_sentence(self, sample: Sample) -> str:
        name = str(sample.extra.get("metric_name") or "")
        unit = self.unit_of(sample)
        points = landmark_names(sample) + ["?"] * 4
        if metric_type(sample) == "angle":
            template = prompts.ANGLE_NAMED if name else prompts.ANGLE_UNNAMED
            return template.format(name=name, unit=unit, p1=points[0], p2=points[1], p3=points[2], p4=points[3])
        unit = unit.strip().replace("mm", "millimeters")
        template = prompts.DISTANCE_NAMED if name else prompts.DISTANCE_UNNAMED
        return template.format(name=name, unit=unit, p1=points[0], p2=points[1])

    def prompt(self, sample: Sample, geometry: PerceivedGeometry) -> str:
        return (
            prompts.AD_TASK_HEAD.format(image_description=sample.image_description)
            + self.task_sentence(sample)
            + prompts.ADDITIONAL_INFO
            + self.protocol.size_statement(sample.pixel_spacing, geometry, "mm")
            + self.protocol.format_block(prompts.V1_FORMAT_AD, prompts.LATER_FORMAT_AD)
        )

    def answer_spec(self, sample: Sample) -> AnswerSpec:
        kind = metric_type(sample)
        high = 90.0 if kind == "angle" else physical_diagonal(sample)  # GT angle is acute (planner)
        name = str(sample.extra.get("metric_name") or kind)
        return AnswerSpec(k=1, names=(name,), unit="degree" if kind == "angle" else "mm", low=0.0, high=high,
                          template=self.protocol.answer_template(), decimals=3)

    def strict_rules(self, sample: Sample | None = None) -> StrictRules:
        if sample is None:  # parse(text) alone cannot know the metric: degree and length units both accepted
            return StrictRules(k=1, unit="angle-or-length", nonnegative=True)
        # The score step knows the sample: an angle takes degree units only, a distance mm/cm only.
        return StrictRules(k=1, unit="degree" if metric_type(sample) == "angle" else "mm", nonnegative=True)

    # -- scoring -------------------------------------------------------------------------------
    columnar: ClassVar[bool] = True  # the score step may hand summarize() ProfiledSamples

    def summarize(self, samples: Sequence[Sample], scores: dict[str, np.ndarray], *, seed: int) -> Summary:
        per = M.per_sample_table_metrics(scores)
        names, codes = G.group_index(samples, ad_label)
        rows = M.group_rows(names, codes, per, key="label")
        last = G.representatives(samples, codes, len(names))  # v1 took the last sample of each label
        group_of = [ad_group(n, s.dataset, metric_type(s)) for n, s in zip(names, last)]
        everything = np.ones(len(names), dtype=bool)
        table4 = [M.weighted_row("Overall", rows, everything, OVERALL_SPEC, include_by=None, key="group")]
        metrics = M.weighted_intervals("all/", per, codes, len(names), everything, OVERALL_SPEC, include_by=None, seed=seed)
        metrics.update(M.coverage_intervals("all/", per, seed=seed))
        ordered = [g for _, g in PAPER_GROUPS] + sorted(set(group_of) - {g for _, g in PAPER_GROUPS})
        for group in ordered:
            include = np.array([g == group for g in group_of], dtype=bool)
            if not include.any():
                continue
            table4.append(M.weighted_row(group, rows, include, GROUP_SPEC, include_by=None, key="group"))
            metrics.update(M.weighted_intervals(f"{group}/", per, codes, len(names), include,
                                                {m: "valid" for m in ("MAE", "MRE", "SR")}, include_by=None, seed=seed))
        for row, group in zip(rows, group_of):
            row["group"] = group
        labels_table = sorted(rows, key=lambda r: (-r["num_samples"], r["label"]))
        return Summary(
            metrics=metrics,
            tables={"table4": table4, "labels": labels_table, "coverage": [M.pooled_row("All samples", per, key="group")]},
            notes=[
                "v1 semantics: one value; MAE/MRE over parsed samples, MRE<k over all samples; a negative "
                "answer counts as parsed under 'paper' (as in the tables' parse_outputs path).",
                "Angle MRE explodes near 0 degrees (GT is the acute inter-line angle); " + self.protocol.filter_note(),
                "MAE_cov/MRE_cov (not in the paper): means over all samples, a failure counted as answering 0.",
            ],
        )
