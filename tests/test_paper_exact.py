"""Paper exactness: v1's float32 arithmetic and Table 2's finite-only averaging (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest

from medvision_eval.protocol import get_protocol
from medvision_eval.schema import ImageRef, Sample, Target
from medvision_eval.tasks import groups as G
from medvision_eval.tasks.detection import DetectionTask


def det_sample(i: int, label: str, target=(0.0, 0.0, 0.5, 0.5)) -> Sample:
    return Sample(id=f"d{i:04d}", task="detection", config="C", dataset="D", index=i,
                  image=ImageRef(path="v.nii.gz", slice_axis=2, slice_index=i), image_size=(64, 64),
                  pixel_spacing=(1.0, 1.0), label=label, modality="CT", plane="A",
                  target=Target(values=target, unit="relative", names=("x1", "y1", "x2", "y2")))


def test_weighted_mean_finite_only_skips_inf_groups():
    values = np.array([0.2, np.inf, np.nan, 0.4])
    weights = np.array([10.0, 50.0, 5.0, 30.0])
    include = np.ones(4, dtype=bool)
    assert G.weighted_mean(values, weights, include, "valid", finite_only=True) == pytest.approx((2 + 12) / 40)
    assert G.weighted_mean(values, weights, include, "valid") == np.inf  # flag off: v1 T/L/A/D arithmetic
    assert G.weighted_mean(values, weights, include, "included", finite_only=True) == pytest.approx(14 / 95)
    assert np.isnan(G.weighted_mean(np.array([np.inf]), np.array([3.0]), np.ones(1, bool), "valid", finite_only=True))


def test_inf_group_mae_does_not_make_table2_inf():
    huge = "1" + "0" * 40  # np.float32 of it is inf, as in v1's process_results
    rows = [("liver", "0, 0, 0.5, 0.5")] * 60 + [("left kidney", "0, 0, 0.5, 0.5")] * 59 + [("left kidney", f"0, 0, 0.5, {huge}")]
    samples = [det_sample(i, label) for i, (label, _) in enumerate(rows)]
    task = DetectionTask(get_protocol("paper"))
    preds = [task.parse(t) for _, t in rows]
    result = task.aggregate(samples, preds, task.score(samples, preds), seed=0)
    groups = {r["group"]: r for r in result.tables["groups"]}
    assert groups["Kidney @ CT (A)"]["MAE"] == np.inf
    anatomy = {r["set"]: r for r in result.tables["table2"]}["anatomy"]
    assert anatomy["MAE"] == 0.0  # the inf group is skipped, only Liver (MAE 0) remains
    assert anatomy["total_samples"] == 120
