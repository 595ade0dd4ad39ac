"""Tumour/lesion size: major and minor diameter (mm) of the ellipse fitted to a lesion
(paper Table 3).

Prompt: v1 ``doc_to_text_TumorLesionSize``. The unit is stated as the dataset gives it ("mm":
v1 received it as a one-element list and so never rewrote it to "millimeters"). The pixel size
is the one the model perceives (:func:`.prompts.size_statement`).
Parse: last 2 numbers (paper) or 2 non-negative numbers inside ``<answer>``, cm converted to mm
(corrected). Score: MAE/MRE over both diameters, no swapping of major/minor (v1).
Aggregate: v1 ``summarize_TL_task``: groups ``<renamed label> @ <modality> (<plane>)``; the
overall line weights group values by group size over the groups that have at least one parsed
answer (v1 drops groups whose MRE is NaN from the overall line, samples and all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ..schema import PerceivedGeometry
from ..schema import Sample
from . import groups as G
from . import measure as M
from . import prompts
from .base import Summary
from .common import MeasurementTask

# v1 overall line: every metric over groups with a non-NaN MRE, divided by their total samples.
OVERALL_SPEC = {m: "included" for m in M.OVERALL_METRICS}


def physical_diagonal(sample: Sample) -> float:
    (w, h), (pw, ph) = sample.image_size, sample.pixel_spacing
    return math.hypot(w * pw, h * ph)


class TumorLesionSizeTask(MeasurementTask):
    name: ClassVar[str] = "tl_size"
    prompt_version: ClassVar[str] = "v1.0"
    description: ClassVar[str] = "Major and minor diameter of a tumour/lesion in mm; MAE, MRE (paper Table 3)."
    k: ClassVar[int] = 2
    unit: ClassVar[str] = "mm"
    answer_names: ClassVar[tuple[str, ...]] = ("major axis", "minor axis")

    @staticmethod
    def unit_of(sample: Sample) -> str:
        return str(sample.extra.get("unit") or sample.target.unit or "mm")

    # -- prompting ---------------------------------------------------------------------------
    def prompt(self, sample: Sample, geometry: PerceivedGeometry) -> str:
        unit = self.unit_of(sample)
        return (
            prompts.TL_TASK.format(image_description=sample.image_description, label_name=sample.label, unit=unit)
            + prompts.ADDITIONAL_INFO
            + self.protocol.size_statement(sample.pixel_spacing, geometry, unit)
            + self.protocol.format_block(prompts.V1_FORMAT_TL, prompts.LATER_FORMAT_TL)
        )

    # -- scoring -------------------------------------------------------------------------------
    columnar: ClassVar[bool] = True  # the score step may hand summarize() ProfiledSamples

    def group_key(self, s: Sample) -> str:
        return G.tl_group(s.label, self.protocol.table_modality(s), G.plane_letter(s.plane, s.image.slice_axis))

    def summarize(self, samples: Sequence[Sample], scores: dict[str, np.ndarray], *, seed: int) -> Summary:
        per = M.per_sample_table_metrics(scores)
        names, codes = G.group_index(samples, self.group_key)
        rows = M.group_rows(names, codes, per, key="label")
        everything = np.ones(len(names), dtype=bool)
        overall = M.weighted_row("Overall", rows, everything, OVERALL_SPEC, include_by="MRE", key="label")
        coverage = M.pooled_row("All samples (coverage-penalised)", per, key="label")
        metrics = M.weighted_intervals("all/", per, codes, len(names), everything, OVERALL_SPEC, include_by="MRE", seed=seed)
        metrics.update(M.coverage_intervals("all/", per, seed=seed))
        table3 = sorted(rows, key=lambda r: (-r["num_samples"], r["label"])) + [overall]
        return Summary(
            metrics=metrics,
            tables={"table3": table3, "coverage": [coverage]},
            notes=[
                "v1 semantics: MAE/MRE over both diameters and over parsed samples only; MRE<k over all samples.",
                "v1 overall line: groups without any parsed answer are left out entirely (their samples too), "
                "which can raise the overall SR; all/SR_cov in metrics counts every sample.",
                "MAE_cov/MRE_cov (not in the paper): means over all samples, a failure counted as answering 0.",
            ],
        )
