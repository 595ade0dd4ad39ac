"""Presets the paper ran on vLLM run on transformers when vLLM is absent (as docs/backends.md and
``list models`` say), and every install hint keeps its ``[extra]`` on the terminal."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from medvision_eval.models.presets import preset_entries
from medvision_eval.plugins import Registry
from medvision_eval.runner import RunError, build_adapter

VLLM_PRESETS = [e.name for e in preset_entries() if e.target.endswith("_auto:AutoBackendAdapter")]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")


def test_the_paper_vllm_presets_and_sft_checkpoints_are_covered():
    assert {"qwen2.5-vl-7b", "internvl3-38b", "gemma3-27b", "llama3.2-vision-11b", "llava-onevision-72b"} <= set(VLLM_PRESETS)
    assert sum(n.startswith("medvision-sft-") for n in VLLM_PRESETS) == 6


@pytest.mark.parametrize("name", VLLM_PRESETS)
@pytest.mark.parametrize("backend", [None, "hf"])
def test_vllm_presets_build_an_hf_adapter_without_vllm(name, backend):
    args = {"backend": backend} if backend else {}
    adapter = build_adapter(Registry.discover(), name, args)  # what `run` does: no weights loaded yet
    assert adapter.backend == "hf"
    assert adapter.settings.pretrained.startswith(("Qwen/", "OpenGVLab/", "google/", "meta-llama/", "llava-hf/",
                                                   "YongchengYAO/"))


def test_forcing_vllm_without_vllm_says_what_to_install():
    with pytest.raises(RunError, match=r"pip install 'medvision-eval\[vllm\]'"):
        build_adapter(Registry.discover(), "qwen2.5-vl-7b", {"backend": "vllm"})


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medvision_eval.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_list_models_says_vllm_presets_are_installed_here():
    out = cli("list", "models")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "qwen2.5-vl-7b" in line]
    assert rows and "yes" in rows[0]


def test_install_hints_keep_their_extra_on_the_terminal(tmp_path):
    out = cli("--tasks", "tl_size", "--model", "vllm", "--model-args", "pretrained=x", "--output", str(tmp_path / "r"))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "pip install 'medvision-eval[vllm]'" in text and "Traceback" not in text
    out = cli("--tasks", "tl_size", "--model", "qwen2.5-vl-7b", "--model-args", "backend=vllm",
              "--output", str(tmp_path / "q"))
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "medvision-eval[vllm]" in text and "Traceback" not in text
