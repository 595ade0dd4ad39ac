"""What size does a model actually see for an image of W x H?

Pure functions (no torch, no transformers) re-implementing each preset family's image
preprocessing geometry. ``tests/test_models_geometry.py`` checks every one against the
transformers image processor of that family (grid sizes, pixel tensors).

Each family returns a :class:`PerceivedGeometry` with three answers (all ``(width, height)``):

* ``canvas``  - the image the vision encoder receives (after resize, tiling and padding);
* ``content`` - the part of the canvas covered by image pixels (== canvas when nothing is padded);
* ``v1``      - what the official v1 code (``medvision_utils.get_resized_img_shape``) stated.
  For padding / tiling models this is wrong (official issue #20); it is kept so the ``paper``
  protocol can reproduce the published prompts.

Internally the helpers work in (height, width), as transformers does; the public
:func:`perceive` takes and returns (width, height).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..schema import PerceivedGeometry

Family = Literal[
    "identity", "qwen2_vl", "fixed", "clip_pad_square", "internvl", "llava_onevision", "mllama"
]

# Qwen2-VL / Qwen2.5-VL hub preprocessor_config.json (Qwen/Qwen2.5-VL-*-Instruct, Lingshu,
# MedVision SFT checkpoints): min_pixels 3136, max_pixels 12845056, patch 14, merge 2.
QWEN25VL_MIN_PIXELS = 3136
QWEN25VL_MAX_PIXELS = 12845056

# LlavaOnevisionImageProcessor defaults == llava-onevision-qwen2-*-ov-hf preprocessor_config.
LLAVA_ONEVISION_PINPOINTS: tuple[tuple[int, int], ...] = tuple(
    (h, w) for h in range(384, 2305, 384) for w in range(384, 2305, 384)
)


class GeometrySpec(BaseModel):
    """A family plus its parameters; enough to answer :func:`perceive` without loading a model."""

    model_config = ConfigDict(frozen=True)

    family: Family = "identity"
    # qwen2_vl
    patch_size: int = 14
    merge_size: int = 2
    min_pixels: int = QWEN25VL_MIN_PIXELS
    max_pixels: int = QWEN25VL_MAX_PIXELS
    # fixed / clip_pad_square / internvl / llava_onevision / mllama: tile or square side
    size: int = 0
    # internvl
    min_tiles: int = 1
    max_tiles: int = 12
    v1_size: int | None = None  # what v1 stated for fixed-size families (None = size)
    # llava_onevision: (height, width) resolutions
    pinpoints: tuple[tuple[int, int], ...] = Field(default=LLAVA_ONEVISION_PINPOINTS)

    def describe(self) -> dict[str, Any]:
        keep = {
            "identity": (),
            "qwen2_vl": ("patch_size", "merge_size", "min_pixels", "max_pixels"),
            "fixed": ("size",),
            "clip_pad_square": ("size",),
            "internvl": ("size", "min_tiles", "max_tiles"),
            "llava_onevision": ("size",),
            "mllama": ("size", "max_tiles"),
        }[self.family]
        return {"family": self.family, **{k: getattr(self, k) for k in keep}}


# Named specs used by presets and by ``geometry=<name>`` adapter arguments.
NAMED: dict[str, GeometrySpec] = {
    "identity": GeometrySpec(family="identity"),
    "qwen2_5_vl": GeometrySpec(family="qwen2_vl"),
    "gemma3": GeometrySpec(family="fixed", size=896),
    "internvl3": GeometrySpec(family="internvl", size=448, min_tiles=1, max_tiles=12, v1_size=448),
    "llava_onevision": GeometrySpec(family="llava_onevision", size=384),
    "mllama": GeometrySpec(family="mllama", size=560, max_tiles=4),
    "clip336_pad": GeometrySpec(family="clip_pad_square", size=336),
    "meddr": GeometrySpec(family="fixed", size=448),
}


def named(name: str) -> GeometrySpec:
    try:
        return NAMED[name]
    except KeyError:
        raise ValueError(f"unknown geometry {name!r}; known: {', '.join(sorted(NAMED))}") from None


# ----------------------------------------------------------------------------- families (h, w)
def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """Qwen2-VL smart resize: both sides multiples of ``factor``, area within [min, max] pixels."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def select_best_resolution(original_hw: tuple[int, int], resolutions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """LLaVA-NeXT/OneVision: the (h, w) resolution keeping most pixels, then wasting least."""
    oh, ow = original_hw
    best, best_eff, best_waste = None, 0, float("inf")
    for h, w in resolutions:
        scale = min(w / ow, h / oh)
        dw, dh = int(ow * scale), int(oh * scale)
        eff = min(dw * dh, ow * oh)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (h, w), eff, waste
    assert best is not None
    return best


def fit_keep_aspect(original_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """LLaVA-OneVision ``get_patch_output_size``: resize into target keeping aspect (ceil)."""
    oh, ow = original_hw
    th, tw = target_hw
    sw, sh = tw / ow, th / oh
    if sw < sh:
        return min(math.ceil(oh * sw), th), tw
    return th, min(math.ceil(ow * sh), tw)


def mllama_canvas(height: int, width: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """Llama-3.2-Vision ``get_optimal_tiled_canvas`` -> (canvas_h, canvas_w)."""
    options = [(a * tile, b * tile) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if a * b <= max_tiles]
    scales = [min(ch / height, cw / width) for ch, cw in options]
    up = [s for s in scales if s >= 1]
    chosen = min(up) if up else max(s for s in scales if s < 1)
    cands = [o for o, s in zip(options, scales) if s == chosen]
    return min(cands, key=lambda o: o[0] * o[1])  # first minimum area, as np.argmin


def mllama_fit(height: int, width: int, canvas_h: int, canvas_w: int, tile: int) -> tuple[int, int]:
    """Llama-3.2-Vision ``get_image_size_fit_to_canvas`` (floor, at least one pixel)."""
    tw = min(max(width, tile), canvas_w)
    th = min(max(height, tile), canvas_h)
    sh, sw = th / height, tw / width
    if sw < sh:
        return min(math.floor(height * sw) or 1, th), tw
    return th, min(math.floor(width * sh) or 1, tw)


def internvl_grid(height: int, width: int, tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """InternVL dynamic tiling: (columns, rows) of the grid with the closest aspect ratio."""
    grids = sorted(
        ((a, b) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if min_tiles <= a * b <= max_tiles),
        key=lambda g: g[0] * g[1],
    )
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


# ----------------------------------------------------------------------------- public
def perceive(spec: GeometrySpec, width: int, height: int) -> PerceivedGeometry:
    """Perceived geometry of a ``width`` x ``height`` image for ``spec``; all sizes (w, h)."""
    w, h = int(width), int(height)
    orig = (w, h)
    f = spec.family
    if f == "identity":
        return PerceivedGeometry.identity(w, h)
    if f == "qwen2_vl":
        rh, rw = smart_resize(h, w, spec.patch_size * spec.merge_size, spec.min_pixels, spec.max_pixels)
        # v1 read the size from the processor's numpy ``image_grid_thw``: a float64 ratio
        return PerceivedGeometry(original=orig, canvas=(rw, rh), content=(rw, rh), v1=(rw, rh), v1_float32=False)
    if f == "fixed":  # plain resize (stretch) to size x size
        s = spec.size
        v1 = spec.v1_size or s
        return PerceivedGeometry(original=orig, canvas=(s, s), content=(s, s), v1=(v1, v1))
    if f == "clip_pad_square":  # LLaVA expand2square: pad to a square, then resize to size
        s, m = spec.size, max(w, h)
        content = (round(w * s / m), round(h * s / m))
        return PerceivedGeometry(original=orig, canvas=(s, s), content=content, v1=(s, s))
    if f == "internvl":  # stretch to a cols x rows grid of tiles (+ a thumbnail); no padding
        cols, rows = internvl_grid(h, w, spec.size, spec.min_tiles, spec.max_tiles)
        canvas = (cols * spec.size, rows * spec.size)
        v1 = spec.v1_size or spec.size
        return PerceivedGeometry(original=orig, canvas=canvas, content=canvas, v1=(v1, v1))
    if f == "llava_onevision":
        bh, bw = select_best_resolution((h, w), spec.pinpoints)
        ch, cw = fit_keep_aspect((h, w), (bh, bw))
        # v1 passed PIL's (W, H) where (H, W) was expected and read the result as (H, W).
        vh, vw = select_best_resolution((w, h), spec.pinpoints)
        return PerceivedGeometry(original=orig, canvas=(bw, bh), content=(cw, ch), v1=(vw, vh))
    if f == "mllama":
        canvas_h, canvas_w = mllama_canvas(h, w, spec.max_tiles, spec.size)
        ch, cw = mllama_fit(h, w, canvas_h, canvas_w, spec.size)
        # v1 replayed MllamaImageProcessor.resize and stated the resized (pre-pad) size.
        return PerceivedGeometry(original=orig, canvas=(canvas_w, canvas_h), content=(cw, ch), v1=(cw, ch))
    raise ValueError(f"unknown geometry family {f!r}")


def spec_from_hf(model_type: str, image_processor: Any) -> GeometrySpec:
    """The geometry of a loaded transformers image processor (duck-typed, no import needed)."""
    ip = image_processor

    def size_of(default: int) -> int:
        size = getattr(ip, "size", None) or {}
        get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
        return int(get("height", None) or get("shortest_edge", None) or default)

    if model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        size = getattr(ip, "size", None) or {}
        get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
        return GeometrySpec(
            family="qwen2_vl",
            patch_size=int(ip.patch_size),
            merge_size=int(ip.merge_size),
            min_pixels=int(get("shortest_edge", None) or getattr(ip, "min_pixels", None) or QWEN25VL_MIN_PIXELS),
            max_pixels=int(get("longest_edge", None) or getattr(ip, "max_pixels", None) or QWEN25VL_MAX_PIXELS),
        )
    if model_type == "gemma3":
        if getattr(ip, "do_pan_and_scan", False):
            raise ValueError("Gemma3 pan-and-scan is on: perceived geometry is not a single canvas")
        return GeometrySpec(family="fixed", size=size_of(896))
    if model_type == "llava_onevision":
        return GeometrySpec(
            family="llava_onevision",
            size=size_of(384),
            pinpoints=tuple(tuple(int(v) for v in p) for p in ip.image_grid_pinpoints),
        )
    if model_type == "mllama":
        return GeometrySpec(family="mllama", size=size_of(560), max_tiles=int(ip.max_image_tiles))
    if model_type == "internvl":
        if getattr(ip, "crop_to_patches", False):
            return GeometrySpec(
                family="internvl", size=size_of(448), min_tiles=int(ip.min_patches), max_tiles=int(ip.max_patches), v1_size=448
            )
        return GeometrySpec(family="fixed", size=size_of(448))
    if model_type in ("llava", "llava_next") and getattr(ip, "do_pad", False) and model_type == "llava":
        return GeometrySpec(family="clip_pad_square", size=size_of(336))
    return GeometrySpec(family="identity")
