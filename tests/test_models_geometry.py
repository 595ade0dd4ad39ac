"""Perceived geometry (models/geometry.py) against transformers' own image processors.

Each family's processor is instantiated from config values (no hub); the test image is white
so that padded regions (filled with 0 or the mean colour before normalisation) are told apart
from image content in the pixel tensors.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

from medvision_eval.models import geometry as G

SIZES = [(1935, 2400), (182, 218), (512, 512), (2400, 1935)]


def white(w: int, h: int) -> Image.Image:
    return Image.new("RGB", (w, h), (255, 255, 255))


def content_box(canvas: np.ndarray, value: float, pad: float | None = None) -> tuple[int, int]:
    """(width, height) of the white region of a (C, H, W) canvas.

    Without ``pad`` a pixel counts if it equals the white value; with ``pad`` (the padding
    colour) if it is nearer white than the padding (resampling blurs the border by a pixel).
    """
    if pad is None:
        mask = np.isclose(canvas[0], value, atol=1e-3)
    else:
        mask = np.abs(canvas[0] - value) < np.abs(canvas[0] - pad)
    rows, cols = np.where(mask.any(axis=1))[0], np.where(mask.any(axis=0))[0]
    assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all(), "content is not one rectangle"
    return int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("w,h", SIZES)
def test_qwen25vl_grid_matches_processor(w, h):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    ip = Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": G.QWEN25VL_MIN_PIXELS, "longest_edge": G.QWEN25VL_MAX_PIXELS},
    )
    out = ip(images=[white(w, h)], return_tensors="np")
    _, gh, gw = (int(v) for v in out["image_grid_thw"][0])
    g = G.perceive(G.spec_from_hf("qwen2_5_vl", ip), w, h)
    assert g == G.perceive(G.named("qwen2_5_vl"), w, h)
    assert g.canvas == (gw * 14, gh * 14) == g.content == g.v1
    assert g.canvas[0] % 28 == 0 and g.canvas[1] % 28 == 0
    assert out["pixel_values"].shape[0] == gh * gw  # one row per 14x14 patch (x temporal 2 in dim 1)


@pytest.mark.parametrize("w,h", SIZES)
def test_gemma3_fixed_896(w, h):
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    ip = Gemma3ImageProcessorPil(size={"height": 896, "width": 896})
    pv = ip(images=[white(w, h)], return_tensors="np")["pixel_values"]
    g = G.perceive(G.spec_from_hf("gemma3", ip), w, h)
    assert pv.shape[-2:] == (896, 896)
    assert g.canvas == g.content == g.v1 == (896, 896)
    assert content_box(pv[0], 1.0) == (896, 896)  # stretched, no padding


@pytest.mark.parametrize("w,h", SIZES)
def test_llava_onevision_anyres_pad(w, h):
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    ip = LlavaOnevisionImageProcessorPil()  # defaults == llava-onevision-qwen2-72b-ov-hf config
    pv = ip(images=[white(w, h)], return_tensors="np")["pixel_values"][0]  # (1 + tiles, 3, 384, 384)
    spec = G.spec_from_hf("llava_onevision", ip)
    g = G.perceive(spec, w, h)
    cw, ch = g.canvas
    cols, rows = cw // 384, ch // 384
    assert pv.shape[0] == 1 + cols * rows
    tiles = pv[1:].reshape(rows, cols, 3, 384, 384).transpose(2, 0, 3, 1, 4).reshape(3, ch, cw)
    white_value = (1.0 - ip.image_mean[0]) / ip.image_std[0]
    assert content_box(tiles, white_value) == g.content
    if g.content != g.canvas:
        assert g.v1 != g.content or g.v1 == g.canvas  # v1 named the canvas (transposed), not the content


@pytest.mark.parametrize("w,h", SIZES)
def test_mllama_tile_pad(w, h):
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    ip = MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4)
    out = ip(images=[[white(w, h)]], return_tensors="np")
    g = G.perceive(G.spec_from_hf("mllama", ip), w, h)
    cw, ch = g.canvas
    cols, rows = cw // 560, ch // 560
    assert int(out["num_tiles"][0][0]) == cols * rows
    pv = out["pixel_values"][0, 0, : cols * rows]
    canvas = pv.reshape(rows, cols, 3, 560, 560).transpose(2, 0, 3, 1, 4).reshape(3, ch, cw)
    white_value = (1.0 - ip.image_mean[0]) / ip.image_std[0]
    assert content_box(canvas, white_value) == g.content == g.v1


@pytest.mark.parametrize("w,h", SIZES)
def test_internvl_dynamic_tiles_pixels(w, h):
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    ip = GotOcr2ImageProcessorPil(
        size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1, max_patches=12,
        image_mean=[0.0] * 3, image_std=[1.0] * 3,
    )
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    pv = ip(images=[img], return_tensors="np")["pixel_values"]
    g = G.perceive(G.spec_from_hf("internvl", ip), w, h)
    assert g.v1 == (448, 448)
    cw, ch = g.canvas
    cols, rows = cw // 448, ch // 448
    n = cols * rows
    assert pv.shape[0] == (n + 1 if n > 1 else 1)  # tiles + thumbnail
    # the tiles are exactly the image stretched to the canvas (bicubic), cut into 448 squares
    ref = np.asarray(img.resize((cw, ch), Image.BICUBIC), dtype=np.float32) / 255.0
    got = pv[:n].reshape(rows, cols, 3, 448, 448).transpose(0, 3, 1, 4, 2).reshape(ch, cw, 3)
    assert np.abs(got - ref).max() < 2e-2
    assert g.content == g.canvas


@pytest.mark.parametrize("w,h", SIZES)
def test_clip_pad_square_336(w, h):
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    ip = LlavaImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=True, do_center_crop=True,
    )
    pv = ip(images=[white(w, h)], return_tensors="np")["pixel_values"][0]
    g = G.perceive(G.spec_from_hf("llava", ip), w, h)
    assert pv.shape[-2:] == (336, 336) and g.canvas == g.v1 == (336, 336)
    white_value = (1.0 - ip.image_mean[0]) / ip.image_std[0]
    # pad colour = image mean, i.e. 0 after normalisation
    cw, chh = content_box(pv, white_value, pad=0.0)
    assert abs(cw - g.content[0]) <= 1 and abs(chh - g.content[1]) <= 1


def test_geometry_table_values():
    """The numbers the prompts state (regression guard; computed by hand from the rules)."""
    q = G.perceive(G.named("qwen2_5_vl"), 1935, 2400)
    assert q.canvas == (1932, 2408)
    assert G.perceive(G.named("qwen2_5_vl"), 182, 218).canvas == (168, 224)
    lo = G.perceive(G.named("llava_onevision"), 1935, 2400)
    assert lo.canvas[0] % 384 == 0 and lo.content[1] == lo.canvas[1] and lo.content[0] < lo.canvas[0]
    ml = G.perceive(G.named("mllama"), 182, 218)
    assert ml.canvas == (560, 560) and ml.content[1] == 560 and ml.content[0] < 560
    assert G.perceive(G.named("internvl3"), 512, 512).canvas == (448, 448)


def test_unknown_named_geometry_lists_choices():
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        G.named("qwen9")
