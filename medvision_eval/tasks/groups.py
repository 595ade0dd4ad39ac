"""Grouping and the paper's sample-weighted table arithmetic, shared by the three families.

Group keys follow the v1 summarisers (``utils/parse_utils.py::group_by_anatomy_modality_slice``,
``group_by_label_modality_slice``; ``benchmark/summarize_AD_task.py``). A label missing from the
official maps regroups to itself (v1 raised), so demo and plugin datasets aggregate too.

Per-group metrics are v1's counters: a mean is ``sum(valid values) / count(valid values)``
(NaN skipped), a rate (SR, ``IoU>t``, ``MRE<k``) is ``count / N_group``. Set-level numbers are
means of group metrics weighted by group sample counts; which groups enter and which counts form
the denominator differ per table and are spelled out where each table is built.

:class:`GroupLayout` lays per-sample arrays out as bootstrap columns so that exactly the same
weighted statistic is recomputed on every resample (see :mod:`medvision_eval.stats`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .label_maps import (
    EXCLUDED_KEYS,
    LABEL_MAP_REGROUP,
    LABEL_MAP_RENAME,
    TUMOR_LESION_GROUP_KEYS,
)

MODALITY_SHORT = {"MRI": "MR", "MR": "MR", "CT": "CT", "ultrasound": "US", "US": "US",
                  "X-ray": "XR", "XR": "XR", "PET": "PET"}
PLANE_FROM_AXIS = {0: "S", 1: "C", 2: "A"}


def modality_short(modality: str) -> str:
    return MODALITY_SHORT.get(modality, modality)


def plane_letter(plane: str, slice_axis: int | None = None) -> str:
    if plane:
        return plane[:1].upper()
    return PLANE_FROM_AXIS.get(slice_axis if slice_axis is not None else -1, "?")


def detection_group(label: str, modality: str, plane: str) -> str:
    """``"<parent> @ <modality> (<plane>)"`` with the parent from ``label_map_regroup``."""
    return f"{LABEL_MAP_REGROUP.get(label, label)} @ {modality_short(modality)} ({plane})"


def detection_label_by_modality(label: str, modality: str) -> str:
    """The box-size figure's label: ``"<parent> @ <modality>"`` (no plane, as v1's analysis)."""
    return f"{LABEL_MAP_REGROUP.get(label, label)} @ {modality_short(modality)}"


def tl_group(label: str, modality: str, plane: str) -> str:
    """``"<renamed label> @ <modality> (<plane>)"`` with ``label_map_rename``."""
    return f"{LABEL_MAP_RENAME.get(label, label)} @ {modality_short(modality)} ({plane})"


def detection_set(group: str) -> str | None:
    """'T/L' or 'anatomy' by keyword, None if excluded (miscellaneous/others). Size is separate."""
    low = group.lower()
    if any(k in low for k in EXCLUDED_KEYS):
        return None
    return "T/L" if any(k in low for k in TUMOR_LESION_GROUP_KEYS) else "anatomy"


BOX_RATIO_EDGES = tuple(round(0.05 * i, 2) for i in range(1, 19))  # 0.05 .. 0.90


def box_ratio_bin(ratio: float) -> str:
    """v1's 5 % bins of box/image area (``analyze_detection_task_boxsize.py``)."""
    lower = 0.0
    for edge in BOX_RATIO_EDGES:
        if ratio < edge:
            return "<0.05" if lower == 0.0 else f"{lower:.2f}~{edge:.2f}"
        lower = edge
    return ">=0.90"


BOX_RATIO_BINS = tuple(box_ratio_bin(e - 0.01) for e in BOX_RATIO_EDGES) + (">=0.90",)


def index_groups(keys: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sorted unique keys and each sample's code (order-independent)."""
    names = sorted(set(keys))
    pos = {k: i for i, k in enumerate(names)}
    return names, np.fromiter((pos[k] for k in keys), dtype=np.int64, count=len(keys))


class ProfiledSamples:
    """Samples as the score step holds them at scale: one validated :class:`Sample` per distinct
    *profile* (the fields tables group by: label, modality, plane, slice axis, dataset, target
    unit and the ``extra`` entries ``image_modality``, ``metric_type``, ``metric_key``, ``unit``),
    each sample's profile code, and the one per-sample number a table reads (the box/image ratio).

    A grouping function of those fields gives, per sample, exactly what it gives on the sample
    itself; :func:`group_index`, :func:`box_ratios` and :func:`representatives` accept either
    this or a plain sequence of samples. It is deliberately not iterable: code that needs a
    per-sample field it does not carry fails loudly instead of reading a profile's.
    """

    def __init__(self, profiles: Sequence, codes: np.ndarray, box_ratio: np.ndarray) -> None:
        self.profiles = list(profiles)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.box_ratio = np.asarray(box_ratio, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.codes)

    def take(self, order: np.ndarray) -> "ProfiledSamples":
        return ProfiledSamples(self.profiles, self.codes[order], self.box_ratio[order])


def group_index(samples, key) -> tuple[list[str], np.ndarray]:
    """:func:`index_groups` of ``[key(s) for s in samples]``; ``key`` is evaluated once per
    profile for :class:`ProfiledSamples`."""
    if not isinstance(samples, ProfiledSamples):
        return index_groups([key(s) for s in samples])
    keys = [key(p) for p in samples.profiles]
    used = np.unique(samples.codes).tolist()
    names = sorted({keys[c] for c in used})
    pos = {k: i for i, k in enumerate(names)}
    of_profile = np.array([pos.get(k, -1) for k in keys], dtype=np.int64)
    return names, of_profile[samples.codes] if len(samples.codes) else np.zeros(0, dtype=np.int64)


def representatives(samples, codes: np.ndarray, n_groups: int) -> list:
    """Per group, its last sample in order (what ``{key: s for key, s in zip(keys, samples)}``
    keeps) -- for :class:`ProfiledSamples`, that sample's profile."""
    if not isinstance(samples, ProfiledSamples):
        last: dict[int, object] = {}
        for code, s in zip(codes.tolist(), samples):
            last[code] = s
        return [last[g] for g in range(n_groups)]
    n = len(codes)
    groups, first_from_end = np.unique(codes[::-1], return_index=True)
    position = dict(zip(groups.tolist(), (n - 1 - first_from_end).tolist()))
    return [samples.profiles[int(samples.codes[position[g]])] for g in range(n_groups)]


def group_sums(values: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group: sum of non-NaN values and their count."""
    v = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(v)
    if valid.all():  # nothing to drop: the same sums without copying the values and codes
        with np.errstate(invalid="ignore", over="ignore"):
            s = np.bincount(codes, weights=v, minlength=n_groups)
        return s, np.bincount(codes, minlength=n_groups).astype(np.float64)
    kept = codes[valid]
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.bincount(kept, weights=v[valid], minlength=n_groups)
    c = np.bincount(kept, minlength=n_groups).astype(np.float64)
    return s, c


def group_means(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """v1 counters: ``sum(valid)/count(valid)`` per group, NaN when a group has no valid value."""
    s, c = group_sums(values, codes, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.where(c > 0, c, 1.0), np.nan)


def weighted_mean(
    values: np.ndarray, weights: np.ndarray, include: np.ndarray, denominator: str, *, finite_only: bool = False
) -> float:
    """Sample-weighted mean of group metrics.

    Groups enter where ``include`` and the value is not NaN. ``denominator``: ``"valid"`` sums
    the weights of the groups that entered; ``"included"`` sums the weights of all included
    groups (v1's overall lines, where a NaN group still adds its samples to the total).
    ``finite_only``: a group whose value is +-inf is skipped like a NaN one (v1 Table 2 tests
    ``not isnan(value) and isfinite(value)``), so one inf group MAE cannot make the set value inf.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    use = include & (np.isfinite(v) if finite_only else ~np.isnan(v))
    den = w[use].sum() if denominator == "valid" else w[include].sum()
    if den <= 0:
        return float("nan")
    with np.errstate(invalid="ignore", over="ignore"):
        return float((v[use] * w[use]).sum() / den)


@dataclass(frozen=True)
class WeightedSpec:
    """How one set-level number is formed from group metrics (for tables and bootstrap alike).

    ``include_by``: a metric whose group value must be non-NaN for the group to enter at all
    (v1 T/L: groups without any parsed sample are dropped from the overall line); ``groups``:
    the candidate groups (mask); ``denominator``: see :func:`weighted_mean`.
    """

    metric: str
    groups: np.ndarray  # bool (G,)
    denominator: str = "valid"
    include_by: str | None = None


class GroupLayout:
    """Per-sample metrics laid out as bootstrap columns: per (metric, group) sum and count, N_g."""

    def __init__(self, per_sample: Mapping[str, np.ndarray], codes: np.ndarray, n_groups: int) -> None:
        self.metrics = list(per_sample)
        self.n_groups = n_groups
        n = len(codes)
        onehot = np.zeros((n, n_groups))
        onehot[np.arange(n), codes] = 1.0
        blocks = []
        for name in self.metrics:
            v = np.asarray(per_sample[name], dtype=np.float64)
            valid = ~np.isnan(v)
            blocks.append(onehot * np.where(valid, v, 0.0)[:, None])
            blocks.append(onehot * valid[:, None])
        blocks.append(onehot)
        self.columns = np.concatenate(blocks, axis=1) if n else np.zeros((0, (2 * len(self.metrics) + 1) * n_groups))

    def _block(self, sums: np.ndarray, i: int) -> np.ndarray:
        g = self.n_groups
        return sums[:, i * g:(i + 1) * g]

    def means(self, sums: np.ndarray, metric: str) -> np.ndarray:
        i = self.metrics.index(metric)
        s, c = self._block(sums, 2 * i), self._block(sums, 2 * i + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.where(c > 0, c, 1.0), np.nan)

    def sizes(self, sums: np.ndarray) -> np.ndarray:
        return self._block(sums, 2 * len(self.metrics))

    def statistic(self, spec: WeightedSpec):
        """A bootstrap statistic (sums (B, K) -> (B,)) computing ``spec`` as the table does."""

        def stat(sums: np.ndarray) -> np.ndarray:
            values = self.means(sums, spec.metric)
            weights = self.sizes(sums)
            include = np.broadcast_to(spec.groups, values.shape) & (weights > 0)
            if spec.include_by is not None:
                include = include & ~np.isnan(self.means(sums, spec.include_by))
            use = include & ~np.isnan(values)
            num = np.where(use, np.nan_to_num(values) * weights, 0.0).sum(axis=1)
            den_mask = use if spec.denominator == "valid" else include
            den = np.where(den_mask, weights, 0.0).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

        return stat
