"""Detection: the bounding box of an anatomy or lesion, as relative [x1, y1, x2, y2] with the
origin at the lower-left corner (paper Table 2).

Prompt: v1 ``doc_to_text_BoxCoordinate`` (no size, no spacing under either protocol).
Parse: last 4 numbers (paper) or 4 numbers inside ``<answer>`` within [0, 1], x1 < x2, y1 < y2
(corrected). Score: v1 box overlaps (:mod:`.metrics`). Aggregate: v1 ``summarize_detection_task``
groups and sets, the IoU threshold sweep, and v1 ``analyze_detection_task_boxsize`` 5 % bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..schema import PerceivedGeometry
from ..metric_names import canonical
from ..schema import Interval, Prediction, Sample
from ..stats import Derived, mean_intervals
from . import groups as G
from . import prompts
from .base import Summary
from .common import FamilyTask, vocabulary
from .label_maps import MINIMUM_GROUP_SIZE
from .metrics import at_least_indicator, detection_scores, prediction_matrix
from .parsing import StrictRules

OVERLAPS = ("Recall", "Precision", "F1", "IoU")
V1_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
SWEEP = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95
TABLE2_COLUMNS = ("Recall", "Precision", "F1", "IoU", "SR", "IoU>0.5", "F1>0.5")
SETS = ("anatomy", "T/L")


class DetectionTask(FamilyTask):
    name: ClassVar[str] = "detection"
    prompt_version: ClassVar[str] = "v1.0"
    description: ClassVar[str] = "Bounding box of an anatomy or lesion; IoU, F1, precision, recall (paper Table 2)."
    k: ClassVar[int] = 4

    # -- prompting ---------------------------------------------------------------------------
    unit: ClassVar[str] = "relative"
    answer_names: ClassVar[tuple[str, ...]] = ("x1", "y1", "x2", "y2")
    decimals: ClassVar[int] = 4

    def prompt(self, sample: Sample, geometry: PerceivedGeometry | None = None) -> str:
        """Detection states neither image size nor spacing: its answer is relative."""
        task = prompts.DETECTION_TASK.format(image_description=sample.image_description, label_name=sample.label)
        return task + self.protocol.format_block(prompts.V1_FORMAT_BOX, prompts.LATER_FORMAT_BOX)

    def plausible_range(self, sample: Sample) -> tuple[float, float]:
        return 0.0, 1.0

    def strict_rules(self, sample: Sample | None = None) -> StrictRules:
        return StrictRules(k=4, unit="relative", nonnegative=True, box=True)  # box checks: if the protocol asks

    # -- scoring -------------------------------------------------------------------------------
    columnar: ClassVar[bool] = True  # the score step may hand summarize() ProfiledSamples

    def score(self, samples: Sequence[Sample], predictions: Sequence[Prediction]) -> dict[str, np.ndarray]:
        pred, ok = prediction_matrix(predictions, 4)
        return self.score_matrix(pred, ok, self.targets(samples, 4))

    def score_matrix(self, pred: np.ndarray, ok: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        """Per-sample metrics from the (n, 4) parsed boxes, the ok mask and the (n, 4) targets."""
        return vocabulary(detection_scores(pred, ok, targets, v1_float32=self.protocol.v1_arithmetic))

    def group_key(self, s: Sample) -> str:
        return G.detection_group(s.label, self.protocol.table_modality(s), G.plane_letter(s.plane, s.image.slice_axis))

    def summarize(self, samples: Sequence[Sample], scores: dict[str, np.ndarray], *, seed: int) -> Summary:
        names, codes = G.group_index(samples, self.group_key)
        group_rows, sets = group_table(names, codes, scores)
        table2 = set_table(group_rows, sets)
        sweep = sweep_table(scores["IoU"], codes, sets)
        ratio = box_ratio_table(samples, scores)
        metrics = headline(scores, codes, sets, table2, seed=seed)
        empty = [kind for kind in SETS if f"{kind}/IoU" not in metrics]
        return Summary(
            metrics=metrics,
            tables={"table2": table2, "groups": group_rows, "iou_sweep": sweep, "box_ratio": ratio},
            notes=[
                "v1 semantics: boxes unclipped and unreordered; failures score 0 on IoU/P/R/F1 and are excluded "
                "from MAE; 'IoU>t' counts IoU >= t over all samples.",
                f"Table 2 sets drop groups with fewer than {MINIMUM_GROUP_SIZE} samples and "
                "miscellaneous/others groups; set values are sample-weighted means of group values.",
                "Intervals: 95 % percentile bootstrap of the pooled per-sample mean over the set's samples "
                "(equal to the weighted group mean whenever no P/R/F1 is NaN); resampling keeps the set's groups fixed.",
                *[f"No '{kind}' group has {MINIMUM_GROUP_SIZE}+ samples, so the Table 2 '{kind}' row is empty; "
                  "'all/…' pools every sample." for kind in empty],
            ],
        )


# -- table arithmetic (pure functions of per-sample arrays) ------------------------------------

# The per-sample quantities every detection table averages, in the groups table's column order:
# the overlaps, SR, the v1 indicators ``<metric>>t`` (value >= t; NaN counts as 0), MAE. Only the
# per-sample scores are held as arrays; an indicator is counted per group (a mean of 0/1 values is
# its count over the group's size, exactly) or computed a block of rows at a time for intervals.
INDICATED = ("IoU", "F1", "Precision", "Recall")
TABLE_METRICS = (*OVERLAPS, "SR", *(f"{name}>{t:.1f}" for t in V1_THRESHOLDS for name in INDICATED), "MAE")
_INDICATOR = {f"{name}>{t:.1f}": (name, t) for t in V1_THRESHOLDS for name in INDICATED}


def at_least_counts(values: np.ndarray, codes: np.ndarray, n_groups: int, thresholds: Sequence[float]) -> np.ndarray:
    """(n_groups, len(thresholds)) int64: per group, how many values are >= each threshold
    (ascending thresholds; NaN reaches none): the sums of :func:`.metrics.at_least_indicator`."""
    k = len(thresholds)
    level = np.zeros(len(values), dtype=np.int64)  # how many thresholds each value reaches
    with np.errstate(invalid="ignore"):
        for t in thresholds:
            level += values >= t
    level += codes * (k + 1)
    counts = np.bincount(level, minlength=n_groups * (k + 1)).reshape(n_groups, k + 1)
    return np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, 1:]  # reaching threshold j: levels j+1 .. k


def _count_means(counts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:func:`.groups.group_means` of a 0/1 column from its per-group counts: the same division
    of the same (exact) sums."""
    s = counts.astype(np.float64)
    c = sizes.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.where(c > 0, c, 1.0), np.nan)


def group_metric_means(scores: dict[str, np.ndarray], codes: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Per group, the v1 mean of every :data:`TABLE_METRICS` quantity."""
    sizes = np.bincount(codes, minlength=n_groups)
    means = {name: G.group_means(scores[name], codes, n_groups) for name in (*OVERLAPS, "SR", "MAE")}
    for name in INDICATED:
        counts = at_least_counts(np.asarray(scores[name], dtype=np.float64), codes, n_groups, V1_THRESHOLDS)
        for j, t in enumerate(V1_THRESHOLDS):
            means[f"{name}>{t:.1f}"] = _count_means(counts[:, j], sizes)
    return {name: means[name] for name in TABLE_METRICS}


def group_table(names: list[str], codes: np.ndarray, scores: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], list[str | None]]:
    """One row per group with v1's per-group metrics, its set, and whether Table 2 keeps it."""
    n_groups = len(names)
    sizes = np.bincount(codes, minlength=n_groups)
    means = group_metric_means(scores, codes, n_groups)
    rows: list[dict[str, Any]] = []
    sets: list[str | None] = []
    for g, group in enumerate(names):
        kind = G.detection_set(group)
        kept = kind is not None and sizes[g] >= MINIMUM_GROUP_SIZE
        sets.append(kind if kept else None)
        row: dict[str, Any] = {"group": group, "set": kind or "excluded", "kept": bool(kept), "num_samples": int(sizes[g])}
        row.update({name: float(means[name][g]) for name in TABLE_METRICS})
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


def _set_codes(sets: list[str | None]) -> np.ndarray:
    """Per group, the index of its Table 2 set in :data:`SETS`, -1 when no set keeps it."""
    return np.array([SETS.index(s) if s in SETS else -1 for s in sets], dtype=np.int64)


def sweep_table(iou: np.ndarray, codes: np.ndarray, sets: list[str | None]) -> list[dict[str, Any]]:
    """Share of samples with IoU >= t for t = 0.50 .. 0.95, per Table 2 set and over all samples
    (counted per group, then summed over the set's groups: the same integers, the same division)."""
    n_groups = len(sets)
    sizes = np.bincount(codes, minlength=n_groups)
    reached = at_least_counts(np.asarray(iou, dtype=np.float64), codes, n_groups, SWEEP)
    of_set = _set_codes(sets)
    rows = []
    for kind in SETS + ("all",):
        use = np.ones(n_groups, dtype=bool) if kind == "all" else (of_set == SETS.index(kind))
        total = int(sizes[use].sum())
        row: dict[str, Any] = {"set": kind, "num_samples": total}
        for j, t in enumerate(SWEEP):
            row[f"IoU>={t:.2f}"] = float(np.float64(reached[use, j].sum()) / total) if total else float("nan")
        row["mean_Acc@IoU[0.50:0.95]"] = float(np.mean([row[f"IoU>={t:.2f}"] for t in SWEEP])) if total else float("nan")
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
    """Mean IoU/F1/P/R per (label @ modality, 5 % box/image bin), plus an 'all labels' row per bin.

    v1 keys every sample twice, "<bin>\x00<label>" and "<bin>\x00all labels", and averages per key
    in sample order. The two kinds of key never meet (unless a label is itself named "all labels":
    then exactly that), so each is averaged on its own: per (bin, label) and per bin, over the
    samples in order -- the same sums in the same order, with no doubled copy of the scores."""
    label_names, label_codes = G.group_index(samples, lambda s: G.detection_label_by_modality(s.label, s.modality))
    bins = box_ratio_bins(box_ratios(samples))
    if "all labels" in label_names:
        return _box_ratio_table_doubled(label_names, label_codes, bins, scores)
    n_bins, width = len(G.BOX_RATIO_BINS), len(label_names)
    pair = bins * width + label_codes
    pair_sizes = np.bincount(pair, minlength=n_bins * width)
    bin_sizes = np.bincount(bins, minlength=n_bins)
    pair_means = {m: G.group_means(scores[m], pair, n_bins * width) for m in BOX_METRICS}
    bin_means = {m: G.group_means(scores[m], bins, n_bins) for m in BOX_METRICS}
    found: dict[str, tuple[int, dict[str, float]]] = {}
    for p in np.flatnonzero(pair_sizes).tolist():
        found[f"{G.BOX_RATIO_BINS[p // width]}\x00{label_names[p % width]}"] = (
            int(pair_sizes[p]), {m: float(pair_means[m][p]) for m in BOX_METRICS})
    for b in np.flatnonzero(bin_sizes).tolist():
        found[f"{G.BOX_RATIO_BINS[b]}\x00all labels"] = (int(bin_sizes[b]), {m: float(bin_means[m][b]) for m in BOX_METRICS})
    return _box_ratio_rows([(key, *found[key]) for key in sorted(found)])


BOX_METRICS = ("IoU", "F1", "Precision", "Recall")


def _box_ratio_rows(groups: list[tuple[str, int, dict[str, float]]]) -> list[dict[str, Any]]:
    """The table's rows from (key, size, means) in key order, sorted as v1's figure lists them."""
    bin_rank = {b: i for i, b in enumerate(G.BOX_RATIO_BINS)}
    rows = []
    for key, size, means in groups:
        b, lab = key.split("\x00", 1)  # (a label may itself hold a NUL: the bin never does)
        row: dict[str, Any] = {"box_img_group": b, "label": lab, "sample_size": size}
        row.update(means)
        rows.append(row)
    rows.sort(key=lambda r: (bin_rank.get(r["box_img_group"], 99), r["label"] != "all labels", r["label"]))
    return rows


def _box_ratio_table_doubled(label_names: list[str], label_codes: np.ndarray, bins: np.ndarray,
                             scores: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """:func:`box_ratio_table` as v1 forms it, every sample keyed twice (for a label named
    "all labels", whose key is also the bin's)."""
    width = len(label_names) + 1
    pair = np.concatenate([bins * width + label_codes, bins * width + (width - 1)])
    labels = [*label_names, "all labels"]
    distinct, inverse = np.unique(pair, return_inverse=True)
    keys = [f"{G.BOX_RATIO_BINS[c // width]}\x00{labels[c % width]}" for c in distinct.tolist()]
    names = sorted(set(keys))
    position = {k: i for i, k in enumerate(names)}
    codes = np.array([position[k] for k in keys], dtype=np.int64)[inverse.reshape(-1)] if len(pair) else pair
    doubled = {m: np.concatenate([scores[m], scores[m]]) for m in BOX_METRICS}
    sizes = np.bincount(codes, minlength=len(names))
    means = {m: G.group_means(v, codes, len(names)) for m, v in doubled.items()}
    return _box_ratio_rows([(key, int(sizes[g]), {m: float(means[m][g]) for m in BOX_METRICS})
                            for g, key in enumerate(names)])


def table_column(scores: dict[str, np.ndarray], name: str) -> np.ndarray | Derived:
    """A :data:`TABLE_METRICS` quantity per sample: a score array, or an indicator computed a block
    of rows at a time."""
    if name not in _INDICATOR:
        return scores[name]
    values, t = scores[_INDICATOR[name][0]], _INDICATOR[name][1]
    return Derived(len(values), lambda lo, hi: at_least_indicator(values[lo:hi], t))


def _masked(values: np.ndarray | Derived, mask: np.ndarray) -> Derived:
    """``np.where(mask, values, nan)``, a block of rows at a time."""
    def rows(lo: int, hi: int) -> np.ndarray:
        part = values.rows(lo, hi) if isinstance(values, Derived) else values[lo:hi]
        return np.where(mask[lo:hi], part, np.nan)

    return Derived(len(mask), rows)


def headline(
    scores: dict[str, np.ndarray],
    codes: np.ndarray,
    sets: list[str | None],
    table2: list[dict[str, Any]],
    *,
    seed: int,
) -> dict[str, Interval]:
    """Table 2 numbers per set and pooled all-sample numbers, each with a bootstrap interval."""
    member = _set_codes(sets).astype(np.int8)[codes] if len(codes) else np.zeros(0, dtype=np.int8)
    arrays: dict[str, np.ndarray | Derived] = {}
    for k, kind in enumerate(SETS):
        mask = member == k
        if not mask.any():  # no group of this set reaches the size floor: nothing to report
            continue
        for col in TABLE2_COLUMNS:
            arrays[f"{kind}/{canonical(col)}"] = _masked(table_column(scores, col), mask)
    for col in TABLE2_COLUMNS + ("MAE",):
        arrays[f"all/{canonical(col)}"] = table_column(scores, col)
    intervals = mean_intervals(arrays, seed=seed)
    for row in table2:  # point values exactly as the table prints them
        for col in TABLE2_COLUMNS:
            name = f"{row['set']}/{canonical(col)}"
            if name not in intervals:
                continue
            iv = intervals[name]
            intervals[name] = Interval(value=row[col], low=iv.low, high=iv.high)
    return intervals
