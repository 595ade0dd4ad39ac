"""A task family from outside medvision-eval, readable top to bottom.

``tl_area`` asks for the area (mm²) of the tumour/lesion ellipse on the same slices as
``tl_size``: the target is pi/4 x major x minor of the official annotation. It reuses the
public pieces of medvision-eval (catalogue selection, the pixel-size statement, the v1 parser,
bootstrap intervals) and owns its prompt, metric and aggregation.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from medvision_eval.schema import AnswerSpec, ImagePart, Message, ParseStatus, TextPart
from medvision_eval.stats import mean_intervals
from medvision_eval.tasks.base import Task, TaskResult
from medvision_eval.tasks.parsing import parse_last_k
from medvision_eval.tasks.prompts import size_statement

PROMPT = (
    "Task:\nGiven the input medical image: {desc}, estimate the area of the ellipse enclosing the {label}, "
    "in square millimeters.\nAdditional information:\n{size}\nFormat requirement:\n"
    "The answer should be a single decimal number without any units or additional text."
)


def area_mm2(sample) -> float:
    major, minor = sample.target.values[:2]
    return math.pi / 4.0 * major * minor


class LesionAreaTask(Task):
    name = "tl_area"
    prompt_version = "1"
    description = "Area of the tumour/lesion ellipse in mm^2 (example plugin)."

    def configs(self, catalogue, selector):
        return catalogue.configs("tl_size", selector)  # the same slices as tl_size

    def messages(self, sample, geometry):
        size = size_statement(self.protocol, sample.pixel_spacing, geometry, "mm")
        text = PROMPT.format(desc=sample.image_description, label=sample.label, size=size)
        ref = f"{sample.image.key()}|{self.protocol.render}"
        return [Message(role="user", content=[TextPart(text=text), ImagePart(ref=ref)])]

    def answer_spec(self, sample):
        w, h = sample.image_size
        sx, sy = sample.pixel_spacing
        return AnswerSpec(k=1, names=("area",), unit="mm2", low=0.0, high=w * sx * h * sy, decimals=2,
                          truth=self.true_values(sample))

    def true_values(self, sample):
        return (area_mm2(sample),)

    def parse(self, text):
        return parse_last_k(text, 1)

    def score(self, samples, predictions):
        target = np.array([self.true_values(s)[0] for s in samples], dtype=float)
        pred = np.array([p.values[0] if p.status == ParseStatus.ok else np.nan for p in predictions], dtype=float)
        return {"AE": np.abs(pred - target), "RE": np.abs(pred - target) / (target + 1e-15),
                "SR": (~np.isnan(pred)).astype(float)}

    def aggregate(self, samples, predictions, scores, *, seed=0):
        order = sorted(range(len(samples)), key=lambda i: samples[i].id)  # order-independent
        per = {"all/MAE": scores["AE"][order], "all/MRE": scores["RE"][order], "all/SR": scores["SR"][order]}
        counts = Counter(p.status.value for p in predictions)
        return TaskResult(
            task=self.name,
            protocol=self.protocol.name,
            fingerprint=self.fingerprint(),
            n_samples=len(samples),
            parse_stats={s.value: counts.get(s.value, 0) for s in ParseStatus},
            metrics=mean_intervals(per, seed=seed),
            notes=["MAE/MRE over parsed answers; SR over all samples."],
        )

    def fingerprint_payload(self):
        return super().fingerprint_payload() | {"prompt": PROMPT}
