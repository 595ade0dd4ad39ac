"""A toy task family and in-memory data source, to test the spine independently of the real tasks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from medvision_eval.hookspecs import ModelEntry, TaskEntry, hookimpl
from medvision_eval.models.base import ModelAdapter
from medvision_eval.schema import (
    ImagePart,
    ImageRef,
    Message,
    ParseStatus,
    Prediction,
    Response,
    Sample,
    Target,
    TextPart,
)
from medvision_eval.tasks.base import Task


@dataclass(frozen=True)
class ToyConfig:
    name: str
    task: str = "toy"
    dataset: str = "Toy"
    lists: tuple[str, ...] = ("paper",)


class ToyCatalogue:
    def __init__(self, configs: list[ToyConfig]) -> None:
        self._configs = configs

    def configs(self, task: str, selector: str | None) -> list[ToyConfig]:
        found = [c for c in self._configs if c.task == task and (selector is None or selector in c.name)]
        if not found:
            raise ValueError(f"no {task} config matches {selector!r}")
        return found

    def get(self, name: str) -> ToyConfig:
        return next(c for c in self._configs if c.name == name)

    def all(self) -> list[ToyConfig]:
        return list(self._configs)


@dataclass
class ToyData:
    n_per_config: int = 20
    root: str = "/toy"
    configs: tuple[str, ...] = ("ToyA", "ToyB")
    bad_ids: set[str] = field(default_factory=set)
    images_decoded: int = 0

    @property
    def catalogue(self) -> ToyCatalogue:
        return ToyCatalogue([ToyConfig(c) for c in self.configs])

    def samples(self, config: ToyConfig, split: str = "test") -> list[Sample]:
        out = []
        for i in range(self.n_per_config):
            value = 10.0 + i + (0.5 if split == "train" else 0.0)
            out.append(
                Sample(
                    id=f"{config.name}/{split}/{i:04d}",
                    task="toy",
                    config=config.name,
                    dataset=config.dataset,
                    split=split,
                    index=i,
                    image=ImageRef(path=f"{config.name}/vol{i // 5}.nii.gz", slice_axis=2, slice_index=i),
                    image_size=(32, 24),
                    pixel_spacing=(1.0, 1.0),
                    label="thing" if i % 2 else "other",
                    target=Target(values=(value,), unit="mm", names=("value",)),
                )
            )
        return out

    def image(self, sample: Sample, protocol) -> Image.Image:
        from medvision_eval.data import SampleDataError

        if sample.id in self.bad_ids:
            raise SampleDataError(f"{sample.image.path}: truncated gzip stream")
        self.images_decoded += 1
        return Image.fromarray(np.zeros((24, 32), np.uint8)).convert("RGB")


class ToyTask(Task):
    """A complete task on the base contract: prompt, parse, score; the base builds the result."""

    name = "toy"
    k, unit, answer_names = 1, "mm", ("value",)

    def messages(self, sample, geometry):
        text = f"How long is the {sample.label}? Image {geometry.canvas[0]}x{geometry.canvas[1]}."
        return [Message(role="user", content=[TextPart(text=text), ImagePart(ref=sample.image.key())])]

    def plausible_range(self, sample):
        return 0.0, 100.0

    def parse(self, text):
        nums = re.findall(r"-?\d+\.?\d*", text or "")
        if not nums:
            return Prediction(status=ParseStatus.missing)
        return Prediction(status=ParseStatus.ok, values=(float(nums[-1]),))

    def parse_for(self, sample, text):
        return self.parse(text)

    def score(self, samples: Sequence[Sample], predictions):
        target = np.array([s.target.values[0] for s in samples])
        pred = np.array([p.values[0] if p.status == ParseStatus.ok else np.nan for p in predictions])
        return {"MAE": np.abs(pred - target)}


class CountingModel(ModelAdapter):
    """Answers the target; counts calls; fails on chosen sample ids."""

    backend = "test"
    default_batch_size = 4
    uses_truth = True  # it answers the target: it declares so and gets the truth channel

    def __init__(self, fail_ids: set[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.fail_ids = fail_ids or set()
        self.calls: list[str] = []
        self.batch_sizes: list[int] = []

    def identity(self):
        return {"adapter": "toy:CountingModel", "args": {}}

    def prepare(self, context):
        self.truth = context.truth

    def generate(self, requests):
        self.batch_sizes.append(len(requests))
        out = []
        for r in requests:
            self.calls.append(r.sample_id)
            if r.sample_id in self.fail_ids:
                out.append(Response(error="HTTP 500 from server"))
            else:
                out.append(Response(text=f"The answer is {self.truth.values(r)[0]:.1f}"))
        return out


class ToyPlugin:
    @hookimpl
    def medvision_eval_tasks(self):
        return [TaskEntry(name="toy", target="toy:ToyTask", description="toy task")]

    @hookimpl
    def medvision_eval_models(self):
        return [ModelEntry(name="counting", target="toy:CountingModel", backend="test")]
