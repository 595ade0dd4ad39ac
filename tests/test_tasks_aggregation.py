"""The paper's tables reproduced on fixtures whose numbers are computed by hand (dyadic boxes so
every value is exact), and aggregation independent of sample order and scoring batch size."""

from __future__ import annotations

import random

import numpy as np
import pytest

from medvision_eval.protocol import get_protocol
from medvision_eval.schema import ImageRef, Sample, Target
from medvision_eval.tasks.ad_measure import AngleDistanceTask
from medvision_eval.tasks.detection import DetectionTask
from medvision_eval.tasks.groups import box_ratio_bin
from medvision_eval.tasks.tl_size import TumorLesionSizeTask

TARGET = (0.0, 0.0, 0.5, 0.5)
PERFECT = "0, 0, 0.5, 0.5"  # IoU 1, P 1, R 1, F1 1
HALF = "0, 0, 0.25, 0.5"  # I .125, A_p .125, A_t .25: IoU .5, P 1, R .5, F1 2/3
SHIFTED = "0.25, 0.25, 0.75, 0.75"  # I .0625, U .4375: IoU 1/7, P .25, R .25, F1 .25
FAIL = "no idea"


def det_sample(i: int, label: str, dataset: str = "D", modality: str = "CT", **extra) -> Sample:
    return Sample(id=f"d{i:04d}", task="detection", config="C", dataset=dataset, index=i,
                  image=ImageRef(path="v.nii.gz", slice_axis=2, slice_index=i), image_size=(64, 64),
                  pixel_spacing=(1.0, 1.0), label=label, modality=modality, plane="A",
                  target=Target(values=TARGET, unit="relative", names=("x1", "y1", "x2", "y2")), extra=extra)


def detection_fixture():
    rows = ([("liver", PERFECT)] * 30 + [("liver", HALF)] * 20 + [("liver", FAIL)] * 10  # Liver @ CT (A): 60
            + [("left kidney", HALF)] * 100  # Kidney @ CT (A): 100
            + [("kidney tumor", PERFECT)] * 25 + [("kidney tumor", SHIFTED)] * 25  # Kidney Tumor/Lesion: 50
            + [("spleen", PERFECT)] * 10  # Spleen: 10 < 50, dropped
            + [("implant", PERFECT)] * 60  # Others: dropped
            + [("DemoOrgan", PERFECT)] * 5)  # not in the official map: regroups to itself
    samples = [det_sample(i, label) for i, (label, _) in enumerate(rows)]
    return samples, [text for _, text in rows]


def run(task, samples, texts, seed=0):
    preds = [task.parse(t) for t in texts]
    return task.aggregate(samples, preds, task.score(samples, preds), seed=seed)


def test_detection_table2_by_hand():
    task = DetectionTask(get_protocol("paper"))
    result = run(task, *detection_fixture())
    t2 = {row["set"]: row for row in result.tables["table2"]}
    anatomy, tl = t2["anatomy"], t2["T/L"]
    # anatomy = Liver (60) + Kidney (100); Spleen (<50), Others and DemoOrgan (<50) dropped
    assert anatomy["total_samples"] == 160 and anatomy["num_regions"] == 2
    assert anatomy["IoU"] == pytest.approx((30 + 20 * 0.5 + 100 * 0.5) / 160)
    assert anatomy["Recall"] == pytest.approx((30 + 20 * 0.5 + 100 * 0.5) / 160)
    assert anatomy["Precision"] == pytest.approx((30 + 20 + 100) / 160)
    assert anatomy["F1"] == pytest.approx((30 + 20 * 2 / 3 + 100 * 2 / 3) / 160)
    assert anatomy["SR"] == pytest.approx(150 / 160)
    assert anatomy["IoU>0.5"] == pytest.approx(150 / 160)  # IoU 0.5 counts: v1 tests >=
    assert anatomy["F1>0.5"] == pytest.approx(150 / 160)
    assert tl["total_samples"] == 50 and tl["num_regions"] == 1
    assert tl["IoU"] == pytest.approx((25 + 25 / 7) / 50)
    assert tl["Precision"] == pytest.approx((25 + 25 * 0.25) / 50)
    assert tl["F1"] == pytest.approx((25 + 25 * 0.25) / 50)
    assert tl["IoU>0.5"] == pytest.approx(0.5)
    groups = {row["group"]: row for row in result.tables["groups"]}
    assert set(groups) == {"Liver @ CT (A)", "Kidney @ CT (A)", "Kidney Tumor/Lesion @ CT (A)",
                           "Spleen @ CT (A)", "Others @ CT (A)", "DemoOrgan @ CT (A)"}
    assert not groups["Spleen @ CT (A)"]["kept"] and groups["Spleen @ CT (A)"]["set"] == "anatomy"
    assert groups["Others @ CT (A)"]["set"] == "excluded" and not groups["Others @ CT (A)"]["kept"]
    assert groups["Liver @ CT (A)"]["MAE"] == pytest.approx((30 * 0 + 20 * 0.25 / 4) / 50)  # over successes
    assert result.metrics["anatomy/IoU"].value == anatomy["IoU"]
    assert result.metrics["anatomy/IoU"].low < anatomy["IoU"] < result.metrics["anatomy/IoU"].high
    assert result.parse_stats == {"ok": 275, "malformed": 0, "missing": 10, "refused": 0, "error": 0}
    sweep = {row["set"]: row for row in result.tables["iou_sweep"]}
    assert sweep["anatomy"]["IoU>=0.50"] == pytest.approx(150 / 160)
    assert sweep["anatomy"]["IoU>=0.55"] == pytest.approx(30 / 160)
    assert sweep["all"]["num_samples"] == 285


def test_box_ratio_bins():
    assert box_ratio_bin(0.0) == "<0.05" and box_ratio_bin(0.05) == "0.05~0.10"
    assert box_ratio_bin(0.2499) == "0.20~0.25" and box_ratio_bin(0.9) == ">=0.90"
    task = DetectionTask(get_protocol("paper"))
    samples, texts = detection_fixture()
    samples = [s.model_copy(update={"extra": {"box_area_ratio": 0.03 if i % 2 else 0.12}}) for i, s in enumerate(samples)]
    rows = run(task, samples, texts).tables["box_ratio"]
    everything = {r["box_img_group"]: r for r in rows if r["label"] == "all labels"}
    assert everything["<0.05"]["sample_size"] == 142 and everything["0.10~0.15"]["sample_size"] == 143
    liver = [r for r in rows if r["label"] == "Liver @ CT" and r["box_img_group"] == "<0.05"][0]
    assert liver["sample_size"] == 30


def tl_sample(i, label, target, modality="CT"):
    return Sample(id=f"t{i:04d}", task="tl_size", config="C", dataset="D", index=i,
                  image=ImageRef(path="v.nii.gz", slice_axis=2, slice_index=i), image_size=(64, 64),
                  pixel_spacing=(1.0, 1.0), label=label, modality=modality, plane="A",
                  target=Target(values=target, unit="mm", names=("major", "minor")))


def test_tl_table3_by_hand():
    # liver tumor: 4 samples, targets (10, 5): answers err (1, 0.5) -> MRE .1, MAE .75 ; (5, 0) -> MRE .5 ;
    # one failure, one (10, 5) exact.  kidney tumor: 2 samples, both failures (dropped from Overall).
    rows = [("liver tumor", (10.0, 5.0), "11, 5.5"), ("liver tumor", (10.0, 5.0), "15, 5"),
            ("liver tumor", (10.0, 5.0), ""), ("liver tumor", (10.0, 5.0), "10, 5"),
            ("kidney tumor", (20.0, 10.0), "n/a"), ("kidney tumor", (20.0, 10.0), "")]
    samples = [tl_sample(i, lab, t) for i, (lab, t, _) in enumerate(rows)]
    task = TumorLesionSizeTask(get_protocol("paper"))
    result = run(task, samples, [r[2] for r in rows])
    table = {row["label"]: row for row in result.tables["table3"]}
    liver = table["liver tumor @ CT (A)"]
    assert liver["num_samples"] == 4 and liver["SR"] == 0.75
    assert liver["MAE"] == pytest.approx((0.75 + 2.5 + 0.0) / 3)
    assert liver["MRE"] == pytest.approx((0.1 + 0.25 + 0.0) / 3)
    # buckets: the "0.1" MRE is 1/(10 + 1e-15) = 0.0999... (v1's epsilon) -> bucket 0; .25 -> 2; 0 -> 0
    assert liver["MRE<0.1"] == pytest.approx(2 / 4) and liver["MRE<0.2"] == pytest.approx(2 / 4)
    assert liver["MRE<0.3"] == pytest.approx(3 / 4)
    assert np.isnan(table["kidney tumor @ CT (A)"]["MRE"])
    overall = table["Overall"]  # v1: the all-failed kidney group leaves the overall line entirely
    assert overall["num_samples"] == 4 and overall["SR"] == 0.75 and overall["MAE"] == liver["MAE"]
    assert result.metrics["all/SR"].value == 0.75 and result.metrics["all/SR_cov"].value == pytest.approx(3 / 6)
    # coverage-penalised: failures count as answering 0 -> AE = mean target, RE ~ 1
    assert result.metrics["all/MAE_cov"].value == pytest.approx((0.75 + 2.5 + 7.5 + 0 + 15 + 15) / 6)
    assert result.metrics["all/MRE_cov"].value == pytest.approx((0.1 + 0.25 + 1 + 0 + 1 + 1) / 6)


def ad_sample(i, dataset, kind, key, value):
    return Sample(id=f"a{i:04d}", task="ad_measure", config="C", dataset=dataset, index=i,
                  image=ImageRef(path="v.nii.gz", slice_axis=0, slice_index=i), image_size=(64, 64),
                  pixel_spacing=(1.0, 1.0), label=key, modality="XR", plane="S",
                  target=Target(values=(value,), unit="degree" if kind == "angle" else "mm", names=(key,)),
                  extra={"metric_type": kind, "metric_key": key, "metric_name": ""})


def test_ad_table4_by_hand():
    rows = [("Ceph-Biometrics-400", "angle", "A1", 2.0, "3"),  # MRE .5
            ("Ceph-Biometrics-400", "angle", "A1", 0.01, "1.01"),  # near-zero GT: MRE 100
            ("Ceph-Biometrics-400", "angle", "A2", 10.0, ""),  # all-failed label
            ("Ceph-Biometrics-400", "distance", "D1", 50.0, "45"),  # MRE .1
            ("FeTA24", "distance", "BPD", 80.0, "-80"),  # negative counts as parsed (paper)
            ("DemoAbdomenCT", "distance", "x", 10.0, "10")]
    samples = [ad_sample(i, *r[:4]) for i, r in enumerate(rows)]
    task = AngleDistanceTask(get_protocol("paper"))
    result = run(task, samples, [r[4] for r in rows])
    t4 = {row["group"]: row for row in result.tables["table4"]}
    assert set(t4) == {"Overall", "Ceph-Angle", "Ceph-Distance", "FeTA-Distance", "DemoAbdomenCT-Distance"}
    angle = t4["Ceph-Angle"]  # label A1: MAE (1 + 1)/2, MRE (0.5 + 100)/2, SR 1 ; A2: NaN, SR 0
    assert angle["MAE"] == pytest.approx(1.0)  # valid labels only (A1, 2 samples)
    assert angle["MRE"] == pytest.approx((0.5 + 100.0) / 2, rel=1e-6)  # float32(1.01)
    assert angle["SR"] == pytest.approx((1.0 * 2 + 0.0 * 1) / 3)
    assert angle["num_samples"] == 3
    assert t4["FeTA-Distance"]["MAE"] == pytest.approx(160.0) and t4["FeTA-Distance"]["MRE"] == pytest.approx(2.0)
    overall = t4["Overall"]  # v1: NaN labels skipped in the numerator, their samples kept in the total
    assert overall["num_samples"] == 6
    assert overall["MAE"] == pytest.approx((1.0 * 2 + 5.0 + 160.0 + 0.0) / 6)
    assert overall["SR"] == pytest.approx(5 / 6)
    labels = {row["label"]: row for row in result.tables["labels"]}
    assert labels["Ceph-Biometrics-400_angle_A1"]["group"] == "Ceph-Angle"
    corrected = AngleDistanceTask(get_protocol("corrected"))
    assert [corrected.keep(s) for s in samples] == [True, False, True, True, True, True]
    assert all(task.keep(s) for s in samples)


@pytest.mark.parametrize("family", ["detection", "tl_size"])
def test_results_independent_of_order_and_batch_size(family):
    if family == "detection":
        task = DetectionTask(get_protocol("paper"))
        samples, texts = detection_fixture()
    else:
        task = TumorLesionSizeTask(get_protocol("paper"))
        rng = np.random.default_rng(0)
        samples = [tl_sample(i, ["liver tumor", "kidney tumor"][i % 2], (20.0, 10.0)) for i in range(300)]
        texts = [f"{20 + rng.normal() * 4:.2f}, {10 + rng.normal() * 2:.2f}" if i % 9 else "" for i in range(300)]
    preds = [task.parse(t) for t in texts]
    whole = task.score(samples, preds)
    batched = [task.score(samples[i:i + 7], preds[i:i + 7]) for i in range(0, len(samples), 7)]
    for name, values in whole.items():
        np.testing.assert_array_equal(values, np.concatenate([b[name] for b in batched]))
    reference = task.aggregate(samples, preds, whole, seed=3).model_dump()
    perm = list(range(len(samples)))
    random.Random(1).shuffle(perm)
    s2, p2 = [samples[i] for i in perm], [preds[i] for i in perm]
    shuffled = task.aggregate(s2, p2, task.score(s2, p2), seed=3).model_dump()
    assert _nan_equal(shuffled, reference)


def _nan_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_nan_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b
