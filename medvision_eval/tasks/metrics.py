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


def box_overlaps_v1_float32(pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The overlaps exactly as v1 computes them from a float32 prediction and a float64 target.

    v1 parses the answer into a ``np.float32`` array and ``eval``s the target into Python floats
    (``np.asarray`` -> float64). Its scalar code then mixes the two types, and numpy 2 keeps each
    operation in the type of its operands:

    * ``x1 = max(pred[0], target[0])`` is whichever *object* wins (Python ``max`` keeps the first
      argument unless the second is strictly larger; ``min`` likewise), so each intersection
      corner is float32 (from the prediction) or float64 (from the target);
    * ``x2 - x1`` is float32 only when both corners came from the prediction, and the
      intersection area is float32 only when both sides are float32;
    * the prediction's area is float32 arithmetic throughout, the target's float64;
    * union, IoU, Recall and F1 end up float64 (a float64 operand is always involved), but
      Precision = intersection / pred_area is a float32 division when the prediction box lies
      inside the target on both axes (then intersection and area are the same float32 number,
      so it is exactly 1.0).

    Every float32 result is returned as the float64 holding the same value. ``pred`` must hold
    float32 values (as the paper parser produces). Failure rows (``~valid``) score 0.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    p32 = p.astype(np.float32)
    # which corner object Python's max/min returns: the prediction unless the target wins strictly
    lo_x_pred, lo_y_pred = ~(t[:, 0] > p[:, 0]), ~(t[:, 1] > p[:, 1])
    hi_x_pred, hi_y_pred = ~(t[:, 2] < p[:, 2]), ~(t[:, 3] < p[:, 3])
    x1 = np.where(lo_x_pred, p[:, 0], t[:, 0])
    y1 = np.where(lo_y_pred, p[:, 1], t[:, 1])
    x2 = np.where(hi_x_pred, p[:, 2], t[:, 2])
    y2 = np.where(hi_y_pred, p[:, 3], t[:, 3])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        hit = ~((x1 >= x2) | (y1 >= y2))
        if valid is not None:
            hit &= np.asarray(valid, dtype=bool)
        dx32 = lo_x_pred & hi_x_pred
        dy32 = lo_y_pred & hi_y_pred
        dx = np.where(dx32, (p32[:, 2] - p32[:, 0]).astype(np.float64), x2 - x1)
        dy = np.where(dy32, (p32[:, 3] - p32[:, 1]).astype(np.float64), y2 - y1)
        inter32 = dx32 & dy32
        inter = np.where(inter32, (dx.astype(np.float32) * dy.astype(np.float32)).astype(np.float64), dx * dy)
        a_pred32 = (p32[:, 2] - p32[:, 0]) * (p32[:, 3] - p32[:, 1])
        a_pred = a_pred32.astype(np.float64)
        a_gt = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
        denom = a_pred + a_gt
        union = denom - inter
        iou = np.zeros_like(inter)
        np.divide(inter, union, out=iou, where=hit & (union > 0))
        prec64 = inter / a_pred
        prec32 = (inter.astype(np.float32) / a_pred32).astype(np.float64)
        precision = np.where(hit, np.where(a_pred > 0, np.where(inter32, prec32, prec64), np.nan), 0.0)
        recall = np.where(hit, np.nan, 0.0)
        np.divide(inter, a_gt, out=recall, where=hit & (a_gt > 0))
        # 2.0 * a float32 intersection stays float32, then a float64 division
        twice = np.where(inter32, (np.float32(2.0) * inter.astype(np.float32)).astype(np.float64), 2.0 * inter)
        f1 = np.where(hit, np.nan, 0.0)
        np.divide(twice, denom, out=f1, where=hit & (denom > 0))
    return {"IoU": iou, "Precision": precision, "Recall": recall, "F1": f1}


def detection_scores(pred: np.ndarray, ok: np.ndarray, target: np.ndarray, *, v1_float32: bool = False) -> dict[str, np.ndarray]:
    """Per-sample detection metrics; failures (``~ok``) score 0 on overlaps and NaN on MAE.

    ``v1_float32``: the paper protocol's arithmetic (:func:`box_overlaps_v1_float32`); otherwise
    exact float64 (:func:`box_overlaps`).
    """
    out = (box_overlaps_v1_float32 if v1_float32 else box_overlaps)(pred, target, valid=ok)
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
    """Per-sample indicator of v1's ``IoU>t`` (which tests ``value >= t``); NaN counts as 0.

    v1's only float32 overlap result is a Precision of a prediction lying inside the target,
    which is exactly 1.0, so comparing in float64 gives v1's float32 comparison too.
    """
    with np.errstate(invalid="ignore"):
        return (np.asarray(values, dtype=np.float64) >= threshold).astype(np.float64)
