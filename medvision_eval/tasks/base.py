"""The task contract. A task family is one module: prompts, parser, metrics, aggregation.

Tasks contain no model code. What image size the model perceives is the adapter's answer
(:class:`~medvision_eval.models.base.PerceivedGeometry`), handed to :meth:`Task.messages`.
Parsing and scoring are pure: they take text / arrays and return values, so a stored run
can be re-scored without the model (``medvision-eval score RUN_DIR``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..protocol import Protocol
from ..results import TaskResult
from ..schema import AnswerSpec, Message, Prediction, Sample, stable_hash

__all__ = ["Task", "TaskResult"]

if TYPE_CHECKING:  # pragma: no cover
    from ..data.catalogue import BenchmarkConfig, Catalogue
    from ..schema import PerceivedGeometry


class Task(ABC):
    """Base class of a task family. Subclasses set the class variables and implement the rest."""

    name: ClassVar[str]  # what --tasks names, e.g. "detection"
    prompt_version: ClassVar[str]  # bump on any wording change; part of the fingerprint
    description: ClassVar[str] = ""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    # -- selection ------------------------------------------------------------------------
    @abstractmethod
    def configs(self, catalogue: Catalogue, selector: str | None) -> list[BenchmarkConfig]:
        """Benchmark configs that ``--tasks name[:selector]`` means (selector: dataset or config)."""

    def keep(self, sample: Sample) -> bool:
        """Protocol-level sample filter (e.g. near-zero angles under ``corrected``)."""
        return True

    # -- prompting ------------------------------------------------------------------------
    @abstractmethod
    def messages(self, sample: Sample, geometry: PerceivedGeometry) -> list[Message]:
        """Chat messages for a sample. Image parts carry ``ref`` only; the runner attaches pixels."""

    @abstractmethod
    def answer_spec(self, sample: Sample) -> AnswerSpec:
        """Shape and plausible range of a well-formed answer (used by baselines and SFT targets)."""

    # -- scoring (pure) ---------------------------------------------------------------------
    @abstractmethod
    def parse(self, text: str) -> Prediction:
        """Parse one answer. Never raises; failures return a non-ok status."""

    def true_values(self, sample: Sample) -> tuple[float, ...]:
        """The values this task scores a sample against (default: the sample's target)."""
        return tuple(sample.target.values)

    def parse_for(self, sample: Sample, text: str) -> Prediction:
        """Parse an answer knowing its sample (e.g. whether an angle or a length is due).

        The score step calls this; the default ignores the sample and calls :meth:`parse`.
        """
        return self.parse(text)

    @abstractmethod
    def score(self, samples: Sequence[Sample], predictions: Sequence[Prediction]) -> dict[str, np.ndarray]:
        """Per-sample metrics, vectorised: metric name -> array of len(samples) (NaN where undefined)."""

    @abstractmethod
    def aggregate(
        self,
        samples: Sequence[Sample],
        predictions: Sequence[Prediction],
        scores: dict[str, np.ndarray],
        *,
        seed: int = 0,
    ) -> TaskResult:
        """Headline metrics with bootstrap intervals, and the paper's tables."""

    # -- identity ---------------------------------------------------------------------------
    def fingerprint_payload(self) -> dict[str, Any]:
        """What identifies this task's prompts and scoring; subclasses add their templates."""
        return {"task": self.name, "prompt_version": self.prompt_version, "protocol": self.protocol.model_dump()}

    def fingerprint(self) -> str:
        return stable_hash(self.fingerprint_payload())
