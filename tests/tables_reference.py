"""The detection tables and mean intervals exactly as main 200dfdc computed them (full per-sample
arrays: 20 indicator columns, doubled box-ratio scores, masked copies per set, the row blocks of
the normal-limit bootstrap prepared by copy), kept verbatim as the reference the streaming
arithmetic of :mod:`medvision_eval.tasks.detection` and :mod:`medvision_eval.stats` must equal bit
for bit (tests/test_tables_streaming.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medvision_eval import stats as S
from medvision_eval.metric_names import canonical
from medvision_eval.schema import Interval, Sample
from medvision_eval.stats import DEFAULT_N_BOOT, FINITE_CAP, Statistic, _interval, bootstrap_intervals, mean_stat
from medvision_eval.tasks import groups as G
from medvision_eval.tasks.detection import (OVERLAPS, SETS, SWEEP, TABLE2_COLUMNS, V1_THRESHOLDS, box_ratio_bins,
                                            box_ratios, set_table)
from medvision_eval.tasks.label_maps import MINIMUM_GROUP_SIZE
from medvision_eval.tasks.metrics import at_least_indicator


def group_sums(values: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group: sum of non-NaN values and their count."""
    v = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(v)
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.bincount(codes[valid], weights=v[valid], minlength=n_groups)
    c = np.bincount(codes[valid], minlength=n_groups).astype(np.float64)
    return s, c


def group_means(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    s, c = group_sums(values, codes, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.where(c > 0, c, 1.0), np.nan)


def summarize(task: Any, samples, scores: dict[str, np.ndarray], *, seed: int) -> tuple[dict, dict]:
    """(tables, metrics) of ``DetectionTask.summarize`` as main 200dfdc computed them."""
    per = per_sample_table_metrics(scores)
    names, codes = G.group_index(samples, task.group_key)
    group_rows, sets = group_table(names, codes, per)
    table2 = set_table(group_rows, sets)
    sweep = sweep_table(per, codes, sets)
    ratio = box_ratio_table(samples, scores)
    metrics = headline(per, codes, sets, table2, seed=seed)
    return {"table2": table2, "groups": group_rows, "iou_sweep": sweep, "box_ratio": ratio}, metrics


def per_sample_table_metrics(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-sample quantities every detection table averages: overlaps, SR, indicators, MAE."""
    per = {name: scores[name] for name in OVERLAPS}
    per["SR"] = scores["SR"]
    for t in V1_THRESHOLDS:
        for name in ("IoU", "F1", "Precision", "Recall"):
            per[f"{name}>{t:.1f}"] = at_least_indicator(scores[name], t)
    per["MAE"] = scores["MAE"]
    return per


def group_table(names: list[str], codes: np.ndarray, per: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], list[str | None]]:
    """One row per group with v1's per-group metrics, its set, and whether Table 2 keeps it."""
    n_groups = len(names)
    sizes = np.bincount(codes, minlength=n_groups)
    means = {name: group_means(values, codes, n_groups) for name, values in per.items()}
    rows: list[dict[str, Any]] = []
    sets: list[str | None] = []
    for g, group in enumerate(names):
        kind = G.detection_set(group)
        kept = kind is not None and sizes[g] >= MINIMUM_GROUP_SIZE
        sets.append(kind if kept else None)
        row: dict[str, Any] = {"group": group, "set": kind or "excluded", "kept": bool(kept), "num_samples": int(sizes[g])}
        row.update({name: float(means[name][g]) for name in per})
        rows.append(row)
    return rows, sets


def set_table(group_rows: list[dict[str, Any]], sets: list[str | None]) -> list[dict[str, Any]]:
    """Table 2: per set, the sample-weighted mean of kept groups' metrics (NaN/inf values skipped)."""
    weights = np.array([r["num_samples"] for r in group_rows], dtype=np.float64)
    out = []
    for kind in SETS:
        include = np.array([s == kind for s in sets], dtype=bool)
        row: dict[str, Any] = {"set": kind}
        for col in TABLE2_COLUMNS + ("MAE",):
            values = np.array([r[col] for r in group_rows], dtype=np.float64)
            row[col] = G.weighted_mean(values, weights, include, "valid", finite_only=True)
        row["total_samples"] = int(weights[include].sum())
        row["num_regions"] = int(include.sum())
        out.append(row)
    return out


def sweep_table(per: dict[str, np.ndarray], codes: np.ndarray, sets: list[str | None]) -> list[dict[str, Any]]:
    """Share of samples with IoU >= t for t = 0.50 .. 0.95, per Table 2 set and over all samples."""
    member = np.array([sets[c] for c in codes], dtype=object) if len(codes) else np.array([], dtype=object)
    rows = []
    for kind in SETS + ("all",):
        mask = np.ones(len(codes), dtype=bool) if kind == "all" else (member == kind)
        row: dict[str, Any] = {"set": kind, "num_samples": int(mask.sum())}
        iou = per["IoU"][mask]
        for t in SWEEP:
            row[f"IoU>={t:.2f}"] = float(np.mean(iou >= t)) if iou.size else float("nan")
        row["mean_Acc@IoU[0.50:0.95]"] = float(np.mean([row[f"IoU>={t:.2f}"] for t in SWEEP])) if iou.size else float("nan")
        rows.append(row)
    return rows


def box_area_ratio(sample: Sample) -> float:
    """Box/image area ratio: the sample's own value, else v1's fallback from the relative target box."""
    ratio = sample.extra.get("box_area_ratio")
    if ratio is not None:
        return float(ratio)
    x1, y1, x2, y2 = sample.target.values[:4]
    return abs(x2 - x1) * abs(y2 - y1)


def box_ratios(samples) -> np.ndarray:
    """:func:`box_area_ratio` of every sample."""
    if isinstance(samples, G.ProfiledSamples):
        return samples.box_ratio
    return np.array([box_area_ratio(s) for s in samples], dtype=np.float64)


def box_ratio_bins(ratios: np.ndarray) -> np.ndarray:
    """Index into ``G.BOX_RATIO_BINS`` of each ratio: :func:`.groups.box_ratio_bin`, vectorised
    (the number of edges <= ratio; NaN compares below no edge and lands in the last bin)."""
    return np.searchsorted(np.asarray(G.BOX_RATIO_EDGES, dtype=np.float64), ratios, side="right")


def box_ratio_table(samples: Sequence[Sample], scores: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Mean IoU/F1/P/R per (label @ modality, 5 % box/image bin), plus an 'all labels' row per bin."""
    label_names, label_codes = G.group_index(samples, lambda s: G.detection_label_by_modality(s.label, s.modality))
    bins = box_ratio_bins(box_ratios(samples))
    # group keys "<bin>\x00<label>" for every sample, then "<bin>\x00all labels" for every sample,
    # indexed like G.index_groups on those strings (built once per distinct pair, not per sample)
    width = len(label_names) + 1
    pair = np.concatenate([bins * width + label_codes, bins * width + (width - 1)])
    labels = [*label_names, "all labels"]
    distinct, inverse = np.unique(pair, return_inverse=True)
    keys = [f"{G.BOX_RATIO_BINS[c // width]}\x00{labels[c % width]}" for c in distinct.tolist()]
    names = sorted(set(keys))
    position = {k: i for i, k in enumerate(names)}
    codes = np.array([position[k] for k in keys], dtype=np.int64)[inverse.reshape(-1)] if len(pair) else pair
    doubled = {m: np.concatenate([scores[m], scores[m]]) for m in ("IoU", "F1", "Precision", "Recall")}
    sizes = np.bincount(codes, minlength=len(names))
    means = {m: group_means(v, codes, len(names)) for m, v in doubled.items()}
    bin_rank = {b: i for i, b in enumerate(G.BOX_RATIO_BINS)}
    rows = []
    for g, key in enumerate(names):
        b, lab = key.split("\x00", 1)  # (a label may itself hold a NUL: the bin never does)
        row: dict[str, Any] = {"box_img_group": b, "label": lab, "sample_size": int(sizes[g])}
        row.update({m: float(means[m][g]) for m in ("IoU", "F1", "Precision", "Recall")})
        rows.append(row)
    rows.sort(key=lambda r: (bin_rank.get(r["box_img_group"], 99), r["label"] != "all labels", r["label"]))
    return rows


def headline(
    per: dict[str, np.ndarray],
    codes: np.ndarray,
    sets: list[str | None],
    table2: list[dict[str, Any]],
    *,
    seed: int,
) -> dict[str, Interval]:
    """Table 2 numbers per set and pooled all-sample numbers, each with a bootstrap interval."""
    member = np.array([sets[c] for c in codes], dtype=object) if len(codes) else np.array([], dtype=object)
    arrays: dict[str, np.ndarray] = {}
    for kind in SETS:
        mask = member == kind
        if not mask.any():  # no group of this set reaches the size floor: nothing to report
            continue
        for col in TABLE2_COLUMNS:
            arrays[f"{kind}/{canonical(col)}"] = np.where(mask, per[col], np.nan)
    for col in TABLE2_COLUMNS + ("MAE",):
        arrays[f"all/{canonical(col)}"] = per[col]
    intervals = mean_intervals(arrays, seed=seed)
    for row in table2:  # point values exactly as the table prints them
        for col in TABLE2_COLUMNS:
            name = f"{row['set']}/{canonical(col)}"
            if name not in intervals:
                continue
            iv = intervals[name]
            intervals[name] = Interval(value=row[col], low=iv.low, high=iv.high)
    return intervals


# -- medvision_eval.stats of main 200dfdc: the normal limit reading prepared copies of row blocks --

def _prepared_block(raw: np.ndarray) -> np.ndarray:
    block = np.array(raw, dtype=np.float64, copy=True)
    np.nan_to_num(block, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
    return np.clip(block, -FINITE_CAP, FINITE_CAP, out=block)


def _normal_draws(block: Callable[[int, int], np.ndarray], n: int, k: int, n_boot: int, seed: int,
                  prepare: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(observed sums (1, K) with NaN -> 0 and inf kept, (n_boot, K) normal-limit resampled sums of
    the prepared columns), reading the (n, K) matrix ``MOMENT_ROWS`` rows at a time from ``block``."""
    from threadpoolctl import threadpool_limits

    observed = np.zeros(k)
    total = np.zeros(k)
    scatter = np.zeros((k, k))
    # one BLAS thread: these products are small, and OpenBLAS's spinning threads are 100x slower
    # than one thread when the machine's cores are busy
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, n, S.MOMENT_ROWS):
            raw = block(start, min(n, start + S.MOMENT_ROWS))
            if prepare:
                observed += np.where(np.isnan(raw), 0.0, raw).sum(axis=0)
                raw = _prepared_block(raw)
            total += raw.sum(axis=0)
        mean = total / n
        for start in range(0, n, S.MOMENT_ROWS):
            raw = block(start, min(n, start + S.MOMENT_ROWS))
            centred = (_prepared_block(raw) if prepare else raw) - mean
            scatter += centred.T @ centred
        scatter = (scatter + scatter.T) / 2.0
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n_boot, k))
        if not np.all(np.isfinite(scatter)):
            return observed[None, :], np.full((n_boot, k), np.nan)
        eigenvalues, vectors = np.linalg.eigh(scatter)
        root = vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
        return observed[None, :], total[None, :] + z @ root.T


def normal_intervals(
    block: Callable[[int, int], np.ndarray],
    n: int,
    k: int,
    statistics: Mapping[str, Statistic],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """:func:`bootstrap_intervals` by the normal limit, reading the raw (n, K) columns in row blocks
    (``block(lo, hi)``), so no full copy of them is ever made."""
    found = S._approximated.get()
    if found is not None:
        found.append(n)
    observed, sums = _normal_draws(block, n, k, n_boot, seed, prepare=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return {name: _interval(float(stat(observed)[0]), np.asarray(stat(sums), dtype=np.float64), level)
                for name, stat in statistics.items()}


def mean_intervals(
    per_sample: Mapping[str, np.ndarray],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """Intervals of NaN-ignoring means of per-sample arrays (all the same length)."""
    names = list(per_sample)
    if not names:
        return {}
    n = len(per_sample[names[0]])
    if n > S.EXACT_MAX_N and n_boot > 0:  # the normal limit, reading the columns in row blocks
        arrays = [np.asarray(per_sample[name], dtype=np.float64) for name in names]

        def block(lo: int, hi: int) -> np.ndarray:
            out = np.empty((hi - lo, 2 * len(arrays)))
            for i, v in enumerate(arrays):
                part = v[lo:hi]
                valid = ~np.isnan(part)
                out[:, 2 * i] = np.where(valid, part, 0.0)
                out[:, 2 * i + 1] = valid
            return out

        return normal_intervals(block, n, 2 * len(arrays), {name: mean_stat(2 * i, 2 * i + 1) for i, name in enumerate(names)},
                                n_boot=n_boot, seed=seed, level=level)
    cols = []
    stats: dict[str, Statistic] = {}
    for i, name in enumerate(names):
        v = np.asarray(per_sample[name], dtype=np.float64)
        valid = ~np.isnan(v)
        cols.append(np.where(valid, v, 0.0))
        cols.append(valid.astype(np.float64))
        stats[name] = mean_stat(2 * i, 2 * i + 1)
    return bootstrap_intervals(np.stack(cols, axis=1), stats, n_boot=n_boot, seed=seed, level=level)
