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


def box_overlaps(pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """IoU, Precision, Recall, F1 of ``pred`` vs ``target`` boxes, both (n, 4), per v1.

    Rows where ``valid`` is False (failed parses) score 0 on all four, as v1 scores failures.
    """
    p0, p1, p2, p3 = np.ascontiguousarray(np.asarray(pred, dtype=np.float64).T)
    t0, t1, t2, t3 = np.ascontiguousarray(np.asarray(target, dtype=np.float64).T)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        iw = np.minimum(p2, t2)
        iw -= np.maximum(p0, t0)
        ih = np.minimum(p3, t3)
        ih -= np.maximum(p1, t1)
        # v1 tests ``x1 >= x2 or y1 >= y2`` (i.e. iw <= 0 or ih <= 0); NaN compares False there.
        hit = ~((iw <= 0) | (ih <= 0))
        if valid is not None:
            hit &= valid
        inter = iw * ih
        a_pred = (p2 - p0) * (p3 - p1)
        a_gt = (t2 - t0) * (t3 - t1)
        denom = a_pred + a_gt
        union = denom - inter
        iou = np.zeros_like(inter)
        np.divide(inter, union, out=iou, where=hit & (union > 0))
        precision = np.where(hit, np.nan, 0.0)
        np.divide(inter, a_pred, out=precision, where=hit & (a_pred > 0))
        recall = np.where(hit, np.nan, 0.0)
        np.divide(inter, a_gt, out=recall, where=hit & (a_gt > 0))
        f1 = np.where(hit, np.nan, 0.0)
        np.divide(2.0 * inter, denom, out=f1, where=hit & (denom > 0))
    return {"IoU": iou, "Precision": precision, "Recall": recall, "F1": f1}


def detection_scores(pred: np.ndarray, ok: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample detection metrics; failures (``~ok``) score 0 on overlaps and NaN on MAE."""
    out = box_overlaps(pred, target, valid=ok)
    with np.errstate(invalid="ignore", over="ignore"):
        mae = np.abs(pred - target).mean(axis=1)  # failure rows are NaN in ``pred``; masked below
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
