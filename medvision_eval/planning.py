"""The planner: which samples a run asks, with which messages, under which cache keys.

Planning reads annotations only (no voxels). Its output, a :class:`Plan`, is everything the
executor needs: per task, the samples in dataset order, their messages (image parts carry a
``ref`` only) and their cache keys.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .config import RunConfig, parse_task_spec
from .errors import RunError
from .protocol import Protocol
from .schema import (AnswerSpec, ImagePart, ImageRef, Message, PerceivedGeometry, Sample, TextPart, arrange_messages, built,
                     stable_hash)
from .store import PlanEntry, cache_key_function
from .tasks.base import Task


def in_shard(sample_id: str, index: int, count: int) -> bool:
    """Deterministic split by sample id: independent of order, batch size and machine."""
    if count == 1:
        return True
    digest = hashlib.sha256(sample_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


class PlannedRequest:
    """What the executor turns into a :class:`~medvision_eval.schema.Request` for one sample.

    ``answer`` (the task's :class:`AnswerSpec` for the sample) is built when first asked for: a
    sample whose answer is already stored never needs it. So are the ``messages`` of a request the
    planner made from its prompt text and image reference (``parts``: the one user message of
    :meth:`Task.messages <medvision_eval.tasks.base.Task.messages>`), built once, when first sent."""

    __slots__ = ("sample", "_messages", "_parts", "_task", "_answer")

    def __init__(self, sample: Sample, messages: list[Message] | None = None, answer: AnswerSpec | None = None, *,
                 task: Any = None, parts: tuple[str, str, bool] | None = None) -> None:
        if answer is None and task is None:
            raise TypeError("PlannedRequest needs an answer spec or the task that makes it")
        if messages is None and parts is None:
            raise TypeError("PlannedRequest needs messages or the (text, image ref, image first) they are made of")
        self.sample = sample
        self._messages = messages
        self._parts = parts
        self._task = task
        self._answer = answer

    @property
    def messages(self) -> list[Message]:
        if self._messages is None:
            self._messages = user_message(*self._parts)
        return self._messages

    @property
    def answer(self) -> AnswerSpec:
        if self._answer is None:
            self._answer = self._task.answer_spec(self.sample)
        return self._answer


_new_request = object.__new__


def _request(sample: Sample, task: Any, parts: tuple[str, str, bool]) -> PlannedRequest:
    """``PlannedRequest(sample, task=task, parts=parts)`` (both given, so nothing to check)."""
    request = _new_request(PlannedRequest)
    request.sample, request._messages, request._parts, request._task, request._answer = sample, None, parts, task, None
    return request


def user_message(text: str, ref: str, image_first: bool) -> list[Message]:
    """``arrange_messages(Task.messages(...), image_first)`` of a task that keeps the default
    :meth:`~medvision_eval.tasks.base.Task.messages`: one user message of the prompt and the image."""
    content = [ImagePart(ref=ref), TextPart(text=text)] if image_first else [TextPart(text=text), ImagePart(ref=ref)]
    return [Message(role="user", content=content)]


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
    """Plan every ``--tasks`` spec of ``config``; ``tasks`` maps family name -> built task.

    The cyclic garbage collector is paused meanwhile: planning allocates tens of thousands of
    long-lived, acyclic records, and each full collection would walk all of them again (a third of
    the planning time at paper scale)."""
    with gc_paused():
        return _build_plan(config, tasks, data, adapter)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting frees as always), restoring its state.

    On the way out, what was allocated meanwhile joins the oldest generation directly
    (``gc.freeze()`` + ``gc.unfreeze()``, two list splices): a plan lives for the whole run, so
    the collector's first young-generation pass would only walk all of it once more to find it
    alive. Unreachable cycles are still found, by the next full collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


def _build_plan(config: RunConfig, tasks: dict[str, Any], data: Any, adapter: Any) -> Plan:
    identity = adapter.identity()
    generation = adapter.generation_settings().model_dump()
    geometries: dict[tuple[int, int], PerceivedGeometry] = {}
    planned: dict[str, PlannedTask] = {}
    seen: dict[str, set[str]] = {}  # task name -> the sample ids planned for it
    order = 0
    image_first = getattr(adapter, "image_first", False)
    texts: dict[str, tuple[str, Any]] = {}  # prompt text -> its canonical JSON and hash state (_user_prompt)
    for spec in config.tasks:
        name, selector = parse_task_spec(spec)
        task = tasks[name]
        fingerprint = task.fingerprint()
        try:
            configs = task.configs(data.catalogue, selector)
        except (KeyError, ValueError) as exc:
            raise RunError(f"--tasks {spec}: {exc}") from exc
        item = planned.setdefault(name, PlannedTask(name=name, task=task))
        planned_ids = seen.setdefault(name, set())
        entries, requests = item.entries, item.requests
        key_of = cache_key_function(identity, fingerprint, generation)
        input_hw = getattr(adapter, "input_hw", None)
        # a task with the default messages (one user message: prompt text, then the image): its
        # stored prompt and canonical JSON come from two strings, and its Message objects are
        # built only for the samples the executor sends
        default_messages = type(task).messages is Task.messages
        prompt_text, image_ref, keep = task.prompt, task.protocol.image_ref, task.keep
        inputs_of = prompt_inputs(task)  # built-in prompts: their text once per distinct inputs
        prompt_memo: dict[tuple, str] = {}
        render = _plain_render(task.protocol)  # built-in image refs: written here, as image_ref writes them
        last_image, last_ref = None, ""
        keeps_all = _keeps_all(task)  # the built-in filter keeping every sample: not asked per sample
        for bench_config in configs:
            if input_hw and not bench_config.reshape_hw:  # the model's official reshape_image_hw
                bench_config = bench_config.model_copy(update={"reshape_hw": tuple(input_hw)})
            for sample in _selected(data.samples(bench_config, split="test"), config):
                sid = sample.id
                if not (keeps_all or keep(sample)) or sid in planned_ids:
                    continue
                planned_ids.add(sid)
                order += 1
                if config.shard and not in_shard(sid, *config.shard):
                    continue
                size = sample.image_size
                geometry = geometries.get(size)
                if geometry is None:
                    geometry = geometries[tuple(size)] = adapter.perceived_geometry(*size)
                parts = None
                if default_messages:
                    memo = inputs_of(sample, geometry) if inputs_of is not None else None
                    text = prompt_memo.get(memo) if memo is not None else None
                    if text is None:
                        text = prompt_text(sample, geometry)
                        if memo is not None and type(text) is str:
                            prompt_memo[memo] = text
                    image = sample.image
                    if image is last_image:  # the samples of one slice share its reference
                        ref = last_ref
                    elif render is not None and type(image) is ImageRef:
                        last_image = image
                        ref = last_ref = f"{image.path}#{image.slice_axis}:{image.slice_index}|{render}"
                    else:
                        last_image = None
                        ref = image_ref(sample)
                    if type(text) is str and type(ref) is str:
                        parts = (text, ref, image_first)
                if parts is not None:
                    prompt, prompt_hash = _user_prompt(text, ref, image_first, texts)
                    request = _request(sample, task, parts)
                else:  # a task's own messages (or a prompt that validation must check)
                    messages = arrange_messages(task.messages(sample, geometry), image_first)
                    prompt, prompt_hash = prompt_of(messages)  # stored: view/debugging need no re-planning
                    request = PlannedRequest(sample, messages, task=task)
                key = key_of(sid, prompt_hash)
                # every field is already of its type (the sample validated, the prompt a model dump)
                entries.append(built(PlanEntry, {"task": name, "key": key, "prompt_hash": prompt_hash, "order": order,
                                                 "sample": sample, "prompt": prompt}))
                requests[key] = request
    return Plan(list(planned.values()))


def prompt_inputs(task: Any) -> Callable[[Sample, PerceivedGeometry], tuple | None] | None:
    """For a built-in task whose ``prompt(sample, geometry)`` is a pure function of a few fields of
    the sample (and the geometry), the function giving those fields as a dict key, else None.

    Planning asks each distinct key's prompt once: the 19,000 detection samples of a paper run have
    a few dozen distinct prompts (one per dataset description and label). A key is given only for
    values whose equality means equal text (exact ``str``; spacings of exact non-zero ``float``s,
    as ``0.0 == -0.0`` but they print differently); anything else (None) is asked as before."""
    from .tasks.detection import DetectionTask
    from .tasks.tl_size import TumorLesionSizeTask

    cls = type(task)
    if type(getattr(task, "protocol", None)) is not Protocol:
        return None
    if cls.prompt is DetectionTask.prompt:
        return _detection_inputs
    if cls.prompt is TumorLesionSizeTask.prompt and cls.unit_of is TumorLesionSizeTask.unit_of:
        return _tl_inputs
    return None


def _detection_inputs(sample: Sample, geometry: Any) -> tuple | None:
    """``DetectionTask.prompt`` reads the sample's description and label."""
    description, label = sample.image_description, sample.label
    if type(description) is str and type(label) is str:
        return description, label
    return None


def _tl_inputs(sample: Sample, geometry: Any) -> tuple | None:
    """``TumorLesionSizeTask.prompt`` reads the description, the label, the unit (``unit_of``: the
    sample's ``extra["unit"]``, else its target's unit), the pixel spacing and the geometry."""
    description, label, spacing = sample.image_description, sample.label, sample.pixel_spacing
    unit = sample.extra.get("unit")
    if not (type(description) is str and type(label) is str and (unit is None or type(unit) is str)
            and type(spacing) is tuple and len(spacing) == 2):
        return None
    pw, ph = spacing
    if type(pw) is not float or type(ph) is not float or not pw or not ph:
        return None
    target_unit = sample.target.unit
    if type(target_unit) is not str:
        return None
    return description, label, unit, target_unit, pw, ph, id(geometry)


def _keeps_all(task: Any) -> bool:
    """Whether ``task.keep`` is the built-in :meth:`Task.keep` of a plain :class:`Protocol` that
    keeps every sample (no near-zero angle filter): then it need not be asked per sample."""
    protocol = getattr(task, "protocol", None)
    return type(task).keep is Task.keep and type(protocol) is Protocol and protocol.near_zero_angle is None


def _plain_render(protocol: Any) -> str | None:
    """The renderer name that :meth:`Protocol.image_ref` appends, when ``protocol`` is a
    :class:`~medvision_eval.protocol.Protocol` itself (not a subclass that may word it otherwise)."""
    if type(protocol) is Protocol and type(protocol.render) is str:
        return protocol.render
    return None




def _user_prompt(text: str, ref: str, image_first: bool, texts: dict[str, tuple[str, Any]] | None = None
                 ) -> tuple[list[dict[str, Any]], str]:
    """:func:`prompt_of` of :func:`user_message` ``(text, ref, image_first)``, without building it.
    ``texts`` keeps, per prompt text seen (a config's samples share a few), its canonical JSON and
    the SHA-256 state after the canonical text up to it (text first: only the image part and the
    closing brackets are hashed per sample)."""
    text_part = {"type": "text", "text": text}
    image_part = {"type": "image", "ref": ref}
    known = texts.get(text) if texts is not None else None
    if known is None:
        text_json = '{"text":' + _quote(text) + ',"type":"text"}'
        known = (text_json, hashlib.sha256(('[{"content":[' + text_json + ",").encode()))
        if texts is not None:
            texts[text] = known
    text_json, head = known
    image_json = '{"ref":' + _quote(ref) + ',"type":"image"}'
    if image_first:
        content = [image_part, text_part]
        digest = hashlib.sha256(('[{"content":[' + image_json + "," + text_json + '],"role":"user"}]').encode())
    else:
        content = [text_part, image_part]
        digest = head.copy()
        digest.update((image_json + '],"role":"user"}]').encode())
    return [{"role": "user", "content": content}], digest.hexdigest()[:16]


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
