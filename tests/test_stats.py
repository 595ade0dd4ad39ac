"""Bootstrap intervals, the paired bootstrap, and ``compare_runs`` on two run directories."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medvision_eval.compare import compare_runs, comparison_table, format_p
from medvision_eval.stats import bootstrap_intervals, mean_intervals, mean_stat, paired_bootstrap, resample_counts


def test_resample_counts_deterministic_and_complete():
    a = np.concatenate(list(resample_counts(50, 230, seed=4)))
    b = np.concatenate(list(resample_counts(50, 230, seed=4)))
    assert a.shape == (230, 50) and np.array_equal(a, b)
    assert np.all(a.sum(axis=1) == 50)
    assert not np.array_equal(a, np.concatenate(list(resample_counts(50, 230, seed=5))))


def test_mean_interval_matches_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 2.0, 2000)
    iv = mean_intervals({"x": x}, n_boot=2000, seed=1)["x"]
    assert iv.value == pytest.approx(x.mean())
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert iv.high - iv.low == pytest.approx(2 * half, rel=0.1)
    assert iv.low < iv.value < iv.high


def test_nan_ignoring_mean_and_ratio_statistic():
    x = np.array([1.0, np.nan, 3.0, np.nan])
    iv = mean_intervals({"x": x}, n_boot=200, seed=0)["x"]
    assert iv.value == 2.0 and 1.0 <= iv.low <= iv.high <= 3.0
    cols = np.stack([np.nan_to_num(x), ~np.isnan(x)], axis=1)
    assert bootstrap_intervals(cols, {"m": mean_stat(0, 1)}, n_boot=10, seed=0)["m"].value == 2.0


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    base = rng.normal(0.5, 0.2, 500)
    cols = lambda v: np.stack([v, np.ones_like(v)], axis=1)  # noqa: E731
    same = paired_bootstrap(cols(base), cols(base), mean_stat(0, 1), n_boot=300, seed=0)
    assert same["diff"].value == 0.0 and same["diff"].low == 0.0 and same["diff"].high == 0.0
    better = paired_bootstrap(cols(base + 0.01 + rng.normal(0, 0.001, 500)), cols(base), mean_stat(0, 1), n_boot=300, seed=0)
    # pairing removes the between-sample spread: the shift of 0.01 is resolved although sd = 0.2
    assert 0.009 < better["diff"].low < better["diff"].value < better["diff"].high < 0.011
    assert better["p_value"] < 0.01


def write_run(path, protocol, rows):
    path.mkdir()
    (path / "results.json").write_text(json.dumps({"protocol": {"name": protocol}}))
    with open(path / "samples_detection.jsonl", "w") as fh:
        for sid, iou, mae in rows:
            fh.write(json.dumps({"id": sid, "status": "ok", "metrics": {"IoU": iou, "MAE": mae}}) + "\n")


def test_compare_runs_pairs_by_id(tmp_path):
    ids = [f"s{i:03d}" for i in range(200)]
    rng = np.random.default_rng(0)
    iou = rng.uniform(0, 1, 200)
    write_run(tmp_path / "a", "paper", [(i, float(v) + 0.05, 0.1) for i, v in zip(ids, iou)])
    # B in reverse order, one sample missing, one extra, one failure (null MAE)
    rows_b = [(i, float(v), None if i == "s005" else 0.2) for i, v in zip(ids, iou)][::-1][1:]
    rows_b.append(("zzz", 0.9, 0.0))
    write_run(tmp_path / "b", "paper", rows_b)
    result = compare_runs(tmp_path / "a", tmp_path / "b", seed=0, n_boot=200)
    (task,) = result.tasks
    assert task.task == "detection" and task.n_shared == 199 and task.n_a == 200 and task.n_b == 200
    metrics = {m.metric: m for m in task.metrics}
    assert set(metrics) == {"IoU", "IoU>=0.5", "MAE"}  # the one metric vocabulary
    assert metrics["IoU"].diff.value == pytest.approx(0.05)
    assert metrics["IoU"].diff.low == pytest.approx(0.05) and metrics["IoU"].diff.high == pytest.approx(0.05)
    assert metrics["MAE"].diff.value == pytest.approx(-0.1) and metrics["MAE"].n_valid_b == 198
    assert any("shared" in n for n in result.notes)
    assert comparison_table(result).row_count == 3
    assert metrics["IoU"].p_value < 0.001 and format_p(metrics["IoU"].p_value) == "< 0.001"
    assert format_p(0.0123) == "0.012"
    again = compare_runs(tmp_path / "a", tmp_path / "b", seed=0, n_boot=200)
    assert again.model_dump() == result.model_dump()


def test_compare_needs_scored_runs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(FileNotFoundError, match="score the run first"):
        compare_runs(tmp_path / "a", tmp_path / "b")
