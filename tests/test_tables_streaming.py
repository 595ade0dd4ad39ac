"""The detection tables and intervals, computed without full per-sample indicator/masked/doubled
arrays (counts per group, columns built a block of rows at a time), equal the full-array arithmetic
of main 200dfdc (tests/tables_reference.py) bit for bit: on hostile scores (NaN, +-inf, values past
the bootstrap's finite cap), small and empty sets, one group, a label named "all labels", both
sample layouts (Sample lists and the score step's ProfiledSamples), and sample counts on both sides
of EXACT_MAX_N with several moment blocks."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from medvision_eval import stats
from medvision_eval.protocol import get_protocol
from medvision_eval.schema import ImageRef, Sample, Target
from medvision_eval.tasks import groups as G
from medvision_eval.tasks.detection import DetectionTask, at_least_counts, box_area_ratio
from medvision_eval.tasks.metrics import at_least_indicator

sys.path.insert(0, str(Path(__file__).parent))
import tables_reference as ref  # noqa: E402

LABELS = [("liver", "CT", "A"), ("kidney tumor", "CT", "A"), ("edema", "MRI", "S"), ("implant", "CT", "C"),
          ("spleen", "CT", "A"), ("enhancing tumor", "MRI", "A"), ("DemoOrgan", "XR", "C")]


def sample(i: int, label: str, modality: str, plane: str, ratio: float | None) -> Sample:
    x2 = 0.1 + 0.8 * ((i * 7919) % 97) / 97
    extra = {} if ratio is None else {"box_area_ratio": ratio}
    return Sample(id=f"s{i:06d}", task="detection", config="C", dataset="D", index=i,
                  image=ImageRef(path="v.nii.gz", slice_axis={"S": 0, "C": 1, "A": 2}[plane], slice_index=i),
                  image_size=(64, 64), pixel_spacing=(1.0, 1.0), label=label, modality=modality, plane=plane,
                  target=Target(values=(0.0, 0.0, x2, 0.5), unit="relative", names=("x1", "y1", "x2", "y2")),
                  extra=extra)


def make(n: int, rng: np.random.Generator, labels=LABELS, weights=None, hostile: bool = True):
    which = rng.choice(len(labels), size=n, p=weights)
    ratios = rng.uniform(0, 1, n)
    ratios[rng.random(n) < 0.05] = np.nan  # NaN lands in the last bin
    samples = [sample(i, *labels[w], None if i % 5 == 0 else float(ratios[i])) for i, w in enumerate(which)]
    scores = {m: rng.uniform(0, 1, n) for m in ("IoU", "F1", "Precision", "Recall")}
    for m in ("IoU", "F1", "Precision", "Recall"):  # exact thresholds, zeros
        scores[m][rng.random(n) < 0.1] = rng.choice([0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0])
    scores["SR"] = (rng.random(n) < 0.9).astype(np.float64)
    scores["MAE"] = np.where(scores["SR"] > 0, rng.uniform(0, 0.3, n), np.nan)
    if hostile and n:
        for m in ("F1", "Precision", "Recall"):
            scores[m][rng.random(n) < 0.03] = np.nan
        scores["MAE"][rng.integers(0, n)] = np.inf
        scores["MAE"][rng.integers(0, n)] = 1e305  # past the bootstrap's finite cap
        scores["Precision"][rng.integers(0, n)] = -np.inf
        scores["IoU"][rng.integers(0, n)] = np.nan
    return samples, scores


def profiled(samples: list[Sample]) -> G.ProfiledSamples:
    """The score step's layout: one Sample per profile, codes, the per-sample box ratio."""
    seen: dict[tuple, int] = {}
    profiles, codes = [], []
    for s in samples:
        key = (s.label, s.modality, s.plane, s.image.slice_axis)
        if key not in seen:
            seen[key] = len(profiles)
            profiles.append(s)
        codes.append(seen[key])
    return G.ProfiledSamples(profiles, np.array(codes), np.array([box_area_ratio(s) for s in samples]))


def dump(tables: dict, metrics: dict) -> str:
    """Every number at full precision (repr), NaN and inf included."""
    return json.dumps({"tables": tables, "metrics": {k: v.model_dump() for k, v in metrics.items()}}, allow_nan=True)


def assert_same(task: DetectionTask, samples, scores, seed: int = 3) -> str:
    with stats.track_approximations() as ours_approx:
        summary = task.summarize(samples, scores, seed=seed)
    with stats.track_approximations() as ref_approx:
        tables, metrics = ref.summarize(task, samples, scores, seed=seed)
    assert ours_approx == ref_approx
    ours, theirs = dump(summary.tables, summary.metrics), dump(tables, metrics)
    assert ours == theirs
    return ours


@pytest.fixture
def task():
    return DetectionTask(get_protocol("paper"))


@pytest.mark.parametrize("layout", ["samples", "profiled"])
@pytest.mark.parametrize("n", [0, 1, 49, 400, 1003])
def test_tables_equal_the_full_array_arithmetic_exact_bootstrap(task, n, layout):
    samples, scores = make(n, np.random.default_rng(n))
    assert_same(task, samples if layout == "samples" else profiled(samples), scores)


@pytest.mark.parametrize("layout", ["samples", "profiled"])
@pytest.mark.parametrize("n,limit", [(600, 599), (600, 600), (1500, 700), (2100, 50)])
def test_tables_equal_the_full_array_arithmetic_normal_limit(task, monkeypatch, n, limit, layout):
    """Just above and just at EXACT_MAX_N, with row blocks of 256 (a short last block)."""
    monkeypatch.setattr(stats, "EXACT_MAX_N", limit)
    monkeypatch.setattr(stats, "MOMENT_ROWS", 256)
    samples, scores = make(n, np.random.default_rng(n + limit))
    out = assert_same(task, samples if layout == "samples" else profiled(samples), scores)
    assert ("NaN" in out) and ("Infinity" in out)  # the hostile values reached the tables


def test_normal_limit_without_hostile_values_takes_the_unprepared_blocks(task, monkeypatch):
    """All blocks finite: the path that skips preparing copies gives the same bits too."""
    monkeypatch.setattr(stats, "EXACT_MAX_N", 100)
    monkeypatch.setattr(stats, "MOMENT_ROWS", 128)
    calls = []
    prepared = stats._prepared_block
    monkeypatch.setattr(stats, "_prepared_block", lambda raw: calls.append(1) or prepared(raw))
    samples, scores = make(1000, np.random.default_rng(7), hostile=False)
    assert_same(task, profiled(samples), scores)
    assert calls == []


@pytest.mark.parametrize("case", ["one group", "all below the floor", "only excluded", "one set", "all labels"])
def test_small_and_degenerate_group_layouts(task, monkeypatch, case):
    monkeypatch.setattr(stats, "EXACT_MAX_N", 300)
    monkeypatch.setattr(stats, "MOMENT_ROWS", 64)
    labels = {"one group": [("liver", "CT", "A")],
              "all below the floor": LABELS,
              "only excluded": [("implant", "CT", "A"), ("stent", "CT", "C")],
              "one set": [("kidney tumor", "CT", "A"), ("liver tumor", "CT", "A")],
              "all labels": [("all labels", "CT", "A"), ("liver", "CT", "A")]}[case]
    n = 120 if case == "all below the floor" else 700  # 7 labels, < 50 samples each
    samples, scores = make(n, np.random.default_rng(11), labels=labels)
    if case == "all labels":  # a plugin-like label key without the modality: "all labels" is also the bin's key
        monkeypatch.setattr(G, "detection_label_by_modality", lambda label, modality: label)
    for layout in (samples, profiled(samples)):
        assert_same(task, layout, scores)


def test_a_label_named_all_labels_merges_with_the_bin_row_as_v1_does(task):
    """The box-ratio table's one key collision, by hand: a label named "all labels" (impossible with
    the built-in "<label> @ <modality>" key) forms one group with its bin's all-labels row."""
    from medvision_eval.tasks import detection as D

    rng = np.random.default_rng(5)
    n = 300
    label_codes = rng.integers(0, 2, n)
    bins = rng.integers(0, len(G.BOX_RATIO_BINS), n)
    scores = {m: rng.uniform(0, 1, n) for m in D.BOX_METRICS}
    rows = D._box_ratio_table_doubled(["all labels", "liver"], label_codes, bins, scores)
    merged = [r for r in rows if r["label"] == "all labels"]
    for r in merged:  # the label's samples and every sample of the bin, one group
        b = G.BOX_RATIO_BINS.index(r["box_img_group"])
        assert r["sample_size"] == int((bins == b).sum() + ((bins == b) & (label_codes == 0)).sum())


def test_at_least_counts_are_the_indicator_sums():
    rng = np.random.default_rng(2)
    v = rng.uniform(0.4, 1.0, 5000)
    v[::17] = np.nan
    v[::23] = 0.7  # exactly on a threshold: v1 tests >=
    v[::29] = np.inf
    codes = rng.integers(0, 9, 5000)
    thresholds = (0.5, 0.6, 0.7, 0.8, 0.9)
    counts = at_least_counts(v, codes, 9, thresholds)
    for j, t in enumerate(thresholds):
        want = np.bincount(codes, weights=at_least_indicator(v, t), minlength=9)
        assert np.array_equal(counts[:, j].astype(np.float64), want)


def test_group_sums_without_nan_skip_nothing_and_equal_the_filtered_sums():
    rng = np.random.default_rng(4)
    v = rng.normal(size=10_000) * 1e6
    codes = rng.integers(0, 13, 10_000)
    s, c = G.group_sums(v, codes, 13)
    rs, rc = ref.group_sums(v, codes, 13)
    assert s.tobytes() == rs.tobytes() and c.tobytes() == rc.tobytes()
    v[5] = np.nan
    s, c = G.group_sums(v, codes, 13)
    rs, rc = ref.group_sums(v, codes, 13)
    assert s.tobytes() == rs.tobytes() and c.tobytes() == rc.tobytes()


def test_derived_columns_give_the_intervals_of_the_full_columns(monkeypatch):
    """mean_intervals of Derived columns (computed per row block) equals that of the arrays, on
    both sides of EXACT_MAX_N."""
    rng = np.random.default_rng(8)
    base = rng.uniform(0, 1, 3000)
    base[::31] = np.nan
    mask = rng.random(3000) < 0.4
    full = {"ind": at_least_indicator(base, 0.5), "masked": np.where(mask, base, np.nan)}
    lazy = {"ind": stats.Derived(3000, lambda lo, hi: at_least_indicator(base[lo:hi], 0.5)),
            "masked": stats.Derived(3000, lambda lo, hi: np.where(mask[lo:hi], base[lo:hi], np.nan))}
    for limit in (50_000, 1000):
        monkeypatch.setattr(stats, "EXACT_MAX_N", limit)
        monkeypatch.setattr(stats, "MOMENT_ROWS", 512)
        a = stats.mean_intervals(lazy, seed=1)
        b = ref.mean_intervals(full, seed=1)
        assert {k: v.model_dump() for k, v in a.items()} == {k: v.model_dump() for k, v in b.items()}
        assert all(math.isfinite(v.low) for v in a.values())
