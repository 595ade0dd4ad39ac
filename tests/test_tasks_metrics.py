"""Per-sample metrics equal the official v1 formulas (scalar reference in v1_reference.py) on
generated cases, and box overlaps agree with shapely as an independent geometry oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

import v1_reference as ref
from medvision_eval.metric_names import canonical
from medvision_eval.protocol import get_protocol
from medvision_eval.schema import ImageRef, Sample, Target
from medvision_eval.tasks.ad_measure import AngleDistanceTask
from medvision_eval.tasks.detection import DetectionTask
from medvision_eval.tasks.metrics import below_rate_indicator, box_overlaps
from medvision_eval.tasks.tl_size import TumorLesionSizeTask

N_CASES = 12_000


def make_sample(i: int, task: str, target: tuple[float, ...], unit: str, **extra) -> Sample:
    return Sample(
        id=f"{task}-{i:06d}", task=task, config="X_Task01_Axial_Test", dataset="X", index=i,
        image=ImageRef(path="img.nii.gz", slice_axis=2, slice_index=i), image_size=(256, 192),
        pixel_spacing=(0.8, 1.0), label="liver", modality="CT", plane="A",
        target=Target(values=target, unit=unit, names=tuple(f"v{j}" for j in range(len(target)))), extra=extra,
    )


def fmt(v: float, rng: np.random.Generator) -> str:
    style = rng.integers(0, 6)
    if style == 0:
        return f"{v:.4f}"
    if style == 1:
        return f"{v:.3g}"
    if style == 2 and 0 < abs(v) < 1:  # leading-dot decimal: v1 reads ".5" as 5
        return f"{v:.3f}".replace("0.", ".", 1)
    if style == 3:
        return f"{v:.2e}"  # scientific notation: v1 splits "1.5e-03" into 1.5, -3
    if style == 4:
        return str(int(round(v)))
    return f"{v:.1f}"


def detection_text(rng: np.random.Generator, target: np.ndarray) -> str:
    kind = rng.integers(0, 10)
    if kind == 0:
        return ""
    if kind == 1:
        return "I cannot determine the bounding box from this image."
    if kind == 2:  # pixel units
        vals = rng.uniform(0, 512, 4)
        return ", ".join(f"{v:.0f}" for v in vals)
    if kind == 3:  # extra numbers before and after
        vals = rng.uniform(0, 1, 4)
        return f"Step 1: in 2 steps. Answer: [{', '.join(fmt(v, rng) for v in vals)}] (3 digits)"
    if kind == 4:  # inverted box
        x1, y1, x2, y2 = target
        return f"{x2:.3f}, {y2:.3f}, {x1:.3f}, {y1:.3f}"
    if kind == 5:  # zero-area box
        x = rng.uniform(0, 1)
        return f"{x:.3f}, 0.2, {x:.3f}, 0.6"
    if kind == 6:  # ranges
        return "x from 10-12, y 0.2-0.4"
    if kind == 7:  # near the target
        return ", ".join(fmt(v, rng) for v in target + rng.normal(0, 0.05, 4))
    vals = np.sort(rng.uniform(-0.2, 1.2, 4).reshape(2, 2), axis=0).ravel()[[0, 2, 1, 3]]
    return ", ".join(fmt(v, rng) for v in vals)


def random_targets(rng: np.random.Generator, n: int) -> np.ndarray:
    lo = rng.uniform(0, 0.8, (n, 2))
    size = rng.uniform(0.02, 0.5, (n, 2))
    boxes = np.concatenate([lo, np.minimum(lo + size, 1.0)], axis=1)
    degenerate = rng.random(n) < 0.02  # zero-area ground truth (v1 scores 0 before dividing)
    boxes[degenerate, 2] = boxes[degenerate, 0]
    return boxes


def compare(vec: dict[str, np.ndarray], expected: list[dict[str, float]], names: tuple[str, ...]) -> None:
    for name in names:
        want = np.array([e[name] for e in expected], dtype=np.float64)
        got = np.asarray(vec[canonical(name)], dtype=np.float64)  # v1 "success" is our "SR"
        assert np.array_equal(np.isnan(got), np.isnan(want)), name
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12, equal_nan=True, err_msg=name)


def test_detection_matches_v1_on_generated_cases():
    rng = np.random.default_rng(20251118)
    targets = random_targets(rng, N_CASES)
    texts = [detection_text(rng, t) for t in targets]
    task = DetectionTask(get_protocol("paper"))
    samples = [make_sample(i, "detection", tuple(t), "relative") for i, t in enumerate(targets)]
    scores = task.score(samples, [task.parse(t) for t in texts])
    expected = [ref.detection_sample(text, list(t)) for text, t in zip(texts, targets)]
    compare(scores, expected, ("IoU", "F1", "Precision", "Recall", "MAE", "success"))
    # the generator reached every branch
    assert (scores["SR"] == 0).sum() > 1000
    assert ((scores["SR"] == 1) & (scores["IoU"] == 0)).sum() > 500  # inverted/zero-area/far
    assert (scores["IoU"] > 0.5).sum() > 50
    assert (scores["MAE"] > 1).sum() > 100  # pixel answers count as successes


@pytest.mark.parametrize("family", ["tl_size", "ad_measure"])
def test_value_metrics_match_v1_on_generated_cases(family):
    rng = np.random.default_rng(7 if family == "tl_size" else 8)
    k = 2 if family == "tl_size" else 1
    task = TumorLesionSizeTask(get_protocol("paper")) if k == 2 else AngleDistanceTask(get_protocol("paper"))
    n = N_CASES
    targets = rng.uniform(0.5, 80.0, (n, k))
    near_zero = rng.random(n) < 0.05  # near-zero GT angles: MRE explodes, as in the paper
    targets[near_zero] = rng.uniform(0.001, 0.2, (near_zero.sum(), k))
    texts = []
    for t in targets:
        kind = rng.integers(0, 8)
        if kind == 0:
            texts.append("")
        elif kind == 1:
            texts.append(f"about {t[0]:.0f}-{t[0] + 2:.0f} mm")  # a range: v1 reads 10, -12
        elif kind == 2:
            texts.append(f"The answer is {', '.join(fmt(v, rng) for v in t * rng.uniform(0.5, 1.5, k))} mm, from 3 views")
        elif kind == 3:
            texts.append(", ".join(fmt(v, rng) for v in t * 12.5))  # pixel units
        elif kind == 4:
            texts.append(", ".join(fmt(v, rng) for v in -t))  # negative: parsed under the paper path
        else:
            texts.append(", ".join(fmt(v, rng) for v in t + rng.normal(0, 3, k)))
    samples = [make_sample(i, family, tuple(t), "mm", metric_type="distance") for i, t in enumerate(targets)]
    scores = task.score(samples, [task.parse(x) for x in texts])
    expected = [ref.values_sample(x, list(t)) for x, t in zip(texts, targets)]
    compare(scores, expected, ("MAE", "MRE", "success"))
    assert np.nanmax(scores["MRE"]) > 100  # near-zero ground truth
    for level in (0.1, 0.2, 0.3, 1.0):
        want = np.array([(b is not None and b < round(level * 10)) for b in (ref.mre_bucket(e["MRE"]) for e in expected)])
        np.testing.assert_array_equal(below_rate_indicator(scores["MRE"], level), want.astype(float))
    # MRE<1.0 is the success indicator (last bucket is [0.9, inf))
    np.testing.assert_array_equal(below_rate_indicator(scores["MRE"], 1.0), scores["SR"])


def test_box_overlaps_agree_with_shapely():
    rng = np.random.default_rng(3)
    n = 10_000
    a = rng.uniform(0, 1, (n, 4))
    b = rng.uniform(0, 1, (n, 4))
    for boxes in (a, b):  # well-formed corners for the oracle
        boxes[:, [0, 2]] = np.sort(boxes[:, [0, 2]], axis=1)
        boxes[:, [1, 3]] = np.sort(boxes[:, [1, 3]], axis=1)
    got = box_overlaps(a, b)
    pa = shapely.box(a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    pb = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    inter = shapely.area(shapely.intersection(pa, pb))
    union = shapely.area(shapely.union(pa, pb))
    area_a, area_b = shapely.area(pa), shapely.area(pb)
    np.testing.assert_allclose(got["IoU"], inter / union, atol=1e-12)
    np.testing.assert_allclose(got["Precision"], inter / area_a, atol=1e-9)
    np.testing.assert_allclose(got["Recall"], inter / area_b, atol=1e-9)
    np.testing.assert_allclose(got["F1"], 2 * inter / (area_a + area_b), atol=1e-12)
    assert (inter == 0).sum() > 100 and (inter > 0).sum() > 1000


def test_inverted_and_zero_area_predictions_score_zero_not_nan():
    target = np.array([[0.2, 0.2, 0.6, 0.6]] * 3)
    pred = np.array([[0.6, 0.6, 0.2, 0.2], [0.3, 0.3, 0.3, 0.5], [0.3, 0.5, 0.5, 0.3]])
    got = box_overlaps(pred, target)
    for name in ("IoU", "Precision", "Recall", "F1"):
        np.testing.assert_array_equal(got[name], [0.0, 0.0, 0.0])


def test_giant_pixel_box_has_recall_one():
    got = box_overlaps(np.array([[50.0, 60.0, 200.0, 220.0]]), np.array([[0.25, 0.25, 0.5, 0.5]]))
    assert got["Recall"][0] == 0.0  # the target lies below the pixel box's lower-left corner
    got = box_overlaps(np.array([[0.0, 0.0, 200.0, 220.0]]), np.array([[0.25, 0.25, 0.5, 0.5]]))
    assert got["Recall"][0] == 1.0 and got["IoU"][0] == pytest.approx(0.0625 / (200 * 220))


def test_zero_area_target_gives_nan_only_after_intersection_test():
    # A zero-width target can never intersect (x1 >= x2), so v1 returns 0, not NaN.
    got = box_overlaps(np.array([[0.1, 0.1, 0.9, 0.9]]), np.array([[0.5, 0.2, 0.5, 0.8]]))
    assert got["Recall"][0] == 0.0 and not math.isnan(got["F1"][0])


def test_paper_scores_against_float16_targets_corrected_against_full_precision():
    from medvision_eval.protocol import get_protocol
    from medvision_eval.schema import ParseStatus, Prediction
    from medvision_eval.tasks.tl_size import TumorLesionSizeTask

    exact = (12.3456789, 7.0123456)
    f16 = tuple(float(np.float16(v)) for v in exact)
    s = make_sample(0, "tl_size", f16, "mm", plan_values=list(exact))
    answer = Prediction(status=ParseStatus.ok, values=exact)
    paper, corrected = TumorLesionSizeTask(get_protocol("paper")), TumorLesionSizeTask(get_protocol("corrected"))
    assert paper.score([s], [answer])["MAE"][0] == pytest.approx(np.mean(np.abs(np.subtract(exact, f16))))
    assert corrected.score([s], [answer])["MAE"][0] == 0.0
    assert paper.true_values(s) == f16 and corrected.true_values(s) == exact
