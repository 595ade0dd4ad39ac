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
    # v1's np.float32 of a huge number is inf: an infinite MAE in one group
    labels = ["liver"] * 60 + ["left kidney"] * 60
    samples = [det_sample(i, label) for i, label in enumerate(labels)]
    task = DetectionTask(get_protocol("paper"))
    preds = [task.parse("0, 0, 0.5, 0.5")] * 120
    scores = task.score(samples, preds)
    scores["MAE"][-1] = np.inf
    result = task.aggregate(samples, preds, scores, seed=0)
    groups = {r["group"]: r for r in result.tables["groups"]}
    assert groups["Kidney @ CT (A)"]["MAE"] == np.inf
    anatomy = {r["set"]: r for r in result.tables["table2"]}["anatomy"]
    assert anatomy["MAE"] == 0.0  # the inf group is skipped, only Liver (MAE 0) remains
    assert anatomy["total_samples"] == 120


# -- v1 float32 box arithmetic ----------------------------------------------------------------

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import v1_reference as ref  # noqa: E402

from medvision_eval.tasks.metrics import box_overlaps, box_overlaps_v1_float32  # noqa: E402

UNIT = (0.0, 0.0, 1.0, 1.0)
# Exact-boundary boxes: the true IoU with the unit target is exactly 0.5 (a 0.8 x 0.625 or
# 0.5 x 1 box inside it). v1 parses the answer to float32 and its area comes out just below 0.5;
# ``corrected`` keeps the decimals in float64 and gets 0.5.
# (answer, v1 IoU, corrected IoU)
BOUNDARY = [
    ("0.003, 0.1, 0.803, 0.725", 0.4999999701976776, 0.5),
    ("0.1, 0.2, 0.9, 0.825", 0.4999999701976776, 0.5),
    ("0.3, 0.1, 0.925, 0.9", 0.4999999701976776, 0.5),
    ("0.02, 0, 0.52, 1", 0.4999999701976776, 0.5),
]


@pytest.mark.parametrize("answer,v1_iou,exact_iou", BOUNDARY)
def test_exact_boundary_boxes_flip_iou_half_between_paper_and_corrected(answer, v1_iou, exact_iou):
    assert ref.iou([np.float32(x) for x in answer.split(",")], [np.float64(v) for v in UNIT]) == v1_iou
    paper, corrected = DetectionTask(get_protocol("paper")), DetectionTask(get_protocol("corrected"))
    samples = [det_sample(i, "liver", UNIT) for i in range(60)]
    preds = [paper.parse(answer)] * 60
    scores = paper.score(samples, preds)
    assert scores["IoU"][0] == v1_iou  # bit for bit
    assert corrected.score(samples[:1], [corrected.parse(f"<answer>{answer}</answer>")])["IoU"][0] == exact_iou
    # Table 2 counts the sample as v1 does: IoU>0.5 is 0 under paper
    result = paper.aggregate(samples, preds, scores)
    assert {r["set"]: r for r in result.tables["table2"]}["anatomy"]["IoU>0.5"] == 0.0


def test_float32_values_in_float64_arithmetic_are_not_v1():
    # the previous paper scorer (float32 values, float64 arithmetic) said 0.4999999907 here; v1 says 0.5
    answer = "0.01, 0, 0.51, 1"
    pred = np.array([[float(np.float32(x)) for x in answer.split(",")]])
    assert box_overlaps(pred, np.array([UNIT]))["IoU"][0] == 0.49999999068677425
    assert box_overlaps_v1_float32(pred, np.array([UNIT]))["IoU"][0] == 0.5
    assert ref.iou([np.float32(x) for x in answer.split(",")], [np.float64(v) for v in UNIT]) == 0.5
    task = DetectionTask(get_protocol("paper"))
    assert task.score([det_sample(0, "liver", UNIT)], [task.parse(answer)])["IoU"][0] == 0.5


def test_paper_overlaps_equal_v1_bit_for_bit_on_random_boxes():
    rng = np.random.default_rng(7)
    n = 3000
    t = np.round(rng.uniform(0, 1, (n, 4)), 4)
    t[:, [0, 2]] = np.sort(t[:, [0, 2]], axis=1)
    t[:, [1, 3]] = np.sort(t[:, [1, 3]], axis=1)
    p = np.round(rng.uniform(-0.1, 1.1, (n, 4)), 3)
    inside = rng.random(n) < 0.3  # predictions inside the target: float32 intersection and Precision
    p[inside] = t[inside] + np.array([0.001, 0.002, -0.001, -0.003])
    p32 = p.astype(np.float32)
    got = box_overlaps_v1_float32(p32.astype(np.float64), t)
    want = {"IoU": [], "Precision": [], "Recall": [], "F1": []}
    for pi, ti in zip(p32, t):
        pv, tv = list(pi), [np.float64(v) for v in ti]
        want["IoU"].append(ref.iou(pv, tv))
        want["Precision"].append(ref.precision(pv, tv))
        want["Recall"].append(ref.recall(pv, tv))
        want["F1"].append(ref.f1(pv, tv))
    for name, values in want.items():
        np.testing.assert_array_equal(got[name], np.array(values, dtype=np.float64), err_msg=name)
    exact = box_overlaps(p32.astype(np.float64), t)
    assert (exact["IoU"] != got["IoU"]).sum() > 100  # float64 really differs from v1 in the last bits


# -- v1 float32 pixel-size statement ------------------------------------------------------------

from medvision_eval.models import geometry as GEO  # noqa: E402
from medvision_eval.protocol import stated_pixel_size_v1  # noqa: E402
from medvision_eval.tasks import prompts  # noqa: E402
from medvision_eval.tasks.tl_size import TumorLesionSizeTask  # noqa: E402

# (geometry, square image side, header spacing, v1's statement, the float64 value's statement)
PIXEL_PAIRS = [
    ("gemma3", 176, 0.7, "0.138", "0.137"),  # 896 x 896 (Gemma3 / MedGemma)
    ("internvl3", 120, 0.7, "0.188", "0.187"),  # v1's fixed 448 (InternVL3; MedDr the same)
    ("llava_onevision", 78, 0.8, "0.162", "0.163"),  # select_best_resolution canvas
    ("mllama", 134, 0.7, "0.168", "0.167"),  # Llama-3.2-Vision's replayed resize
    ("clip336_pad", 162, 0.7, "0.338", "0.337"),  # LLaVA-Med / HuatuoGPT / HealthGPT 336
]


def tl_sample(side: int, spacing: float) -> Sample:
    sp = float(np.float32(spacing))  # nibabel's header zooms are float32
    return Sample(id="t1", task="tl_size", config="C", dataset="D", index=0,
                  image=ImageRef(path="v.nii.gz", slice_axis=2, slice_index=0), image_size=(side, side),
                  pixel_spacing=(sp, sp), label="liver tumor", modality="CT", plane="A",
                  image_description="abdominal CT", target=Target(values=(20.0, 10.0), unit="mm", names=("major", "minor")))


@pytest.mark.parametrize("family,side,spacing,v1_text,f64_text", PIXEL_PAIRS)
def test_paper_states_v1_float32_pixel_size(family, side, spacing, v1_text, f64_text):
    geometry = GEO.perceive(GEO.named(family), side, side)
    assert geometry.v1_float32
    s = tl_sample(side, spacing)
    # v1: np.float32 spacing / (resized / original) stays float32 under numpy 2
    ratio = geometry.v1[0] / side
    assert f"{np.float32(np.float32(spacing) / ratio):.3f}" == v1_text
    assert f"{float(np.float32(spacing)) / ratio:.3f}" == f64_text
    paper = TumorLesionSizeTask(get_protocol("paper")).prompt(s, geometry)
    assert f"The pixel size for this image is {v1_text} mm (width) x {v1_text} mm (height)." in paper
    pw, ph = prompts.stated_pixel_size(s.pixel_spacing, geometry.original, geometry.content)
    assert f"{pw:.3f}" == f64_text  # corrected keeps float64 (here content == the v1 size)
    corrected = TumorLesionSizeTask(get_protocol("corrected")).prompt(s, geometry)
    assert f"{f64_text} mm (width) x {f64_text} mm (height)." in corrected


def test_qwen_family_states_float64_as_v1():
    # v1 divided by a ratio of numpy int64s (image_grid_thw), so the Qwen/Lingshu statement is float64
    geometry = GEO.perceive(GEO.named("qwen2_5_vl"), 504, 504)
    assert not geometry.v1_float32 and geometry.v1 == (504, 504)
    pw, _ = stated_pixel_size_v1((float(np.float32(0.7)),) * 2, (176, 176), (896, 896), float32=False)
    assert f"{pw:.3f}" == "0.137"
    pw, _ = stated_pixel_size_v1((float(np.float32(0.7)),) * 2, (176, 176), (896, 896), float32=True)
    assert f"{pw:.3f}" == "0.138"
