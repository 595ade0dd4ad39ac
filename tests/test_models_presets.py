"""Presets: the paper's models by name, constructed without loading weights."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

from medvision_eval.models import geometry as G
from medvision_eval.models.presets import preset_entries

PAPER = ["qwen2.5-vl-7b", "qwen2.5-vl-32b", "lingshu-32b", "internvl3-38b", "gemma3-27b", "medgemma-4b",
         "medgemma-27b", "llama3.2-vision-11b", "llava-onevision-72b", "gemini-2.5-flash", "gemini-2.5-flash-tool"]
ENTRIES = {e.name: e for e in preset_entries()}


def build(name, **override):
    e = ENTRIES[name]
    mod, _, cls = e.target.partition(":")
    return getattr(importlib.import_module(mod), cls)(**{**e.defaults, **override})


def test_importing_presets_imports_no_heavy_library():
    code = ("import sys, medvision_eval.models.presets as p; p.preset_entries(); "
            "print(sorted(m for m in ('torch','transformers','openai','google.genai','vllm','lmms_eval','httpx') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_paper_model_has_a_preset():
    assert set(PAPER) <= set(ENTRIES)
    assert {"hf", "vllm", "openai", "gemini", "lmms"} <= set(ENTRIES)
    for n in ("llava-med-7b", "huatuogpt-vision-34b", "meddr", "healthgpt-l14"):
        assert "medvision_eval entry point" in ENTRIES[n].unavailable and n in ENTRIES[n].unavailable


@pytest.mark.parametrize("name,geometry,canvas_1935x2400", [
    ("qwen2.5-vl-7b", "qwen2_5_vl", (1932, 2408)), ("lingshu-32b", "qwen2_5_vl", (1932, 2408)),
    ("gemma3-27b", "gemma3", (896, 896)), ("medgemma-27b", "gemma3", (896, 896)),
    ("internvl3-38b", "internvl3", (1344, 1792)), ("llava-onevision-72b", "llava_onevision", (1920, 2304)),
    ("llama3.2-vision-11b", "mllama", (1120, 1120)),
])
def test_presets_construct_with_paper_settings(name, geometry, canvas_1935x2400):
    ad = build(name)
    assert ad.settings.geometry == geometry
    assert ad.perceived_geometry(1935, 2400) == G.perceive(G.named(geometry), 1935, 2400)
    assert ad.perceived_geometry(1935, 2400).canvas == canvas_1935x2400
    g = ad.generation_settings()
    assert g.temperature == 0.0
    assert g.max_new_tokens == (2048 if "medgemma" in name else 1024)
    assert ad.settings.dtype == "bfloat16"


def test_vllm_presets_fall_back_to_hf_without_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    ad = build("internvl3-38b")
    assert ad.backend == "hf" and ad.settings.pretrained == "OpenGVLab/InternVL3-38B-hf"
    assert ad.settings.top_p == 1.0  # greedy either way
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    v = build("internvl3-38b")
    assert v.backend == "vllm" and v.settings.pretrained == "OpenGVLab/InternVL3-38B"
    assert v.settings.limit_mm_per_prompt == {"image": 1} and v.settings.top_p == 0.95
    assert build("qwen2.5-vl-7b", backend="hf").backend == "hf"


def test_medgemma_uses_the_paper_system_prompt():
    ad = build("medgemma-4b")
    assert ad.settings.system_prompt == "You are an expert radiologist."
    assert ad.identity()["pretrained"] == "google/medgemma-4b-it"


def test_gemini_presets():
    assert build("gemini-2.5-flash").settings.variant == "no_tool"
    t = build("gemini-2.5-flash-tool")
    assert t.settings.variant == "tool" and t.settings.thinking_budget == -1
