"""``vllm`` backend: the offline engine (``LLM.chat``), as the paper ran most open models.

GPU-only optional extra: ``pip install 'medvision-eval[vllm]'`` on a GPU machine. Imported
lazily; on machines without it, presets fall back to the ``hf`` backend (see presets.py) or
talk to a ``vllm serve`` process through the ``openai`` backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import field_validator, model_validator

from ..schema import GenerationSettings, Request, Response, Usage
from ._common import (
    AdapterSettings,
    SettingsAdapter,
    json_arg,
    package_version,
    parse_settings,
    short_error,
    timer,
    to_openai_chat,
    with_system,
)
from .errors import BackendNotInstalledError

INSTALL_HINT = "vllm is not installed: pip install 'medvision-eval[vllm]' on a GPU machine (or use --model hf / openai)"


class VLLMSettings(AdapterSettings):
    pretrained: str
    revision: str | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    limit_mm_per_prompt: dict[str, int] = {"image": 1}
    trust_remote_code: bool = False
    batch_size: int = 16
    top_p: float = 0.95  # v1 vllm wrappers: temperature 0, top_p 0.95 (greedy either way)
    engine_kwargs: dict[str, Any] | None = None  # any other vllm.LLM(...) argument

    _json = field_validator("limit_mm_per_prompt", "engine_kwargs", mode="before")(classmethod(lambda cls, v: json_arg(v)))

    @model_validator(mode="after")
    def _ranges(self) -> VLLMSettings:
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1 or self.batch_size < 1:
            raise ValueError("tensor_parallel_size, data_parallel_size and batch_size must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        return self


class VLLMAdapter(SettingsAdapter):
    backend: ClassVar[str] = "vllm"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = parse_settings(VLLMSettings, "vllm", kwargs)
        self.default_batch_size = self.settings.batch_size  # type: ignore[misc]
        self._llm: Any = None

    @staticmethod
    def _vllm() -> Any:
        try:
            import vllm
        except ImportError as e:
            raise BackendNotInstalledError(INSTALL_HINT) from e
        return vllm

    def preflight(self) -> None:
        """Start the engine (weights loaded) once, before any sample is sent."""
        from .errors import ModelUnavailableError

        try:
            self.llm  # noqa: B018
        except BackendNotInstalledError:
            raise
        except Exception as e:
            raise ModelUnavailableError(f"vLLM could not load {self.settings.pretrained}: {short_error(e, 2000)}") from e

    @property
    def llm(self) -> Any:
        if self._llm is None:
            vllm, s = self._vllm(), self.settings
            kw: dict[str, Any] = {
                "model": s.pretrained,
                "dtype": s.dtype,
                "tensor_parallel_size": s.tensor_parallel_size,
                "gpu_memory_utilization": s.gpu_memory_utilization,
                "limit_mm_per_prompt": s.limit_mm_per_prompt,
                "trust_remote_code": s.trust_remote_code,
            }
            if s.data_parallel_size > 1:
                kw["data_parallel_size"] = s.data_parallel_size
            for name in ("revision", "max_model_len", "max_num_seqs"):
                if getattr(s, name) is not None:
                    kw[name] = getattr(s, name)
            kw.update(s.engine_kwargs or {})
            self._llm = vllm.LLM(**kw)
        return self._llm

    def identity(self) -> dict[str, Any]:
        s = self.settings
        return {"adapter": "vllm", "pretrained": s.pretrained, "revision": s.revision, "dtype": s.dtype,
                "system_prompt": s.system_prompt, "engine_kwargs": s.engine_kwargs}

    def info(self) -> dict[str, Any]:
        s = self.settings
        return {"backend": "vllm", "vllm": package_version("vllm"), "torch": package_version("torch"),
                "pretrained": s.pretrained, "dtype": s.dtype, "batch_size": s.batch_size,
                "tensor_parallel_size": s.tensor_parallel_size, "data_parallel_size": s.data_parallel_size,
                "gpu_memory_utilization": s.gpu_memory_utilization, "max_model_len": s.max_model_len}

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        if not requests:
            return []
        try:
            vllm = self._vllm()
            llm = self.llm
        except Exception as e:
            return [Response(error=short_error(e)) for _ in requests]
        return chat_in_groups(vllm, llm, requests, self.settings.system_prompt)

    def close(self) -> None:
        self._llm = None


def chat_in_groups(vllm: Any, llm: Any, requests: Sequence[Request], system_prompt: str | None,
                   **chat_kwargs: Any) -> list[Response]:
    """Answer requests with ``llm.chat``, one call per distinct generation setting.

    ``chat_kwargs`` go to every ``llm.chat`` call (e.g. ``lora_request``). A failing call turns
    into an error response for each request of its group; the other groups still run.
    """
    out: list[Response | None] = [None] * len(requests)
    groups: dict[GenerationSettings, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.generation, []).append(i)
    for gen, idx in groups.items():
        params = vllm.SamplingParams(temperature=gen.temperature, top_p=gen.top_p, max_tokens=gen.max_new_tokens,
                                     seed=gen.seed)
        try:
            convs = [to_openai_chat(with_system(requests[i].messages, system_prompt)) for i in idx]
            with timer() as t:
                results = llm.chat(convs, sampling_params=params, use_tqdm=False, **chat_kwargs)
            for i, res in zip(idx, results):
                o = res.outputs[0]
                usage = Usage(prompt_tokens=len(getattr(res, "prompt_token_ids", None) or []),
                              completion_tokens=len(getattr(o, "token_ids", None) or []))
                out[i] = Response(text=o.text, latency_s=t[0] / len(idx), usage=usage)
        except Exception as e:
            for i in idx:
                out[i] = Response(error=short_error(e))
    return [r if r is not None else Response(error="no output") for r in out]
