"""Bootstrap intervals from per-sample scores, and the paired bootstrap used by ``compare``.

Every statistic here is a function of *column sums*: the caller lays per-sample quantities out as
an (n, K) matrix (values with NaN replaced by 0, validity indicators, group one-hots, ...), and a
statistic maps the (B, K) sums of B resamples to (B,) numbers. A resample is a vector of counts
(how often each sample was drawn), so the sums of all resamples are one matrix product. This
covers plain means, means over parsed samples only (ratio of sums) and the paper's
sample-weighted means of group means, all vectorised.

Determinism: resamples depend only on ``seed``, ``n`` and ``n_boot``; callers sort samples by id
first so that results do not depend on sample order.

Large samples: up to :data:`EXACT_MAX_N` samples the resamples are drawn exactly (n_boot rows of
n multinomial counts). Beyond it that is n_boot * n draws and an (n_boot x n) @ (n x K) product
(10^9 of each at a million samples), so the resampled column *sums* are drawn instead from their
normal limit: mean = the observed sums (what a multinomial resample has in expectation) and
covariance = n times the columns' empirical covariance (exactly the resampled sums' covariance).
The statistics and percentiles are then the same code as for exact resamples, so ratios and
weighted group means need nothing special. A task whose intervals used this says so in its
``notes`` (:func:`approximation_note`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from .schema import Interval

Statistic = Callable[[np.ndarray], np.ndarray]  # sums (B, K) -> values (B,)

DEFAULT_N_BOOT = 1000
CHUNK_ELEMENTS = 4_000_000  # resample-count matrix cells per chunk (32 MB of float64)
FINITE_CAP = 1e300  # inf in a column would turn 0 * inf into NaN in the matrix product
# Samples up to which intervals come from exactly resampled counts; above it, from the normal limit
# of the resampled sums (see the module docstring). A paper-scale run's largest task (detection,
# 23,071 samples) is well below it; at this size an exact bootstrap is 5e7 draws.
EXACT_MAX_N = 50_000
MOMENT_ROWS = 65_536  # rows per block when summing the covariance (bounded memory)

_approximated: ContextVar[list[int] | None] = ContextVar("medvision_bootstrap_approximated", default=None)


@contextmanager
def track_approximations() -> Iterator[list[int]]:
    """Collect the sample counts of every bootstrap in the block that used the normal limit."""
    found: list[int] = []
    token = _approximated.set(found)
    try:
        yield found
    finally:
        _approximated.reset(token)


def approximation_note(n: int) -> str:
    """The results note of a task whose intervals used the normal limit of the bootstrap."""
    return (f"Intervals: with {n:,} samples (more than {EXACT_MAX_N:,}) the bootstrap's resampled column sums "
            "are drawn from their normal limit (mean: the observed sums; covariance: n times the empirical "
            "covariance of the per-sample columns, as for multinomial resampling) instead of resampling every "
            "sample; the same statistics and percentiles follow.")


def normal_sums(cols: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, K) resampled column sums drawn from the normal limit of the multinomial bootstrap.

    ``cols`` is the prepared (n, K) matrix (finite). Mean: the observed sums S. Covariance:
    ``sum_i (x_i - S/n)(x_i - S/n)^T`` = n times the empirical covariance, which is exactly the
    covariance of the sums of a multinomial(n, 1/n) resample. Drawn as ``S + z @ R.T`` with
    ``R R^T`` the covariance (eigen-decomposition, so singular covariances -- constant or repeated
    columns -- are fine) and ``z`` standard normal from ``default_rng(seed)``.
    """
    n = cols.shape[0]
    return _normal_draws(lambda lo, hi: cols[lo:hi], n, cols.shape[1], n_boot, seed)[1]


def _prepared_block(raw: np.ndarray) -> np.ndarray:
    block = np.array(raw, dtype=np.float64, copy=True)
    np.nan_to_num(block, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
    return np.clip(block, -FINITE_CAP, FINITE_CAP, out=block)


def _fits(raw: np.ndarray) -> bool:
    """True when ``_prepared_block(raw)`` would be ``raw`` itself: every value finite and within
    +-FINITE_CAP (NaN fails the comparisons)."""
    return bool(raw.max() <= FINITE_CAP) and bool(raw.min() >= -FINITE_CAP)


def _normal_draws(block: Callable[[int, int], np.ndarray], n: int, k: int, n_boot: int, seed: int,
                  prepare: bool = False, scratch: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(observed sums (1, K) with NaN -> 0 and inf kept, (n_boot, K) normal-limit resampled sums of
    the prepared columns), reading the (n, K) matrix ``MOMENT_ROWS`` rows at a time from ``block``.
    ``scratch``: each array ``block`` returns is the caller's to overwrite (centred in place).

    A block whose values are all finite and within +-FINITE_CAP needs no preparing: its observed
    and prepared sums are the same sums of the same array (bit for bit what preparing a copy gives)."""
    from threadpoolctl import threadpool_limits

    observed = np.zeros(k)
    total = np.zeros(k)
    scatter = np.zeros((k, k))
    plain: list[bool] = []  # per block: no preparing needed
    # one BLAS thread: these products are small, and OpenBLAS's spinning threads are 100x slower
    # than one thread when the machine's cores are busy
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, n, MOMENT_ROWS):
            raw = block(start, min(n, start + MOMENT_ROWS))
            if prepare and _fits(raw):
                plain.append(True)
                sums = raw.sum(axis=0)
                observed += sums
                total += sums
                continue
            plain.append(not prepare)
            if prepare:
                observed += np.where(np.isnan(raw), 0.0, raw).sum(axis=0)
                raw = _prepared_block(raw)
            total += raw.sum(axis=0)
        mean = total / n
        for j, start in enumerate(range(0, n, MOMENT_ROWS)):
            raw = block(start, min(n, start + MOMENT_ROWS))
            if not plain[j]:
                centred = _prepared_block(raw)
                centred -= mean
            elif scratch:
                centred = raw
                centred -= mean
            else:
                centred = raw - mean
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
    scratch: bool = False,
) -> dict[str, Interval]:
    """:func:`bootstrap_intervals` by the normal limit, reading the raw (n, K) columns in row blocks
    (``block(lo, hi)``), so no full copy of them is ever made. ``scratch``: the arrays ``block``
    returns may be overwritten."""
    found = _approximated.get()
    if found is not None:
        found.append(n)
    observed, sums = _normal_draws(block, n, k, n_boot, seed, prepare=True, scratch=scratch)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return {name: _interval(float(stat(observed)[0]), np.asarray(stat(sums), dtype=np.float64), level)
                for name, stat in statistics.items()}


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
    """NaN -> 0 (callers carry validity in their own columns), inf capped for the products.
    One copy of ``columns``, changed in place."""
    cols = np.array(_as_matrix(columns), dtype=np.float64, copy=True)
    np.nan_to_num(cols, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
    return np.clip(cols, -FINITE_CAP, FINITE_CAP, out=cols)


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
    exact_max_n: int | None = None,
) -> dict[str, Interval]:
    """Percentile intervals of several statistics, sharing one set of resamples.

    The point value of each statistic is computed on the full sample (the observed sums), so
    it equals the number the tables print. Above ``exact_max_n`` samples (default
    :data:`EXACT_MAX_N`) the resampled sums come from :func:`normal_sums`.
    """
    matrix = _as_matrix(columns)
    if n_boot > 0 and matrix.shape[0] > (EXACT_MAX_N if exact_max_n is None else exact_max_n):
        return normal_intervals(lambda lo, hi: matrix[lo:hi], matrix.shape[0], matrix.shape[1], statistics,
                                n_boot=n_boot, seed=seed, level=level)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        full = _observed_sums(columns)
        values = {name: float(stat(full)[0]) for name, stat in statistics.items()}
    cols = _prepare(columns)
    n = cols.shape[0]
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


class Derived:
    """A per-sample column computed a row range at a time from arrays already held (a masked copy,
    an indicator), so that :func:`mean_intervals` of a million samples needs no full copy of it:
    ``rows(lo, hi)`` returns the float64 values of rows ``lo:hi``, exactly the slice the full
    column would have."""

    def __init__(self, n: int, rows: Callable[[int, int], np.ndarray]) -> None:
        self.n = n
        self.rows = rows

    def __len__(self) -> int:
        return self.n

    def full(self) -> np.ndarray:
        return np.asarray(self.rows(0, self.n), dtype=np.float64)


Column = np.ndarray | Derived


def _full(values: Column) -> np.ndarray:
    return values.full() if isinstance(values, Derived) else np.asarray(values, dtype=np.float64)


def mean_intervals(
    per_sample: Mapping[str, Column],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """Intervals of NaN-ignoring means of per-sample arrays (all the same length; a
    :class:`Derived` column is computed a block of rows at a time above :data:`EXACT_MAX_N`)."""
    names = list(per_sample)
    if not names:
        return {}
    n = len(per_sample[names[0]])
    if n > EXACT_MAX_N and n_boot > 0:  # the normal limit, reading the columns in row blocks
        arrays = [v if isinstance(v, Derived) else np.asarray(v, dtype=np.float64) for v in (per_sample[m] for m in names)]
        buffer = np.empty((min(n, MOMENT_ROWS), 2 * len(arrays)))  # each block is built here, then centred in place
        valid = np.empty(min(n, MOMENT_ROWS), dtype=bool)

        def block(lo: int, hi: int) -> np.ndarray:
            out = buffer[:hi - lo]
            ok = valid[:hi - lo]
            for i, v in enumerate(arrays):
                part = v.rows(lo, hi) if isinstance(v, Derived) else v[lo:hi]
                np.isnan(part, out=ok)
                np.logical_not(ok, out=ok)
                out[:, 2 * i] = np.where(ok, part, 0.0)
                out[:, 2 * i + 1] = ok
            return out

        return normal_intervals(block, n, 2 * len(arrays), {name: mean_stat(2 * i, 2 * i + 1) for i, name in enumerate(names)},
                                n_boot=n_boot, seed=seed, level=level, scratch=True)
    cols = []
    stats: dict[str, Statistic] = {}
    for i, name in enumerate(names):
        v = _full(per_sample[name])
        valid = ~np.isnan(v)
        cols.append(np.where(valid, v, 0.0))
        cols.append(valid.astype(np.float64))
        stats[name] = mean_stat(2 * i, 2 * i + 1)
    return bootstrap_intervals(np.stack(cols, axis=1), stats, n_boot=n_boot, seed=seed, level=level)
