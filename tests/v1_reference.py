"""A scalar, per-sample reference of the MedVision v1 formulas, written from reading the official
code (commit c221615): ``utils/parse_utils.py`` (``extract_last_k_nums``, ``cal_IoU``, ``cal_F1``,
``cal_Precision``, ``cal_Recall``, ``cal_metrics_detection_task``) and
``benchmark/summarize_{TL,AD}_task.py`` (``cal_metrics_*_task``, ``min(int(v*10), 9)`` buckets).

Plain Python on purpose: it is the yardstick for the vectorised scorer (tests) and the slow side
of ``benchmarks/bench_scoring.py``. Parsed strings are converted with ``np.float32`` and the
target is float64, as in v1 (targets were ``eval``'d from their string form).
"""

from __future__ import annotations

import math
import re

import numpy as np

NUM = re.compile(r"-?\d+\.?\d*")


def last_k(text: str, k: int) -> str:
    numbers = NUM.findall(text)
    if len(numbers) < k:
        return ""
    return ",".join(numbers[-k:])


def to_float32_list(joined: str) -> list | None:
    """v1: ``[np.float32(part.strip()) for part in pred.strip().split(",")]`` in a bare try."""
    try:
        with np.errstate(over="ignore"):
            return [np.float32(part.strip()) for part in joined.strip().split(",")]
    except Exception:
        return None


def _intersection(p, t):
    x1 = max(p[0], t[0])
    y1 = max(p[1], t[1])
    x2 = min(p[2], t[2])
    y2 = min(p[3], t[3])
    return x1, y1, x2, y2


def iou(p, t) -> float:
    x1, y1, x2, y2 = _intersection(p, t)
    if x1 >= x2 or y1 >= y2:
        return 0.0
    inter = (x2 - x1) * (y2 - y1)
    pa = (p[2] - p[0]) * (p[3] - p[1])
    ta = (t[2] - t[0]) * (t[3] - t[1])
    union = pa + ta - inter
    return inter / union if union > 0 else 0.0


def f1(p, t) -> float:
    x1, y1, x2, y2 = _intersection(p, t)
    if x1 >= x2 or y1 >= y2:
        return 0.0
    inter = (x2 - x1) * (y2 - y1)
    pa = (p[2] - p[0]) * (p[3] - p[1])
    ta = (t[2] - t[0]) * (t[3] - t[1])
    return (2.0 * inter) / (pa + ta) if (pa + ta) > 0 else math.nan


def precision(p, t) -> float:
    x1, y1, x2, y2 = _intersection(p, t)
    if x1 >= x2 or y1 >= y2:
        return 0.0
    inter = (x2 - x1) * (y2 - y1)
    pa = (p[2] - p[0]) * (p[3] - p[1])
    return inter / pa if pa > 0 else math.nan


def recall(p, t) -> float:
    x1, y1, x2, y2 = _intersection(p, t)
    if x1 >= x2 or y1 >= y2:
        return 0.0
    inter = (x2 - x1) * (y2 - y1)
    ta = (t[2] - t[0]) * (t[3] - t[1])
    return inter / ta if ta > 0 else math.nan


def detection_sample(text: str, target: list[float]) -> dict[str, float]:
    pred = to_float32_list(last_k(text, 4))
    if pred is None or len(pred) != 4:
        return {"IoU": 0.0, "F1": 0.0, "Precision": 0.0, "Recall": 0.0, "MAE": math.nan, "success": 0.0}
    t = [np.float64(v) for v in target]  # v1: np.array(eval(target)) -> float64 elements
    mae = sum(abs(float(pv) - tv) for pv, tv in zip(pred, t)) / 4.0
    return {"IoU": iou(pred, t), "F1": f1(pred, t), "Precision": precision(pred, t), "Recall": recall(pred, t),
            "MAE": mae, "success": 1.0}


def values_sample(text: str, target: list[float]) -> dict[str, float]:
    """T/L (k = 2) and A/D (k = 1): MAE and MRE over the k values, NaN on failure."""
    k = len(target)
    pred = to_float32_list(last_k(text, k))
    if pred is None or len(pred) != k:
        return {"MAE": math.nan, "MRE": math.nan, "success": 0.0}
    abs_err = [abs(float(pv) - tv) for pv, tv in zip(pred, target)]
    rel_err = [e / (tv + 1e-15) for e, tv in zip(abs_err, target)]
    return {"MAE": sum(abs_err) / k, "MRE": sum(rel_err) / k, "success": 1.0}


def mre_bucket(mre: float) -> int | None:
    if math.isnan(mre):
        return None
    return min(int(mre * 10), 9)
