"""Baselines that need no weights and answer in text through the same parser as any model.

``random``  the paper's random-box analysis (box width/height uniform in 1..W, 1..H at a uniform
            position); uniform values in the plausible range for sizes, angles and distances.
``prior``   per-label means of the train split: the mean box, mean diameters, mean angle or
            distance. A model that does not beat it has learned nothing about the image.
``oracle``  the ground truth plus configurable noise, for tests and sanity checks.

Every answer is a deterministic function of (seed, sample id), so it does not depend on batch
size, order or sharding. ``delay_s`` simulates model latency; ``error_rate`` makes a stable,
seeded subset of samples fail (to exercise error handling). Neither changes the answers, so
neither is part of the cache identity: a rerun without ``error_rate`` retries only the failures.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..hookspecs import ModelEntry
from ..schema import ImagePart, Request, Response, Sample
from .base import ModelAdapter, RunContext, TruthChannel

if TYPE_CHECKING:  # pragma: no cover - numpy is imported when a baseline first answers
    import numpy as np

_RUN_KNOBS = frozenset({"delay_s", "error_rate", "calls_log"})


class BaselineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    delay_s: float = 0.0  # sleep per request, simulating latency
    error_rate: float = 0.0  # fraction of samples that fail (stable subset)
    calls_log: str | None = None  # append one line per answered sample id (tests, benchmarks)
    batch_size: int = 64
    image_first: bool = False  # message order (ModelAdapter.image_first)
    reshape_image_hw: str | None = None  # resize slices (ModelAdapter.input_hw)


class OracleSettings(BaselineSettings):
    noise: float = 0.0  # relative Gaussian noise (std as a fraction of each value)
    noise_abs: float = 0.0  # absolute Gaussian noise in the target's unit


def _sample_rng(seed: int, sample_id: str, salt: str) -> np.random.Generator:
    import numpy as np

    digest = hashlib.sha256(f"{seed}|{salt}|{sample_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _fails(seed: int, sample_id: str, rate: float) -> bool:
    if rate <= 0:
        return False
    return float(_sample_rng(seed, sample_id, "error").random()) < rate


class _Baseline(ModelAdapter):
    backend: ClassVar[str] = "baseline"
    default_batch_size: ClassVar[int] = 64
    settings_model: ClassVar[type[BaselineSettings]] = BaselineSettings

    def __init__(self, **kwargs: Any) -> None:
        try:
            self.settings = self.settings_model.model_validate(kwargs)
        except ValidationError as exc:
            fields = ", ".join(self.settings_model.model_fields)
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{type(self).__name__}: {problems} (valid args: {fields})") from None
        super().__init__(**self.settings.model_dump())
        self.batch_size = self.settings.batch_size

    def identity(self) -> dict[str, Any]:
        args = {k: v for k, v in self.settings.model_dump().items() if k not in _RUN_KNOBS | {"batch_size"}}
        return {"adapter": f"medvision_eval.models.baselines:{type(self).__name__}", "args": args}

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        out = []
        for request in requests:
            t0 = time.perf_counter()
            if self.settings.delay_s:
                time.sleep(self.settings.delay_s)
            if _fails(self.settings.seed, request.sample_id, self.settings.error_rate):
                out.append(Response(error="simulated failure (error_rate)", latency_s=time.perf_counter() - t0))
                continue
            try:
                values = self.answer(request)
            except LookupError as exc:
                out.append(Response(error=str(exc), latency_s=time.perf_counter() - t0))
                continue
            out.append(Response(text=request.answer.render(values), latency_s=time.perf_counter() - t0))
        if self.settings.calls_log:
            with open(self.settings.calls_log, "a", encoding="utf-8") as fh:
                fh.writelines(f"{r.sample_id}\n" for r in requests)
        return out

    def answer(self, request: Request) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError


class RandomBaseline(_Baseline):
    """Uniform guesses: the paper's random boxes, uniform values in the plausible range."""

    def answer(self, request: Request) -> list[float]:
        rng = _sample_rng(self.settings.seed, request.sample_id, "random")
        spec = request.answer
        if spec.unit == "relative" and spec.k == 4:
            width, height = image_size(request)
            w = int(rng.integers(1, width + 1))
            h = int(rng.integers(1, height + 1))
            col = int(rng.integers(0, width - w + 1))
            row = int(rng.integers(0, height - h + 1))
            # lower-left origin, relative coordinates, inclusive max index (as the targets)
            x1, x2 = col / width, (col + w - 1) / width
            y1, y2 = (height - (row + h - 1)) / height, (height - row) / height
            return [x1, y1, x2, y2]
        return [float(v) for v in rng.uniform(spec.low, spec.high, size=spec.k)]


class _TruthBaseline(_Baseline):
    """A baseline that answers from the ground truth: it declares so and gets the truth channel."""

    uses_truth: ClassVar[bool] = True

    def prepare(self, context: RunContext) -> None:
        self.truth = context.truth

    def channel(self) -> TruthChannel:
        truth = getattr(self, "truth", None)
        if truth is None:
            raise LookupError(f"{type(self).__name__} answers from the ground truth, which this run did not offer")
        return truth


class PriorBaseline(_TruthBaseline):
    """Per-label means of the train split of each config."""

    def prepare(self, context: RunContext) -> None:
        super().prepare(context)
        self._means: dict[tuple[str, str, str], list[float]] = {}

    def _mean(self, task: str, sample: Sample) -> list[float]:
        key = (task, sample.config, sample.label)
        if key not in self._means:
            import numpy as np

            truth = self.channel()
            train = list(truth.train_samples(sample))
            if not train:
                raise LookupError(f"prior: no train split available for {sample.config}")
            values = {s.id: truth.values_of(task, s) for s in train}
            for label, group in _group_by_label(train).items():
                self._means[(task, sample.config, label)] = np.mean([values[s.id] for s in group], axis=0).tolist()
            if key not in self._means:  # label unseen in training: mean over the whole config
                self._means[key] = np.mean(list(values.values()), axis=0).tolist()
        return self._means[key]

    def answer(self, request: Request) -> list[float]:
        return self._mean(request.task, self.channel().sample(request))


class OracleBaseline(_TruthBaseline):
    """Ground truth, optionally with Gaussian noise."""

    settings_model = OracleSettings

    def answer(self, request: Request) -> list[float]:
        import numpy as np

        values = np.asarray(self.channel().values(request), dtype=float)
        s = self.settings
        if s.noise or s.noise_abs:
            rng = _sample_rng(s.seed, request.sample_id, "oracle")
            values = values + rng.normal(0.0, 1.0, values.shape) * (s.noise * np.abs(values) + s.noise_abs)
        return values.tolist()


def image_size(request: Request) -> tuple[int, int]:
    """(width, height) of the request's image, as the model receives it."""
    for message in request.messages:
        for part in message.content:
            if isinstance(part, ImagePart) and part.image is not None:
                return tuple(part.image.size)  # type: ignore[return-value]
    raise LookupError(f"random: request {request.sample_id!r} carries no image")


def _group_by_label(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.label, []).append(s)
    return groups


def baseline_entries() -> list[ModelEntry]:
    common = "Args: seed, delay_s (simulated latency), error_rate (stable failing subset), batch_size."
    return [
        ModelEntry(
            name="random",
            target="medvision_eval.models.baselines:RandomBaseline",
            backend="baseline",
            description="Uniform random boxes (paper's analysis) and uniform values in range. " + common,
        ),
        ModelEntry(
            name="prior",
            target="medvision_eval.models.baselines:PriorBaseline",
            backend="baseline",
            description="Per-label train-split means: the bar a VLM must beat. " + common,
        ),
        ModelEntry(
            name="oracle",
            target="medvision_eval.models.baselines:OracleBaseline",
            backend="baseline",
            description="Ground truth plus noise=<relative std>, noise_abs=<std>. " + common,
        ),
    ]
