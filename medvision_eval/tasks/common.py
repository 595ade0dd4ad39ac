"""What the three built-in families share: config selection, protocol-dispatched parsing,
parse statistics, id-sorted views, and the fingerprint payload with the exact templates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..metric_names import canonical
from ..schema import ImagePart, Message, ParseStatus, Prediction, Sample, TextPart
from . import prompts
from .base import Task
from .metrics import prediction_matrix, value_scores
from .parsing import StrictRules, parse_last_k, parse_strict

if TYPE_CHECKING:  # pragma: no cover
    from ..data.catalogue import BenchmarkConfig, Catalogue
    from ..schema import PerceivedGeometry


def vocabulary(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-sample metric arrays under the names of :mod:`medvision_eval.metric_names`."""
    return {canonical(name): values for name, values in scores.items()}


class FamilyTask(Task):
    """Base of ``detection``, ``tl_size`` and ``ad_measure``."""

    k: ClassVar[int]

    def configs(self, catalogue: Catalogue, selector: str | None) -> list[BenchmarkConfig]:
        return catalogue.configs(self.name, selector)

    # -- prompting --------------------------------------------------------------------------
    def prompt(self, sample: Sample, geometry: PerceivedGeometry) -> str:
        raise NotImplementedError

    def messages(self, sample: Sample, geometry: PerceivedGeometry) -> list[Message]:
        """One user message, text before image (as the v1 vLLM wrappers sent it)."""
        ref = f"{sample.image.key()}|{self.protocol.render}"
        return [Message(role="user", content=[TextPart(text=self.prompt(sample, geometry)), ImagePart(ref=ref)])]

    # -- parsing ---------------------------------------------------------------------------
    def strict_rules(self) -> StrictRules:
        raise NotImplementedError

    def strict_rules_for(self, sample: Sample) -> StrictRules:
        """Strict-parser rules for one sample (a family whose unit varies per sample overrides)."""
        return self.strict_rules()

    def parse(self, text: str | None) -> Prediction:
        return self._parse(text, self.strict_rules)

    def parse_for(self, sample: Sample, text: str | None) -> Prediction:
        return self._parse(text, lambda: self.strict_rules_for(sample))

    def _parse(self, text: str | None, rules) -> Prediction:
        try:
            if self.protocol.parser == "strict":
                return parse_strict(text, rules())
            return parse_last_k(text, self.k)
        except Exception as exc:  # pragma: no cover - the parsers do not raise; never crash a run
            return Prediction(status=ParseStatus.malformed, detail=f"parser error: {exc!r}")

    def answer_template(self) -> str:
        return "<answer>{values}</answer>" if self.protocol.answer_tags else "{values}"

    # -- helpers for score/aggregate ---------------------------------------------------------
    @staticmethod
    def parse_stats(predictions: Sequence[Prediction]) -> dict[str, int]:
        counts = Counter(p.status.value for p in predictions)
        return {status.value: int(counts.get(status.value, 0)) for status in ParseStatus}

    @classmethod
    def sorted_by_id(
        cls, samples: Sequence[Sample], scores: dict[str, np.ndarray]
    ) -> tuple[list[Sample], dict[str, np.ndarray]]:
        """Samples and per-sample scores in id order, so aggregation never depends on input order."""
        order = cls.id_order(samples)
        return [samples[i] for i in order], {k: np.asarray(v, dtype=np.float64)[order] for k, v in scores.items()}

    @staticmethod
    def id_order(samples: Sequence[Sample]) -> np.ndarray:
        """Indices that sort samples by id: aggregation never depends on input order."""
        return np.array(sorted(range(len(samples)), key=lambda i: samples[i].id), dtype=np.int64)

    def targets(self, samples: Sequence[Sample], k: int) -> np.ndarray:
        out = np.full((len(samples), k), np.nan)
        for i, s in enumerate(samples):
            vals = self.true_values(s)
            out[i, : min(k, len(vals))] = vals[:k]
        return out

    def true_values(self, sample: Sample) -> tuple[float, ...]:
        """The values a sample is scored against: the dataset's (float16 for T/L and A/D, as v1
        scored them), or the plan's full precision under ``full_precision_targets``."""
        plan = sample.extra.get("plan_values")
        if self.protocol.full_precision_targets and plan:
            return tuple(float(v) for v in plan)
        return tuple(sample.target.values)

    def fingerprint_payload(self) -> dict[str, Any]:
        payload = super().fingerprint_payload()
        payload["templates"] = dict(sorted(prompts.ALL_TEMPLATES.items()))
        payload["answer_template"] = self.answer_template()
        return payload


class MeasurementTask(FamilyTask):
    """Base of the families answering k values in physical units (``tl_size``, ``ad_measure``)."""

    def score(self, samples: Sequence[Sample], predictions: Sequence[Prediction]) -> dict[str, np.ndarray]:
        pred, ok = prediction_matrix(predictions, self.k)
        return vocabulary(value_scores(pred, ok, self.targets(samples, self.k)))
