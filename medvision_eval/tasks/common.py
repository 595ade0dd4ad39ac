"""What the three built-in families share: the metric vocabulary of their per-sample scores and
the fingerprint payload with the exact prompt templates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metric_names import canonical
from ..schema import Prediction, Sample
from . import prompts
from .base import Task
from .metrics import prediction_matrix, value_scores


def vocabulary(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-sample metric arrays under the names of :mod:`medvision_eval.metric_names`."""
    return {canonical(name): values for name, values in scores.items()}


class FamilyTask(Task):
    """Base of ``detection``, ``tl_size`` and ``ad_measure``: fingerprints cover every template."""

    prompt_version = "v1.0"

    def fingerprint_payload(self) -> dict[str, Any]:
        payload = super().fingerprint_payload()
        payload["templates"] = dict(sorted(prompts.ALL_TEMPLATES.items()))
        payload["answer_template"] = self.protocol.answer_template()
        return payload


class MeasurementTask(FamilyTask):
    """Base of the families answering k values in physical units (``tl_size``, ``ad_measure``)."""

    def score(self, samples: Sequence[Sample], predictions: Sequence[Prediction]) -> dict[str, np.ndarray]:
        return measurement_scores(self, samples, predictions)

    def score_matrix(self, pred: np.ndarray, ok: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        """Per-sample metrics from the (n, k) parsed values, the ok mask and the (n, k) targets."""
        return vocabulary(value_scores(pred, ok, targets))


def measurement_scores(task: Task, samples: Sequence[Sample], predictions: Sequence[Prediction]) -> dict[str, np.ndarray]:
    """Per-sample ``MAE``, ``MRE``, ``MAE_cov``, ``MRE_cov``, ``SR`` over the task's k values (v1 formulas)."""
    pred, ok = prediction_matrix(predictions, task.k)
    return vocabulary(value_scores(pred, ok, task.targets(samples, task.k)))
