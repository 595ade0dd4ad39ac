"""``medvision-eval compare RUN_A RUN_B``: paired bootstrap of two runs on their shared samples.

Reads each run's ``samples_<task>.jsonl`` (rows with ``id``, ``status`` and a ``metrics`` dict of
per-sample floats, ``null`` = NaN). For every task both runs scored, samples are paired by id;
for every per-sample metric both runs report, the statistic is the NaN-ignoring mean (so MAE/MRE
are means over each run's parsed samples, IoU/F1/SR means over all shared samples), and the
paired bootstrap resamples the shared samples once for both runs: the interval of the
difference A - B accounts for the pairing. Metric names are the report's vocabulary (``SR`` for
the per-sample success flag, :mod:`medvision_eval.metric_names`); derived: ``IoU>=0.5`` (the
paper's IoU>0.5 column, which v1 computed as IoU >= 0.5) when ``IoU`` is present.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from .metric_names import canonical
from .schema import Interval
from .stats import DEFAULT_N_BOOT, mean_stat, paired_bootstrap

SAMPLES_GLOB = "samples_*.jsonl"


class MetricComparison(BaseModel):
    metric: str
    a: Interval
    b: Interval
    diff: Interval  # a - b
    p_value: float
    n_valid_a: int
    n_valid_b: int


class TaskComparison(BaseModel):
    task: str
    n_a: int
    n_b: int
    n_shared: int
    metrics: list[MetricComparison] = Field(default_factory=list)


class Comparison(BaseModel):
    run_a: str
    run_b: str
    seed: int
    n_boot: int
    protocol_a: str | None = None
    protocol_b: str | None = None
    tasks: list[TaskComparison] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def _nan(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def load_sample_metrics(path: Path) -> dict[str, dict[str, float]]:
    """id -> per-sample metrics (NaN for null) from one ``samples_<task>.jsonl``."""
    out: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            sid = row.get("id", row.get("sample_id"))
            if sid is None:
                continue
            metrics = {canonical(k): _nan(v) for k, v in (row.get("metrics") or {}).items()}
            if "IoU" in metrics:
                metrics["IoU>=0.5"] = float(metrics["IoU"] >= 0.5) if not math.isnan(metrics["IoU"]) else math.nan
            out[str(sid)] = metrics
    return out


def _task_files(run: Path) -> dict[str, Path]:
    return {p.name[len("samples_"):-len(".jsonl")]: p for p in sorted(Path(run).glob(SAMPLES_GLOB))}


def _protocol(run: Path) -> str | None:
    for name in ("results.json", "run.json"):
        path = Path(run) / name
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            proto = data.get("protocol")
            if isinstance(proto, dict):
                return proto.get("name")
            if isinstance(proto, str):
                return proto
    return None


def compare_task(
    task: str, a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], *, seed: int, n_boot: int
) -> TaskComparison:
    shared = sorted(set(a) & set(b))
    names = sorted(set().union(*(a[i].keys() for i in shared)) & set().union(*(b[i].keys() for i in shared))) if shared else []
    out = TaskComparison(task=task, n_a=len(a), n_b=len(b), n_shared=len(shared))
    for metric in names:
        va = np.array([a[i].get(metric, math.nan) for i in shared], dtype=np.float64)
        vb = np.array([b[i].get(metric, math.nan) for i in shared], dtype=np.float64)
        cols_a = np.stack([np.nan_to_num(va, nan=0.0), ~np.isnan(va)], axis=1)
        cols_b = np.stack([np.nan_to_num(vb, nan=0.0), ~np.isnan(vb)], axis=1)
        res = paired_bootstrap(cols_a, cols_b, mean_stat(0, 1), n_boot=n_boot, seed=seed)
        out.metrics.append(MetricComparison(
            metric=metric, a=res["a"], b=res["b"], diff=res["diff"], p_value=res["p_value"],
            n_valid_a=int((~np.isnan(va)).sum()), n_valid_b=int((~np.isnan(vb)).sum()),
        ))
    return out


def compare_runs(run_a: Path, run_b: Path, *, seed: int = 0, n_boot: int = DEFAULT_N_BOOT) -> Comparison:
    """Paired comparison of two run directories, task by task, on the samples both scored."""
    run_a, run_b = Path(run_a), Path(run_b)
    files_a, files_b = _task_files(run_a), _task_files(run_b)
    if not files_a or not files_b:
        missing = run_a if not files_a else run_b
        raise FileNotFoundError(f"no {SAMPLES_GLOB} in {missing}: score the run first (medvision-eval score)")
    result = Comparison(run_a=str(run_a), run_b=str(run_b), seed=seed, n_boot=n_boot,
                        protocol_a=_protocol(run_a), protocol_b=_protocol(run_b))
    if result.protocol_a != result.protocol_b:
        result.notes.append(f"protocols differ: {result.protocol_a} vs {result.protocol_b}; prompts and parsers differ")
    for task in sorted(set(files_a) | set(files_b)):
        if task not in files_a or task not in files_b:
            result.notes.append(f"task {task!r} scored in only one run; skipped")
            continue
        comp = compare_task(task, load_sample_metrics(files_a[task]), load_sample_metrics(files_b[task]),
                            seed=seed, n_boot=n_boot)
        if comp.n_shared < max(comp.n_a, comp.n_b):
            result.notes.append(f"{task}: {comp.n_shared} shared samples (A {comp.n_a}, B {comp.n_b}); only shared ones compared")
        result.tasks.append(comp)
    return result


def _fmt(iv: Interval) -> str:
    return f"{iv.value:.4g} [{iv.low:.4g}, {iv.high:.4g}]"


def format_p(p: float) -> str:
    """``< 0.001`` below 0.001 (a bootstrap p of 0 means none of the resamples crossed 0), else 3 decimals."""
    if p is None or math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def comparison_table(result: Comparison):
    """A rich table of the comparison (imported lazily: rich is only needed for the terminal)."""
    from rich.table import Table

    table = Table(title=f"A = {result.run_a}   B = {result.run_b}   (paired bootstrap, {result.n_boot} resamples, seed {result.seed})")
    for col in ("task", "metric", "n", "A", "B", "A - B [95 % CI]", "p"):
        table.add_column(col)
    for task in result.tasks:
        for m in task.metrics:
            table.add_row(task.task, m.metric, str(task.n_shared), _fmt(m.a), _fmt(m.b), _fmt(m.diff), format_p(m.p_value))
    if result.notes:
        table.caption = "; ".join(result.notes)
    return table
