"""2D slice -> 8-bit RGB image.

``minmax`` is v1 exactly: ``((x - min) / (max - min) * 255).astype(uint8)`` on the float32 slice,
all zeros when the slice is constant or holds any NaN (v1's min/max are NaN then), then ``PIL.Image.fromarray(..., "L").convert("RGB")``.
``window`` is the later protocol (official v1.1.0, issue #7): CT gets an HU window chosen by the
anatomy group of the label, other modalities (and contrast CT such as KiPA22) a 0.5-99.5
percentile min-max.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# (width, level) in HU, from the official v1.1.0 release notes.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "brain": (80.0, 40.0),
    "bone": (1800.0, 400.0),
}
_GROUP_KEYWORDS = (
    ("lung", ("lung", "pulmonary", "bronch", "airway", "trachea")),
    ("bone", ("bone", "femur", "tibia", "vertebra", "rib", "skull", "jaw", "tooth", "teeth", "incisor",
              "molar", "canine", "premolar", "mandible", "maxilla", "pelvis", "sacrum", "humerus", "scapula")),
    ("brain", ("brain", "cerebr", "cerebell", "ventricle of brain", "artery", "vestibular", "cochlea")),
)
# Contrast-enhanced CT datasets shown with percentile scaling instead of an HU window.
PERCENTILE_CT_DATASETS = frozenset({"KiPA22"})


def anatomy_group(label_name: str) -> str:
    """HU window group of a label name (keywords; soft tissue when nothing matches)."""
    text = label_name.lower()
    for group, words in _GROUP_KEYWORDS:
        if any(w in text for w in words):
            return group
    return "soft_tissue"


def minmax_uint8(slice_2d: np.ndarray, *, v1_nan: bool = False) -> np.ndarray:
    """v1 normalisation.

    A slice with any NaN: ``v1_nan`` renders it as v1 does - ``min``/``max`` are NaN, so
    ``max > min`` is False and the whole slice is black; otherwise the NaNs are replaced by the
    slice minimum first and the rest is scaled as usual.
    """
    x = np.asarray(slice_2d, dtype=np.float32)
    lo, hi = x.min(), x.max()
    if np.isnan(lo) or np.isnan(hi):
        if v1_nan:
            return np.zeros(x.shape, dtype=np.uint8)
        finite = x[~np.isnan(x)]
        x = np.where(np.isnan(x), finite.min() if finite.size else 0.0, x).astype(np.float32)
        lo, hi = x.min(), x.max()
    if hi > lo:
        y = np.subtract(x, lo)  # ((x - lo) / (hi - lo) * 255) in float32, in one buffer
        y /= hi - lo
        y *= 255
        return y.astype(np.uint8)
    return np.zeros_like(x, dtype=np.uint8)


def window_uint8(slice_2d: np.ndarray, width: float, level: float) -> np.ndarray:
    x = np.asarray(slice_2d, dtype=np.float32)
    lo, hi = level - width / 2.0, level + width / 2.0
    y = (np.clip(np.nan_to_num(x, nan=lo), lo, hi) - lo) / (hi - lo) * 255.0
    return np.round(y).astype(np.uint8)


def percentile_uint8(slice_2d: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    x = np.asarray(slice_2d, dtype=np.float32)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros(x.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        return minmax_uint8(x)
    y = (np.clip(np.nan_to_num(x, nan=lo), lo, hi) - lo) / (hi - lo) * 255.0
    return np.round(y).astype(np.uint8)


def to_uint8(slice_2d: np.ndarray, mode: str, *, modality: str = "", label: str = "", dataset: str = "") -> np.ndarray:
    if mode == "minmax":
        return minmax_uint8(slice_2d, v1_nan=True)
    if mode == "window":
        if modality == "CT" and dataset not in PERCENTILE_CT_DATASETS:
            return window_uint8(slice_2d, *CT_WINDOWS[anatomy_group(label)])
        return percentile_uint8(slice_2d)
    raise ValueError(f"unknown render mode {mode!r}; expected 'minmax' or 'window'")


def to_rgb(gray: np.ndarray) -> Image.Image:
    """Grey uint8 (rows, cols) -> RGB PIL image of width = cols, height = rows."""
    return Image.fromarray(np.ascontiguousarray(gray), mode="L").convert("RGB")
