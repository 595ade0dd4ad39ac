"""``backend=auto`` for presets the paper ran on vLLM: vLLM when installed, else transformers."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from .errors import BackendNotInstalledError, ModelArgsError

log = logging.getLogger(__name__)

HF_ONLY = {"device_map", "device", "attn_implementation"}
VLLM_ONLY = {"tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len",
             "max_num_seqs", "limit_mm_per_prompt", "engine_kwargs"}


def vllm_installed() -> bool:
    import sys

    if "vllm" in sys.modules:
        return sys.modules["vllm"] is not None
    return importlib.util.find_spec("vllm") is not None


class AutoBackendAdapter:
    """Constructs a :class:`VLLMAdapter` or :class:`HFAdapter` (``backend=auto|vllm|hf``).

    ``hf_pretrained`` names the transformers-native checkpoint when it differs from the vLLM
    one (InternVL3: ``OpenGVLab/InternVL3-38B`` vs ``OpenGVLab/InternVL3-38B-hf``). Arguments
    that only the other backend understands are dropped with a warning.
    """

    def __new__(cls, backend: str = "auto", hf_pretrained: str | None = None, **kwargs: Any) -> Any:
        if backend not in ("auto", "vllm", "hf"):
            raise ModelArgsError(f"backend must be auto, vllm or hf, got {backend!r}")
        chosen = backend if backend != "auto" else ("vllm" if vllm_installed() else "hf")
        if chosen == "vllm":
            from .vllm import INSTALL_HINT, VLLMAdapter

            if not vllm_installed():
                raise BackendNotInstalledError(f"backend=vllm: {INSTALL_HINT}; without it, backend=auto or hf "
                                               "runs this preset on transformers")

            dropped = sorted(set(kwargs) & HF_ONLY)
            args = {k: v for k, v in kwargs.items() if k not in HF_ONLY}
            adapter: Any = VLLMAdapter(**args)
        else:
            from .hf import HFAdapter

            dropped = sorted(set(kwargs) & VLLM_ONLY)
            args = {k: v for k, v in kwargs.items() if k not in VLLM_ONLY}
            if hf_pretrained:
                args["pretrained"] = hf_pretrained
            if "top_p" in args and float(args.get("temperature", 0) or 0) == 0:
                args.pop("top_p")  # greedy: top_p is irrelevant, keep hf's neutral default
            adapter = HFAdapter(**args)
        if dropped:
            log.warning("backend %s ignores %s", chosen, ", ".join(dropped))
        if backend == "auto" and chosen == "hf":
            log.warning("vllm is not installed: running %s with transformers (hf backend)", kwargs.get("pretrained"))
        return adapter
