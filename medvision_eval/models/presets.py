"""Model presets: the paper's models by name, and the generic backends.

Importing this module imports no torch, transformers, vllm or API SDK: targets are lazy
``"module:Class"`` strings. Settings follow the official v1 scripts (MedVision c221615):
vLLM wrappers ran greedy (temperature 0, top_p 0.95) with max 1024 new tokens and bf16;
MedGemma ran the HF pipeline with 2048 new tokens and the system prompt
"You are an expert radiologist."; Gemini 2.5 Flash ran with dynamic thinking, ±code tool.

Presets the paper ran on vLLM use ``backend=auto``: vLLM when installed, otherwise the
transformers (``hf``) backend with the same checkpoint (``--model-args backend=hf|vllm`` forces).

Message order (``image_first``) is each model's official one (``lmms_eval/models`` at c221615):
the vLLM wrappers (Qwen2.5-VL, InternVL3, Gemma3, Llama-3.2-Vision, LLaVA-OneVision, and the SFT
checkpoints evaluated with them) and MedGemma put the text part first; Lingshu
(``[image, text]`` content), Gemini (``contents=[visual, contexts]``), LLaVA-Med, HealthGPT,
HuatuoGPT-Vision (``<image>\n`` + question) and MedDr (image tokens + ``\n`` + question) put
the image first; the plugin packages of the last four should register ``image_first=True``.
"""

from __future__ import annotations

from typing import Any

from .. import later
from ..hookspecs import ModelEntry

M = "medvision_eval.models"
RADIOLOGIST = "You are an expert radiologist."
PLUGIN_HINT = (
    "needs its authors' own code; install a plugin package that registers a ModelEntry named {name!r} "
    "through the medvision_eval entry point (see docs/plugins.md)"
)


def _generic() -> list[ModelEntry]:
    return [
        ModelEntry(name="hf", target=f"{M}.hf:HFAdapter", backend="hf", extra="hf", requires=("torch", "transformers"),
                   description="any transformers image-text-to-text model: pretrained=<hub id or path>"),
        ModelEntry(name="vllm", target=f"{M}.vllm:VLLMAdapter", backend="vllm", extra="vllm", requires=("vllm",),
                   description="vLLM offline engine (GPU): pretrained=<hub id or path>"),
        ModelEntry(name="openai", target=f"{M}.openai_compat:OpenAIAdapter", backend="openai", extra="openai",
                   requires=("httpx",),
                   description="any OpenAI-compatible chat server: base_url=..., model=..., key from $OPENAI_API_KEY"),
        ModelEntry(name="gemini", target=f"{M}.gemini:GeminiAdapter", backend="gemini", extra="gemini",
                   requires=("google.genai",), description="Google Gemini (google-genai); key from $GEMINI_API_KEY"),
        ModelEntry(name="lmms", target=f"{M}.lmms:LmmsAdapter", backend="lmms", extra="lmms", requires=("lmms_eval",),
                   suffix_arg="model",
                   description="bridge to an lmms-eval model: model=<lmms name> or class_path=module:Class"),
    ]


def _vllm_preset(name: str, hub: str, geometry: str, batch: int, desc: str, **extra: Any) -> ModelEntry:
    defaults = {"pretrained": hub, "dtype": "bfloat16", "max_new_tokens": 1024, "temperature": 0.0, "top_p": 0.95,
                "batch_size": batch, "geometry": geometry, **extra}
    # Runs without vllm (backend=auto falls back to transformers), so what it needs is the hf extra;
    # backend=vllm without vllm fails with the vllm install hint.
    return ModelEntry(name=name, target=f"{M}._auto:AutoBackendAdapter", defaults=defaults, backend="vllm|hf",
                      extra="hf", requires=("torch", "transformers"),
                      description=f"{desc} (paper: vLLM; without vllm runs on transformers)")


def _hf_preset(name: str, hub: str, geometry: str, batch: int, desc: str, **extra: Any) -> ModelEntry:
    defaults = {"pretrained": hub, "dtype": "bfloat16", "max_new_tokens": 1024, "batch_size": batch,
                "geometry": geometry, **extra}
    return ModelEntry(name=name, target=f"{M}.hf:HFAdapter", defaults=defaults, backend="hf", extra="hf",
                      requires=("torch", "transformers"), description=desc)


def _paper() -> list[ModelEntry]:
    out = [
        _vllm_preset("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", 20, "Qwen2.5-VL-7B-Instruct"),
        _vllm_preset("qwen2.5-vl-32b", "Qwen/Qwen2.5-VL-32B-Instruct", "qwen2_5_vl", 20, "Qwen2.5-VL-32B-Instruct"),
        _vllm_preset("internvl3-38b", "OpenGVLab/InternVL3-38B", "internvl3", 1, "InternVL3-38B",
                     hf_pretrained="OpenGVLab/InternVL3-38B-hf", trust_remote_code=True,
                     limit_mm_per_prompt={"image": 1}),
        _vllm_preset("gemma3-27b", "google/gemma-3-27b-it", "gemma3", 10, "Gemma-3-27B-it"),
        _vllm_preset("llama3.2-vision-11b", "meta-llama/Llama-3.2-11B-Vision-Instruct", "mllama", 10,
                     "Llama-3.2-11B-Vision-Instruct"),
        _vllm_preset("llava-onevision-72b", "llava-hf/llava-onevision-qwen2-72b-ov-hf", "llava_onevision", 1,
                     "LLaVA-OneVision-Qwen2-72B-OV"),
        _hf_preset("lingshu-32b", "lingshu-medical-mllm/Lingshu-32B", "qwen2_5_vl", 10,
                   "Lingshu-32B (Qwen2.5-VL architecture; paper: transformers)", image_first=True),
        _hf_preset("medgemma-4b", "google/medgemma-4b-it", "gemma3", 10, "MedGemma-4B-it (paper: HF pipeline)",
                   max_new_tokens=2048, system_prompt=RADIOLOGIST),
        _hf_preset("medgemma-27b", "google/medgemma-27b-it", "gemma3", 10,
                   "MedGemma-27B-it (multimodal; settings as MedGemma-4B)", max_new_tokens=2048,
                   system_prompt=RADIOLOGIST),
        ModelEntry(name="gemini-2.5-flash", target=f"{M}.gemini:GeminiAdapter", backend="gemini", extra="gemini",
                   requires=("google.genai",),
                   defaults={"model": "gemini-2.5-flash", "variant": "no_tool", "thinking_budget": -1,
                             "image_first": True},
                   description="Gemini 2.5 Flash, JSON {Thought, Answer} output, dynamic thinking"),
        ModelEntry(name="gemini-2.5-flash-tool", target=f"{M}.gemini:GeminiAdapter", backend="gemini", extra="gemini",
                   requires=("google.genai",),
                   defaults={"model": "gemini-2.5-flash", "variant": "tool", "thinking_budget": -1,
                             "image_first": True},
                   description="Gemini 2.5 Flash with the code-execution tool, dynamic thinking"),
    ]
    # The later official MedVision-V0-7B (Qwen2.5-VL-7B, CoT SFT + GRPO RFT): evaluated as
    # eval__medvision-model-rft does - 512x512 input, the verl RFT system prompt, 4096 new tokens.
    out.append(_vllm_preset("medvision-v0-7b", later.MEDVISION_V0_HUB_ID, "qwen2_5_vl", 10,
                            "MedVision-V0-7B (later official model; 512x512 input, RFT system prompt)",
                            max_new_tokens=later.LATER_MAX_NEW_TOKENS_LOCAL, system_prompt=later.RFT_SYSTEM_PROMPT,
                            reshape_image_hw=later.MEDVISION_V0_INPUT_HW))
    # The paper's SFT checkpoints (Qwen2.5-VL, merged LoRA; evaluated with the same vLLM scripts).
    for size in ("7b", "32b"):
        for task, tag in (("detect", "detect"), ("tl", "TL"), ("ad", "AD")):
            hub = f"YongchengYAO/MedVision__SFT-m__qwen25vl-{size}__{tag}"
            out.append(_vllm_preset(f"medvision-sft-{size}-{task}", hub, "qwen2_5_vl", 20,
                                    f"MedVision SFT Qwen2.5-VL-{size.upper()} ({tag})"))
    for name, hub in (("llava-med-7b", "microsoft/llava-med-v1.5-mistral-7b"),
                      ("huatuogpt-vision-34b", "FreedomIntelligence/HuatuoGPT-Vision-34B"),
                      ("meddr", "Sunanhe/MedDr_0401"),
                      ("healthgpt-l14", "lintw/HealthGPT-L14")):
        out.append(ModelEntry(name=name, target=f"{M}.hf:HFAdapter", backend="plugin",
                              description=f"{hub} (paper model)", unavailable=PLUGIN_HINT.format(name=name)))
    return out


def preset_entries() -> list[ModelEntry]:
    return [*_generic(), *_paper()]
