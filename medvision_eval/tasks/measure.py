"""Table arithmetic shared by the measurement families (tumour/lesion size, angle/distance).

Per group (v1 ``_calculate_final_metrics_{TL,AD}_task``): ``MAE`` and ``MRE`` are means over the
parsed samples, ``SR`` is parsed / all, ``MRE<k`` is ``#(min(int(10*MRE), 9) < 10k) / N_all``.
Beside them, ``MAE_cov`` and ``MRE_cov`` (coverage-penalised, ours): means over *all* samples in
which a failed answer counts as the error of answering 0 (absolute error ``|t|``, relative ≈ 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..schema import Interval
from ..stats import bootstrap_intervals, mean_intervals
from . import groups as G
from .metrics import below_rate_indicator

MRE_LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 11))
ROW_METRICS = ("MAE", "MRE", "SR") + tuple(f"MRE<{k:.1f}" for k in MRE_LEVELS) + ("MAE_cov", "MRE_cov")
OVERALL_METRICS = ("MAE", "MRE", "SR", "MRE<0.1", "MRE<0.2", "MRE<0.3")
COVERAGE_METRICS = ("MAE_cov", "MRE_cov")


def per_sample_table_metrics(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    per = {"MAE": scores["MAE"], "MRE": scores["MRE"], "SR": scores["SR"]}
    for k in MRE_LEVELS:
        per[f"MRE<{k:.1f}"] = below_rate_indicator(scores["MRE"], k)
    per["MAE_cov"] = scores["MAE_cov"]
    per["MRE_cov"] = scores["MRE_cov"]
    return per


def group_rows(names: Sequence[str], codes: np.ndarray, per: Mapping[str, np.ndarray], key: str) -> list[dict[str, Any]]:
    n_groups = len(names)
    sizes = np.bincount(codes, minlength=n_groups)
    means = {m: G.group_means(per[m], codes, n_groups) for m in ROW_METRICS}
    rows = []
    for g, name in enumerate(names):
        row: dict[str, Any] = {key: name, "num_samples": int(sizes[g])}
        row.update({m: float(means[m][g]) for m in ROW_METRICS})
        rows.append(row)
    return rows


def weighted_row(
    name: str, rows: Sequence[dict[str, Any]], include: np.ndarray, spec: Mapping[str, str], *, include_by: str | None, key: str
) -> dict[str, Any]:
    """A set-level row: each metric a sample-weighted mean of group values (see groups.weighted_mean)."""
    weights = np.array([r["num_samples"] for r in rows], dtype=np.float64)
    inc = include.copy()
    if include_by is not None:
        inc &= ~np.isnan(np.array([r[include_by] for r in rows], dtype=np.float64))
    out: dict[str, Any] = {key: name}
    for metric, denominator in spec.items():
        values = np.array([r[metric] for r in rows], dtype=np.float64)
        out[metric] = G.weighted_mean(values, weights, inc, denominator)
    out["num_samples"] = int(weights[inc].sum())
    out["num_groups"] = int(inc.sum())
    return out


def pooled_row(name: str, per: Mapping[str, np.ndarray], key: str) -> dict[str, Any]:
    """Plain means over all samples (coverage-penalised metrics and the all-sample SR)."""
    n = len(per["SR"])
    row: dict[str, Any] = {key: name, "num_samples": n}
    for m in ("SR",) + COVERAGE_METRICS:
        row[m] = float(np.mean(per[m])) if n else float("nan")
    return row


def weighted_intervals(
    prefix: str,
    per: Mapping[str, np.ndarray],
    codes: np.ndarray,
    n_groups: int,
    include: np.ndarray,
    spec: Mapping[str, str],
    *,
    include_by: str | None,
    seed: int,
) -> dict[str, Interval]:
    """Bootstrap of exactly the weighted statistic of :func:`weighted_row` (groups fixed)."""
    needed = list(dict.fromkeys(list(spec) + ([include_by] if include_by else [])))
    layout = G.GroupLayout({m: per[m] for m in needed}, codes, n_groups)
    stats = {
        f"{prefix}{metric}": layout.statistic(G.WeightedSpec(metric, include, denominator, include_by))
        for metric, denominator in spec.items()
    }
    return bootstrap_intervals(layout.columns, stats, seed=seed)


def coverage_intervals(prefix: str, per: Mapping[str, np.ndarray], *, seed: int) -> dict[str, Interval]:
    arrays = {f"{prefix}{m}": per[m] for m in COVERAGE_METRICS}
    arrays[f"{prefix}SR_cov"] = per["SR"]
    return mean_intervals(arrays, seed=seed)
