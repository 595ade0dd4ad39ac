"""The model-adapter contract.

Adapters contain no task code: they receive fully built chat messages and return text.
They answer one geometric question for the tasks: what size does the model actually see
for an image of W x H (:meth:`ModelAdapter.perceived_geometry`)?
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..schema import GenerationSettings, PerceivedGeometry, Request, Response, Sample

__all__ = ["ModelAdapter", "PerceivedGeometry", "RunContext", "parse_hw"]


def parse_hw(value: Any) -> tuple[int, int] | None:
    """``"512x512"``, ``"512,512"``, ``[512, 512]`` or ``512`` -> (512, 512); None/"" -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").replace("[", "").replace("]", "").split(",") if p.strip()]
    else:
        parts = list(value)
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(f"reshape_image_hw must be HxW, got {value!r}")
    h, w = (int(str(p).strip()) for p in parts)
    if h < 1 or w < 1:
        raise ValueError(f"reshape_image_hw must be positive, got {value!r}")
    return (h, w)


@dataclass
class RunContext:
    """What the runner offers an adapter before generation starts."""

    # Train-split samples of a test config (for baselines that learn priors); None if unknown.
    train_samples: Callable[[Sample], Sequence[Sample]] | None = None
    # The correct answer of a sample for a task (the task's ``AnswerSpec.truth`` or the target).
    truth: Callable[[str, Sample], Sequence[float]] | None = None
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class ModelAdapter(ABC):
    """Base class of model adapters. Construct with keyword arguments from ``--model-args``."""

    backend: ClassVar[str] = ""
    default_batch_size: ClassVar[int] = 1
    # Argument names never written to disk or used in cache keys (API keys, tokens).
    secret_args: ClassVar[frozenset[str]] = frozenset({"api_key", "token", "key"})

    def __init__(self, **kwargs: Any) -> None:
        self.args = dict(kwargs)

    def identity(self) -> dict[str, Any]:
        """What makes this model's answers this model's: part of every cache key."""
        public = {k: v for k, v in sorted(self.args.items()) if k not in self.secret_args}
        return {"adapter": f"{type(self).__module__}:{type(self).__qualname__}", "args": public}

    @property
    def image_first(self) -> bool:
        """Message order this model was run with: image parts before text parts when True.

        Default False (text first, as the v1 vLLM wrappers); a preset or ``image_first=true``
        in ``--model-args`` sets it. The planner applies it to every request
        (:func:`medvision_eval.schema.arrange_messages`).
        """
        value = self.args.get("image_first", False)
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """(height, width) every slice is resized to before this model sees it, or None.

        The official ``reshape_image_hw`` model option (MedVision-V0 runs with 512x512): the
        planner then plans each config as its resized variant (v1 ``_load_nifti_2d`` zoom, spacing
        and targets; see ``BenchmarkConfig.reshape_hw``). Set by ``reshape_image_hw=HxW``.
        """
        return parse_hw(self.args.get("reshape_image_hw"))

    def perceived_geometry(self, width: int, height: int) -> PerceivedGeometry:
        """Default: the model sees the image as given."""
        return PerceivedGeometry.identity(width, height)

    def generation_settings(self) -> GenerationSettings:
        """Decoding settings this adapter runs with (from its preset/args); part of the cache key."""
        return GenerationSettings()

    def prepare(self, context: RunContext) -> None:
        """Called once before the first request of a run."""

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[Response]:
        """Answer a batch. One Response per request, in order; failures set ``error``, never raise."""

    def info(self) -> dict[str, Any]:
        """Backend details recorded in results.json (versions, device, dtype, …)."""
        return {"backend": self.backend}

    def close(self) -> None:
        """Release resources (engines, servers, GPU memory)."""
