"""Bootstrap intervals from per-sample scores, and the paired bootstrap used by ``compare``.

Every statistic here is a function of *column sums*: the caller lays per-sample quantities out as
an (n, K) matrix (values with NaN replaced by 0, validity indicators, group one-hots, ...), and a
statistic maps the (B, K) sums of B resamples to (B,) numbers. A resample is a vector of counts
(how often each sample was drawn), so the sums of all resamples are one matrix product. This
covers plain means, means over parsed samples only (ratio of sums) and the paper's
sample-weighted means of group means, all vectorised.

Determinism: resamples depend only on ``seed``, ``n`` and ``n_boot``; callers sort samples by id
first so that results do not depend on sample order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from .schema import Interval

Statistic = Callable[[np.ndarray], np.ndarray]  # sums (B, K) -> values (B,)

DEFAULT_N_BOOT = 1000
CHUNK_ELEMENTS = 4_000_000  # resample-count matrix cells per chunk (32 MB of float64)
FINITE_CAP = 1e300  # inf in a column would turn 0 * inf into NaN in the matrix product


def resample_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (b, n) float matrices of bootstrap draw counts, ``n_boot`` rows in total."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        idx += (np.arange(b) * n)[:, None]  # in place: row r counts into cells r*n .. r*n + n - 1
        counts = np.bincount(idx.ravel(), minlength=b * n)
        del idx
        yield counts.reshape(b, n).astype(np.float64)
        done += b


def _as_matrix(columns: np.ndarray) -> np.ndarray:
    cols = np.asarray(columns, dtype=np.float64)
    return cols[:, None] if cols.ndim == 1 else cols


def _prepare(columns: np.ndarray) -> np.ndarray:
    """NaN -> 0 (callers carry validity in their own columns), inf capped for the products."""
    return np.clip(np.nan_to_num(_as_matrix(columns), nan=0.0, posinf=np.inf, neginf=-np.inf), -FINITE_CAP, FINITE_CAP)


def _observed_sums(columns: np.ndarray) -> np.ndarray:
    """Exact column sums of the full sample (inf kept, NaN -> 0)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isnan(_as_matrix(columns)), 0.0, _as_matrix(columns)).sum(axis=0, keepdims=True)


def _interval(value: float, replicates: np.ndarray, level: float) -> Interval:
    alpha = (1.0 - level) / 2.0
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return Interval(value=value, low=float("nan"), high=float("nan"))
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(value=value, low=float(low), high=float(high))


def bootstrap_intervals(
    columns: np.ndarray,
    statistics: Mapping[str, Statistic],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """Percentile intervals of several statistics, sharing one set of resamples.

    The point value of each statistic is computed on the full sample (the observed sums), so
    it equals the number the tables print.
    """
    cols = _prepare(columns)
    n = cols.shape[0]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        full = _observed_sums(columns)
        values = {name: float(stat(full)[0]) for name, stat in statistics.items()}
    if n == 0 or n_boot <= 0:
        return {name: Interval(value=v, low=float("nan"), high=float("nan")) for name, v in values.items()}
    reps: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for counts in resample_counts(n, n_boot, seed):
            sums = counts @ cols
            for name, stat in statistics.items():
                reps[name].append(np.asarray(stat(sums), dtype=np.float64))
    return {name: _interval(values[name], np.concatenate(reps[name]), level) for name in statistics}


def paired_bootstrap(
    columns_a: np.ndarray,
    columns_b: np.ndarray,
    statistic: Statistic,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval | float]:
    """Paired bootstrap of ``statistic(A) - statistic(B)`` over the same samples (same rows).

    Returns intervals for ``a``, ``b`` and ``diff`` (a - b), and ``p_value``: the two-sided
    bootstrap p-value, twice the smaller share of resampled differences on either side of 0.
    """
    a = _prepare(columns_a)
    b = _prepare(columns_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"paired bootstrap needs the same samples: {a.shape[0]} vs {b.shape[0]} rows")
    n = a.shape[0]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        va = float(statistic(_observed_sums(columns_a))[0])
        vb = float(statistic(_observed_sums(columns_b))[0])
        ra: list[np.ndarray] = []
        rb: list[np.ndarray] = []
        if n > 0:
            for counts in resample_counts(n, n_boot, seed):
                ra.append(np.asarray(statistic(counts @ a), dtype=np.float64))
                rb.append(np.asarray(statistic(counts @ b), dtype=np.float64))
    rep_a = np.concatenate(ra) if ra else np.array([])
    rep_b = np.concatenate(rb) if rb else np.array([])
    diff = rep_a - rep_b
    finite = diff[np.isfinite(diff)]
    if finite.size:
        p_value = float(min(1.0, 2.0 * min(np.mean(finite <= 0.0), np.mean(finite >= 0.0))))
    else:
        p_value = float("nan")
    return {
        "a": _interval(va, rep_a, level),
        "b": _interval(vb, rep_b, level),
        "diff": _interval(va - vb, diff, level),
        "p_value": p_value,
    }


# -- statistic builders over column layouts ---------------------------------------------------

def mean_stat(value_col: int, count_col: int) -> Statistic:
    """``sum(values) / sum(count)``: a mean over the samples whose ``count`` column is 1."""

    def stat(sums: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sums[:, count_col] > 0, sums[:, value_col] / sums[:, count_col], np.nan)

    return stat


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
    cols = []
    stats: dict[str, Statistic] = {}
    for i, name in enumerate(names):
        v = np.asarray(per_sample[name], dtype=np.float64)
        valid = ~np.isnan(v)
        cols.append(np.where(valid, v, 0.0))
        cols.append(valid.astype(np.float64))
        stats[name] = mean_stat(2 * i, 2 * i + 1)
    return bootstrap_intervals(np.stack(cols, axis=1), stats, n_boot=n_boot, seed=seed, level=level)
