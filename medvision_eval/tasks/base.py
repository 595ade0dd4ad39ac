"""The task contract. A task family is one class: prompt, answer shape, per-sample metrics, tables.

A task never reads protocol flags: it asks its :class:`~medvision_eval.protocol.Protocol` for
the format block, the size statement, parsing, the values to score against and the sample
filter, so it behaves right under every protocol it declares (``protocols``). What image size
the model perceives is the adapter's answer (:class:`~medvision_eval.schema.PerceivedGeometry`),
handed to :meth:`Task.prompt`. Scoring is pure, so a stored run can be re-scored without the
model (``medvision-eval score RUN_DIR``).

The smallest complete task sets ``name``, ``k``, ``unit`` and writes :meth:`Task.prompt` and
:meth:`Task.score`; the base class builds messages, answer specs, parses, orders samples by id,
counts parse outcomes, bootstraps the headline metrics and assembles the :class:`TaskResult`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..metric_names import ALL
from ..protocol import Protocol
from ..results import TaskResult
from ..schema import (
    AnswerSpec,
    ImagePart,
    Interval,
    Message,
    ParseStatus,
    PerceivedGeometry,
    Prediction,
    Sample,
    TextPart,
    stable_hash,
)
from .parsing import StrictRules

if TYPE_CHECKING:  # pragma: no cover
    from ..data.catalogue import BenchmarkConfig, Catalogue

__all__ = ["Summary", "Task", "TaskResult", "UnsupportedProtocolError"]


class UnsupportedProtocolError(ValueError):
    """A task was asked to run under a protocol it does not declare."""


@dataclass
class Summary:
    """What a family computes from its id-ordered per-sample scores: headline metrics
    (``<scope>/<name>``, see :mod:`medvision_eval.metric_names`), tables and notes."""

    metrics: dict[str, Interval]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Task:
    """Base class of a task family. Subclasses set the class variables and override what differs."""

    name: ClassVar[str]  # what --tasks names, e.g. "detection"
    prompt_version: ClassVar[str] = "1"  # bump on any wording change; part of the fingerprint
    description: ClassVar[str] = ""
    # Protocols this task is defined for; None = every registered protocol.
    protocols: ClassVar[tuple[str, ...] | None] = None
    # Sample family (data builder) whose configs and samples this task asks about; default: ``name``.
    family: ClassVar[str | None] = None
    # Answer shape: k values named ``answer_names`` in ``unit`` (relative | mm | degree | mm2 | …).
    k: ClassVar[int] = 1
    unit: ClassVar[str] = "mm"
    answer_names: ClassVar[tuple[str, ...]] = ()
    decimals: ClassVar[int] = 3
    # True (set on the class itself, not inherited) when summarize() also accepts
    # ``groups.ProfiledSamples``, so the score step can keep this task's samples as columns.
    columnar: ClassVar[bool] = False

    def __init__(self, protocol: Protocol) -> None:
        supported = self.supported_protocols()
        if supported is not None and protocol.name not in supported:
            raise UnsupportedProtocolError(
                f"task {self.name!r} does not support protocol {protocol.name!r}; it supports: {', '.join(supported)}"
            )
        self.protocol = protocol

    @classmethod
    def supported_protocols(cls) -> tuple[str, ...] | None:
        return cls.protocols

    # -- selection ------------------------------------------------------------------------
    def configs(self, catalogue: Catalogue, selector: str | None) -> list[BenchmarkConfig]:
        """Benchmark configs that ``--tasks name[:selector]`` means (selector: dataset, list or config)."""
        return catalogue.configs(self.family or self.name, selector)

    def keep(self, sample: Sample) -> bool:
        """Protocol-level sample filter (e.g. near-zero angles under ``corrected``)."""
        return self.protocol.keep(sample)

    # -- prompting ------------------------------------------------------------------------
    def prompt(self, sample: Sample, geometry: PerceivedGeometry) -> str:
        """The question text; use ``self.protocol.size_statement`` / ``format_block`` for the parts
        the protocol owns."""
        raise NotImplementedError(f"{type(self).__name__} must define prompt() or messages()")

    def messages(self, sample: Sample, geometry: PerceivedGeometry) -> list[Message]:
        """One user message, text before image (the v1 order; the planner re-orders per model).
        Image parts carry ``ref`` only; the executor attaches pixels."""
        text = TextPart(text=self.prompt(sample, geometry))
        return [Message(role="user", content=[text, ImagePart(ref=self.protocol.image_ref(sample))])]

    def plausible_range(self, sample: Sample) -> tuple[float, float]:
        """Range a uniform guess draws from (baselines); default: 0 to the image's physical diagonal."""
        (w, h), (pw, ph) = sample.image_size, sample.pixel_spacing
        return 0.0, math.hypot(w * pw, h * ph)

    def answer_spec(self, sample: Sample) -> AnswerSpec:
        """Shape and plausible range of a well-formed answer (used by baselines and SFT targets)."""
        low, high = self.plausible_range(sample)
        names = self.answer_names or tuple(f"value{i + 1}" for i in range(self.k))
        return AnswerSpec(k=self.k, names=names, unit=self.unit, low=low, high=high,
                          template=self.protocol.answer_template(), decimals=self.decimals)

    # -- parsing and scoring (pure) ----------------------------------------------------------
    def strict_rules(self, sample: Sample | None = None) -> StrictRules:
        """What the strict parser accepts (``sample`` is None when parsing without one)."""
        return StrictRules(k=self.k, unit=self.unit, nonnegative=True)

    def parse(self, text: str | None) -> Prediction:
        """Parse one answer under the protocol's parser. Never raises."""
        return self.protocol.parse(text, self.strict_rules(None))

    def parse_for(self, sample: Sample, text: str | None) -> Prediction:
        """Parse an answer knowing its sample (e.g. whether an angle or a length is due)."""
        return self.protocol.parse(text, self.strict_rules(sample))

    def true_values(self, sample: Sample) -> tuple[float, ...]:
        """The values this task scores a sample against (default: as the protocol says)."""
        return self.protocol.true_values(sample)

    def targets(self, samples: Sequence[Sample], k: int | None = None) -> np.ndarray:
        """(n, k) array of true values, NaN-padded."""
        k = k or self.k
        out = np.full((len(samples), k), np.nan)
        for i, s in enumerate(samples):
            vals = self.true_values(s)
            out[i, : min(k, len(vals))] = vals[:k]
        return out

    def score(self, samples: Sequence[Sample], predictions: Sequence[Prediction]) -> dict[str, np.ndarray]:
        """Per-sample metrics, vectorised: name -> array of len(samples) (NaN where undefined).
        Names come from :mod:`medvision_eval.metric_names` (``MAE``, ``MRE``, ``SR``, …)."""
        raise NotImplementedError(f"{type(self).__name__} must define score()")

    def summarize(self, samples: Sequence[Sample], scores: dict[str, np.ndarray], *, seed: int) -> Summary:
        """Headline metrics, tables and notes from id-ordered samples and scores.
        Default: the mean of every per-sample metric over all samples (NaN ignored), bootstrapped."""
        from ..stats import mean_intervals

        return Summary(metrics=mean_intervals({f"{ALL}/{n}": v for n, v in scores.items()}, seed=seed))

    def aggregate(
        self,
        samples: Sequence[Sample],
        predictions: Sequence[Prediction],
        scores: dict[str, np.ndarray],
        *,
        seed: int = 0,
    ) -> TaskResult:
        """The task's result record: id order, parse statistics, fingerprint, :meth:`summarize`."""
        order = np.array(sorted(range(len(samples)), key=lambda i: samples[i].id), dtype=np.int64)
        ordered = [samples[i] for i in order]
        ordered_scores = {k: np.asarray(v, dtype=np.float64)[order] for k, v in scores.items()}
        return self.result(ordered, ordered_scores, parse_stats(predictions), seed=seed)

    def result(self, ordered: Sequence[Sample], ordered_scores: dict[str, np.ndarray], stats: dict[str, int], *,
               seed: int = 0) -> TaskResult:
        """The :class:`TaskResult` from id-ordered samples (a list, or ``groups.ProfiledSamples`` for
        a ``columnar`` task) and scores, and the parse-status counts."""
        from ..stats import approximation_note, track_approximations

        with track_approximations() as approximated:
            summary = self.summarize(ordered, ordered_scores, seed=seed)
        notes = list(summary.notes)
        if approximated:
            notes.append(approximation_note(max(approximated)))
        return TaskResult(
            task=self.name,
            protocol=self.protocol.name,
            fingerprint=self.fingerprint(),
            n_samples=len(ordered),
            parse_stats=stats,
            metrics=summary.metrics,
            tables=summary.tables,
            notes=notes,
        )

    # -- identity ---------------------------------------------------------------------------
    def fingerprint_payload(self) -> dict[str, Any]:
        """What identifies this task's prompts and scoring; subclasses add their templates."""
        return {"task": self.name, "prompt_version": self.prompt_version, "protocol": self.protocol.model_dump()}

    def fingerprint(self) -> str:
        return stable_hash(self.fingerprint_payload())


def parse_stats(predictions: Sequence[Prediction]) -> dict[str, int]:
    """Count of each parse status (every status present, zeros included)."""
    counts = Counter(p.status.value for p in predictions)
    return {status.value: int(counts.get(status.value, 0)) for status in ParseStatus}
