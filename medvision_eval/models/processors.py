"""Loading transformers processors so that the image part is never silently lost.

transformers 5.x: the Qwen2-VL / Qwen2.5-VL / Qwen3-VL processors require a video processor,
and every video processor requires torchvision (whose PyPI wheel is CUDA-only and breaks the
CPU torch). Without torchvision ``AutoProcessor`` either fails or returns a bare tokenizer.
Here, when torchvision is absent, those families load through an *image-only* subclass of
the stock processor (same tokens, same chat template, no video processor). Any processor
that still comes back without an image processor is an error.
"""

from __future__ import annotations

import functools
from typing import Any

from .errors import BackendNotInstalledError

QWEN_VL_TYPES = {
    "qwen2_vl": ("transformers.models.qwen2_vl.processing_qwen2_vl", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("transformers.models.qwen2_5_vl.processing_qwen2_5_vl", "Qwen2_5_VLProcessor"),
    "qwen3_vl": ("transformers.models.qwen3_vl.processing_qwen3_vl", "Qwen3VLProcessor"),
}


class ProcessorLoadError(RuntimeError):
    """The processor of a model could not be loaded with its image part."""


def torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


@functools.cache
def image_only_processor_class(model_type: str) -> type:
    """An image-only subclass of the stock Qwen-VL processor of ``model_type``."""
    import importlib

    module, name = QWEN_VL_TYPES[model_type]
    stock = getattr(importlib.import_module(module), name)

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any) -> None:
        # The stock __init__ sets the token attributes and passes a third (video) argument to
        # ProcessorMixin.__init__, which pairs arguments with *this* class's attributes
        # (image_processor, tokenizer) and so ignores it.
        stock.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(f"{name}ImageOnly", (stock,), {"__init__": __init__, "__module__": __name__})


def load_processor(
    path: str, *, model_type: str, revision: str | None = None, trust_remote_code: bool = False
) -> Any:
    """Processor of the model at ``path`` (hub id or folder), guaranteed to carry an image processor."""
    try:
        from transformers import AutoProcessor
    except ImportError as e:  # pragma: no cover - core dependency
        raise BackendNotInstalledError("the hf backend needs transformers: pip install 'medvision-eval[hf]'") from e

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if model_type in QWEN_VL_TYPES and not torchvision_available():
        proc = image_only_processor_class(model_type).from_pretrained(path, **kwargs)
        how = "image-only Qwen-VL processor (torchvision absent)"
    else:
        proc = AutoProcessor.from_pretrained(path, **kwargs)
        how = "AutoProcessor"
    if getattr(proc, "image_processor", None) is None:
        raise ProcessorLoadError(
            f"{how} for {path!r} (model_type={model_type!r}) returned {type(proc).__name__} without an image "
            "processor; the model would never see the image. Check the checkpoint's processor_config.json / "
            "preprocessor_config.json (torchvision present: "
            f"{torchvision_available()})."
        )
    if getattr(proc, "tokenizer", None) is None:
        raise ProcessorLoadError(f"processor for {path!r} has no tokenizer")
    return proc
