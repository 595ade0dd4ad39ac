"""Per-sample metrics, vectorised with numpy, following the MedVision v1 formulas.

Official sources (commit c221615): ``src/medvision_bm/utils/parse_utils.py``
(``cal_IoU``, ``cal_F1``, ``cal_Precision``, ``cal_Recall``, ``cal_metrics_detection_task``) and
``benchmark/summarize_TL_task.py`` / ``summarize_AD_task.py`` (``cal_metrics_*_task``).

Boxes are ``[x1, y1, x2, y2]`` as given: no clipping, no corner reordering. The intersection is
``max(x1), max(y1), min(x2), min(y2)``; when ``x1 >= x2 or y1 >= y2`` all four overlap metrics are
0 *before* any area is looked at (so an inverted or zero-area prediction scores 0, never NaN).
Otherwise ``IoU = I / U`` (0 if ``U <= 0``), ``Precision = I / A_pred`` (NaN if ``A_pred <= 0``),
``Recall = I / A_gt`` (NaN if ``A_gt <= 0``), ``F1 = 2I / (A_pred + A_gt)`` (NaN if the sum ``<= 0``).
A failed parse scores 0 on the four overlaps and NaN on MAE.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..schema import ParseStatus, Prediction

EPS_RELATIVE = 1e-15  # v1: |p - t| / (t + 1e-15)


def prediction_matrix(predictions: Sequence[Prediction], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, k) float64 with NaN rows for failures, ok mask (n,))."""
    n = len(predictions)
    values = np.full((n, k), np.nan)
    ok = np.zeros(n, dtype=bool)
    for i, p in enumerate(predictions):
        if p.status == ParseStatus.ok and p.values is not None and len(p.values) == k:
            values[i] = p.values
            ok[i] = True
    return values, ok


def box_overlaps(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """IoU, Precision, Recall, F1 of ``pred`` vs ``target`` boxes, both (n, 4), per v1."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ix1 = np.maximum(pred[:, 0], target[:, 0])
        iy1 = np.maximum(pred[:, 1], target[:, 1])
        ix2 = np.minimum(pred[:, 2], target[:, 2])
        iy2 = np.minimum(pred[:, 3], target[:, 3])
        # v1 tests ``x1 >= x2 or y1 >= y2``; NaN compares False there, so NaN boxes pass on.
        hit = ~((ix1 >= ix2) | (iy1 >= iy2))
        inter = (ix2 - ix1) * (iy2 - iy1)
        a_pred = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
        a_gt = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
        union = a_pred + a_gt - inter
        iou = np.where(union > 0, inter / union, 0.0)
        precision = np.where(a_pred > 0, inter / a_pred, np.nan)
        recall = np.where(a_gt > 0, inter / a_gt, np.nan)
        denom = a_pred + a_gt
        f1 = np.where(denom > 0, 2.0 * inter / denom, np.nan)
    zero = np.zeros_like(inter)
    return {
        "IoU": np.where(hit, iou, zero),
        "Precision": np.where(hit, precision, zero),
        "Recall": np.where(hit, recall, zero),
        "F1": np.where(hit, f1, zero),
    }


def detection_scores(pred: np.ndarray, ok: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample detection metrics; failures (``~ok``) score 0 on overlaps and NaN on MAE."""
    safe = np.where(ok[:, None], pred, 0.0)
    overlaps = box_overlaps(safe, target)
    out = {name: np.where(ok, values, 0.0) for name, values in overlaps.items()}
    with np.errstate(invalid="ignore", over="ignore"):
        mae = np.abs(safe - target).mean(axis=1)
    out["MAE"] = np.where(ok, mae, np.nan)
    out["success"] = ok.astype(np.float64)
    return out


def value_scores(pred: np.ndarray, ok: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample MAE and MRE over the k values (T/L: both diameters, A/D: one value).

    ``MAE = mean |p - t|``, ``MRE = mean |p - t| / (t + 1e-15)``; NaN for failures.
    ``MAE_cov`` / ``MRE_cov``: the coverage-penalised variants — a failure counts as the error of
    answering 0 (``mean |t|`` and ``mean |t| / (t + 1e-15)`` ≈ 1), so they average over all samples.
    """
    target = np.asarray(target, dtype=np.float64)
    safe = np.where(ok[:, None], pred, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        abs_err = np.abs(safe - target)
        rel_err = abs_err / (target + EPS_RELATIVE)
        mae = abs_err.mean(axis=1)
        mre = rel_err.mean(axis=1)
    return {
        "MAE": np.where(ok, mae, np.nan),
        "MRE": np.where(ok, mre, np.nan),
        "MAE_cov": mae,  # safe == 0 for failures: the error of answering 0
        "MRE_cov": mre,
        "success": ok.astype(np.float64),
    }


def decile_bucket(values: np.ndarray) -> np.ndarray:
    """v1 bucket of an error: ``min(int(v * 10), 9)`` (NaN -> -1 = not counted).

    ``MRE<k`` in v1 is ``#(bucket < 10k) / N_total``; the last bucket is [0.9, inf), so
    ``MRE<1.0`` equals the success rate.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.trunc(np.asarray(values, dtype=np.float64) * 10.0)  # int() truncates
    bucket = np.where(np.isnan(scaled), -1.0, np.minimum(scaled, 9.0))
    return bucket.astype(np.int64)


def below_rate_indicator(values: np.ndarray, k: float) -> np.ndarray:
    """Per-sample indicator of v1's ``MRE<k`` (k in 0.1 .. 1.0): bucket in [0, round(10k))."""
    bucket = decile_bucket(values)
    return ((bucket >= 0) & (bucket < int(round(k * 10)))).astype(np.float64)


def at_least_indicator(values: np.ndarray, threshold: float) -> np.ndarray:
    """Per-sample indicator of v1's ``IoU>t`` (which tests ``value >= t``); NaN counts as 0."""
    with np.errstate(invalid="ignore"):
        return (np.asarray(values, dtype=np.float64) >= threshold).astype(np.float64)
