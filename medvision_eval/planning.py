"""The planner: which samples a run asks, with which messages, under which cache keys.

Planning reads annotations only (no voxels). Its output, a :class:`Plan`, is everything the
executor needs: per task, the samples in dataset order, their messages (image parts carry a
``ref`` only) and their cache keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import RunConfig, parse_task_spec
from .errors import RunError
from .schema import (AnswerSpec, ImagePart, Message, PerceivedGeometry, Sample, TextPart, arrange_messages,
                     stable_hash)
from .store import PlanEntry, cache_key_function


def in_shard(sample_id: str, index: int, count: int) -> bool:
    """Deterministic split by sample id: independent of order, batch size and machine."""
    if count == 1:
        return True
    digest = hashlib.sha256(sample_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


class PlannedRequest:
    """What the executor turns into a :class:`~medvision_eval.schema.Request` for one sample.

    ``answer`` (the task's :class:`AnswerSpec` for the sample) is built when first asked for: a
    sample whose answer is already stored never needs it."""

    __slots__ = ("sample", "messages", "_task", "_answer")

    def __init__(self, sample: Sample, messages: list[Message], answer: AnswerSpec | None = None, *,
                 task: Any = None) -> None:
        if answer is None and task is None:
            raise TypeError("PlannedRequest needs an answer spec or the task that makes it")
        self.sample = sample
        self.messages = messages
        self._task = task
        self._answer = answer

    @property
    def answer(self) -> AnswerSpec:
        if self._answer is None:
            self._answer = self._task.answer_spec(self.sample)
        return self._answer


@dataclass
class PlannedTask:
    name: str
    task: Any  # tasks.base.Task
    entries: list[PlanEntry] = field(default_factory=list)
    requests: dict[str, PlannedRequest] = field(default_factory=dict)  # cache key -> request


@dataclass
class Plan:
    tasks: list[PlannedTask]

    @property
    def entries(self) -> list[PlanEntry]:
        return [e for t in self.tasks for e in t.entries]

    def __len__(self) -> int:
        return sum(len(t.entries) for t in self.tasks)


def build_plan(config: RunConfig, tasks: dict[str, Any], data: Any, adapter: Any) -> Plan:
    """Plan every ``--tasks`` spec of ``config``; ``tasks`` maps family name -> built task."""
    identity = adapter.identity()
    generation = adapter.generation_settings().model_dump()
    geometries: dict[tuple[int, int], PerceivedGeometry] = {}
    planned: dict[str, PlannedTask] = {}
    seen: set[tuple[str, str]] = set()
    order = 0
    image_first = getattr(adapter, "image_first", False)
    for spec in config.tasks:
        name, selector = parse_task_spec(spec)
        task = tasks[name]
        fingerprint = task.fingerprint()
        try:
            configs = task.configs(data.catalogue, selector)
        except (KeyError, ValueError) as exc:
            raise RunError(f"--tasks {spec}: {exc}") from exc
        item = planned.setdefault(name, PlannedTask(name=name, task=task))
        key_of = cache_key_function(identity, fingerprint, generation)
        input_hw = getattr(adapter, "input_hw", None)
        for bench_config in configs:
            if input_hw and not bench_config.reshape_hw:  # the model's official reshape_image_hw
                bench_config = bench_config.model_copy(update={"reshape_hw": tuple(input_hw)})
            for sample in _selected(data.samples(bench_config, split="test"), config):
                if not task.keep(sample) or (name, sample.id) in seen:
                    continue
                seen.add((name, sample.id))
                order += 1
                if config.shard and not in_shard(sample.id, *config.shard):
                    continue
                size = tuple(sample.image_size)
                if size not in geometries:
                    geometries[size] = adapter.perceived_geometry(*size)
                messages = arrange_messages(task.messages(sample, geometries[size]), image_first)
                prompt, prompt_hash = prompt_of(messages)  # stored: view/debugging need no re-planning
                key = key_of(sample.id, prompt_hash)
                # every field is already of its type (the sample validated, the prompt a model dump)
                item.entries.append(PlanEntry.model_construct(task=name, key=key, prompt_hash=prompt_hash, order=order,
                                                              sample=sample, prompt=prompt))
                item.requests[key] = PlannedRequest(sample, messages, task=task)
    return Plan(list(planned.values()))


_quote = json.encoder.encode_basestring_ascii  # json.dumps of a str


def prompt_of(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], str]:
    """The stored prompt (each ``message.model_dump(mode="json")``) and its :func:`stable_hash`.

    Messages of the built-in part types are dumped directly, and their canonical JSON text (keys
    sorted, compact, ASCII: what ``stable_hash`` hashes) is written without a generic encoder;
    anything else goes through pydantic and ``stable_hash``."""
    prompt: list[dict[str, Any]] = []
    canonical: list[str] = []
    for message in messages:
        if type(message) is not Message or type(message.role) is not str:
            break
        content, texts = [], []
        for part in message.content:
            kind = part.type
            if type(part) is TextPart and type(part.text) is str and type(kind) is str:
                content.append({"type": kind, "text": part.text})
                texts.append('{"text":' + _quote(part.text) + ',"type":' + _quote(kind) + "}")
            elif type(part) is ImagePart and type(part.ref) is str and type(kind) is str:
                content.append({"type": kind, "ref": part.ref})
                texts.append('{"ref":' + _quote(part.ref) + ',"type":' + _quote(kind) + "}")
            else:
                break
        else:
            prompt.append({"role": message.role, "content": content})
            canonical.append('{"content":[' + ",".join(texts) + '],"role":' + _quote(message.role) + "}")
            continue
        break
    else:
        text = "[" + ",".join(canonical) + "]"
        return prompt, hashlib.sha256(text.encode()).hexdigest()[:16]
    prompt = [m.model_dump(mode="json") for m in messages]  # a plugin's own message or part type
    return prompt, stable_hash(prompt)


def _selected(samples: Sequence[Sample], config: RunConfig) -> Sequence[Sample]:
    """``--limit N``: the first N samples of a config in dataset order, as the paper did;
    ``--limit 0.1``: the first ceil(0.1 * n) of its n samples, as lmms-eval."""
    return samples if config.limit is None else samples[: config.limit_for(len(samples))]
