"""The model-adapter contract.

Adapters contain no task code: they receive fully built chat messages (with images), the
generation settings and the answer's shape, and return text. They never see the ground truth;
the baselines that answer from it (``oracle``, ``prior``) declare ``uses_truth = True`` and get a
:class:`TruthChannel` in :meth:`ModelAdapter.prepare`.
They answer one geometric question for the tasks: what size does the model actually see
for an image of W x H (:meth:`ModelAdapter.perceived_geometry`)?
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..schema import GenerationSettings, PerceivedGeometry, Request, Response, Sample

__all__ = ["ModelAdapter", "PerceivedGeometry", "RunContext", "TruthChannel", "parse_hw"]


class TruthChannel:
    """Ground truth, offered by the runner only to adapters that declare ``uses_truth = True``
    (the ``oracle`` and ``prior`` baselines). Requests never carry it."""

    def __init__(
        self,
        samples: Mapping[tuple[str, str], Sample],
        true_values: Callable[[str, Sample], Sequence[float]],
        train_samples: Callable[[Sample], Sequence[Sample]],
    ) -> None:
        self._samples = samples
        self._true_values = true_values
        self._train_samples = train_samples

    def sample(self, request: Request) -> Sample:
        """The sample a request asks about (labels, config, target)."""
        try:
            return self._samples[(request.task, request.sample_id)]
        except KeyError:
            raise LookupError(f"no sample {request.sample_id!r} of task {request.task!r} in this run") from None

    def values(self, request: Request) -> tuple[float, ...]:
        """The values the request's answer is scored against."""
        return tuple(self._true_values(request.task, self.sample(request)))

    def values_of(self, task: str, sample: Sample) -> tuple[float, ...]:
        """The values ``task`` would score ``sample`` against (e.g. a train-split sample)."""
        return tuple(self._true_values(task, sample))

    def train_samples(self, sample: Sample) -> Sequence[Sample]:
        """Train-split samples of the sample's config (empty when the data has none)."""
        return self._train_samples(sample)


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

    seed: int = 0
    # Ground truth: set only for adapters whose class declares ``uses_truth = True``.
    truth: TruthChannel | None = None
    info: dict[str, Any] = field(default_factory=dict)


class ModelAdapter(ABC):
    """Base class of model adapters. Construct with keyword arguments from ``--model-args``."""

    backend: ClassVar[str] = ""
    default_batch_size: ClassVar[int] = 1
    # Set True only for baselines that answer from the ground truth: they get RunContext.truth.
    uses_truth: ClassVar[bool] = False
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
