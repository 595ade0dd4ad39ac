"""Training data from the harness itself.

The same reader, task classes and protocol as evaluation build every example: the train split
of the chosen configs, the task's own prompt for the perceived geometry of the *target* model,
the messages in the order that model is evaluated in (``image_first``), and the target written
as the paper wrote it (3 decimals, comma-separated; inside ``<answer>`` tags under
``--protocol corrected``). Images are rendered by the protocol's renderer and cached as PNG.

Mixing follows the paper's multi-task script: per family a seeded shuffle of the pooled
train samples, the first ``val[family]`` go to validation and the next ``limit[family]`` to
training (paper: 11,000 detection / 5,500 T/L / 5,500 A/D; validation 105 / 45 / 50); the
families are then interleaved by a seeded shuffle. Everything is deterministic given the seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvision_eval.models.base import ModelAdapter, PerceivedGeometry
from medvision_eval.schema import ImagePart, Message, Sample, TextPart, arrange_messages, stable_hash

PAPER_TRAIN_LIMITS = {"detection": 11000, "tl_size": 5500, "ad_measure": 5500}
PAPER_VAL_LIMITS = {"detection": 105, "tl_size": 45, "ad_measure": 50}
DATA_FORMAT = "medvision-sft-data/1"


class DataBuildError(ValueError):
    """The training data cannot be built (no samples, unknown task, unreadable data)."""


@dataclass
class DataSpec:
    tasks: list[str]  # task specs as --tasks takes them: "tl_size", "detection:paper", "ad_measure:Ceph-Bio-400"
    protocol: str = "paper"
    image_first: bool = False
    seed: int = 1024
    decimals: int = 3
    limits: dict[str, int] = field(default_factory=dict)  # family -> max train examples (missing: all)
    val: dict[str, int] = field(default_factory=dict)  # family -> validation examples (missing: 0)
    system_prompt: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "protocol": self.protocol, "image_first": self.image_first, "seed": self.seed,
                "decimals": self.decimals, "limits": self.limits, "val": self.val, "system_prompt": self.system_prompt}


@dataclass
class BuiltData:
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    configs: list[str]
    fingerprint: str
    per_task: dict[str, dict[str, int]]
    skipped: list[str]


def parse_limits(text: str | None, families: Sequence[str], *, what: str) -> dict[str, int]:
    """``"800"`` (every family) or ``"detection=11000,tl_size=5500"`` -> {family: n}."""
    if text is None or text == "":
        return {}
    text = text.strip()
    if text.isdigit():
        return {f: int(text) for f in families}
    out: dict[str, int] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip().isdigit():
            raise DataBuildError(f"{what}: {item!r} is not family=N (e.g. detection=11000,tl_size=5500)")
        if families and key not in families:
            raise DataBuildError(f"{what}: unknown task family {key!r}; known: {', '.join(families)}")
        out[key] = int(value)
    return out


def answer_text(task: Any, sample: Sample, decimals: int) -> str:
    """The target as the paper's SFT data wrote it: comma-separated values, ``decimals`` places."""
    spec = task.answer_spec(sample)
    truth = getattr(spec, "truth", None)  # older AnswerSpec carried derived targets; now Task.true_values
    values = truth if truth is not None else task.true_values(sample)
    return spec.model_copy(update={"decimals": decimals}).render(list(values))


def chat_messages(messages: Sequence[Message], answer: str, system_prompt: str | None) -> list[dict[str, Any]]:
    """Role/content dicts for the chat template: image parts as ``{"type": "image"}`` placeholders."""
    out: list[dict[str, Any]] = []
    if system_prompt and not any(m.role == "system" for m in messages):
        out.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    for m in messages:
        content = [{"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
                   for p in m.content]
        out.append({"role": m.role, "content": content})
    out.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return out


def image_cache_name(root: Path, sample: Sample, render: str) -> str:
    key = f"{root.resolve()}|{sample.image.key()}|{render}"
    return hashlib.sha256(key.encode()).hexdigest()[:24] + ".png"


def build_data(spec: DataSpec, adapter: ModelAdapter, data: Any, registry: Any, image_dir: Path,
               progress: Any = None) -> BuiltData:
    """Examples for ``spec``: dicts with id, task, config, messages (chat dicts), answer, image (PNG path)."""
    from medvision_eval.protocol import get_protocol
    from medvision_eval.runner import RunError, build_task, parse_task_spec

    protocol = get_protocol(spec.protocol)
    pools: dict[str, list[tuple[Any, Sample]]] = {}
    configs: list[str] = []
    for task_spec in spec.tasks:
        name, selector = parse_task_spec(task_spec)
        try:
            task = build_task(registry, name, protocol)
            chosen = task.configs(data.catalogue, selector)
        except (RunError, KeyError, ValueError) as exc:
            raise DataBuildError(f"--tasks {task_spec}: {exc}") from None
        for cfg in chosen:
            try:
                samples = data.samples(cfg, split="train")
            except Exception as exc:  # a config the data root does not hold
                raise DataBuildError(f"--tasks {task_spec}: train split of {cfg.name}: {exc}") from None
            if cfg.name not in configs:
                configs.append(cfg.name)
            pool = pools.setdefault(name, [])
            seen = {s.id for _, s in pool}
            pool.extend((task, s) for s in samples if task.keep(s) and s.id not in seen)
    if not any(pools.values()):
        raise DataBuildError(f"no train samples for --tasks {','.join(spec.tasks)} in {data.root}")

    rng = np.random.default_rng(spec.seed)
    chosen_train: list[tuple[Any, Sample]] = []
    chosen_val: list[tuple[Any, Sample]] = []
    per_task: dict[str, dict[str, int]] = {}
    for family in sorted(pools):
        pool = sorted(pools[family], key=lambda ts: ts[1].id)
        order = rng.permutation(len(pool))
        n_val = min(spec.val.get(family, 0), len(pool))
        val_idx = order[:n_val]
        rest = order[n_val:]
        limit = spec.limits.get(family)
        train_idx = rest if limit is None else rest[:limit]
        chosen_val += [pool[i] for i in val_idx]
        chosen_train += [pool[i] for i in train_idx]
        per_task[family] = {"pool": len(pool), "train": len(train_idx), "val": n_val}
    chosen_train = [chosen_train[i] for i in rng.permutation(len(chosen_train))]

    image_dir.mkdir(parents=True, exist_ok=True)
    geometry: dict[tuple[int, int], PerceivedGeometry] = {}
    skipped: list[str] = []
    rendered: dict[str, str] = {}
    todo = [s for _, s in chosen_train + chosen_val]
    # Render (grouped by volume so each volume is decoded once), or reuse the cached PNG.
    missing = [s for s in todo if not (image_dir / image_cache_name(data.root, s, protocol.render)).is_file()]
    if missing:
        for done, (sample, image) in enumerate(data.images(missing, protocol.render), 1):
            if isinstance(image, Exception):
                skipped.append(f"error: sample {sample.id}: {image}")
                continue
            path = image_dir / image_cache_name(data.root, sample, protocol.render)
            tmp = path.with_suffix(".tmp.png")
            image.save(tmp, format="PNG")
            tmp.replace(path)
            if progress:
                progress(done, len(missing))
    for s in todo:
        path = image_dir / image_cache_name(data.root, s, protocol.render)
        if path.is_file():
            rendered[s.id] = str(path)

    def example(task: Any, sample: Sample) -> dict[str, Any] | None:
        if sample.id not in rendered:
            return None
        size = tuple(sample.image_size)
        if size not in geometry:
            geometry[size] = adapter.perceived_geometry(*size)
        messages = arrange_messages(task.messages(sample, geometry[size]), spec.image_first)
        answer = answer_text(task, sample, spec.decimals)
        n_images = sum(isinstance(p, ImagePart) for m in messages for p in m.content)
        if n_images != 1:
            skipped.append(f"error: sample {sample.id}: {n_images} images in its messages; training takes one")
            return None
        return {"id": sample.id, "task": task.name, "config": sample.config,
                "messages": json.dumps(chat_messages(messages, answer, spec.system_prompt)),
                "answer": answer, "image": rendered[sample.id], "image_key": sample.image.key()}

    train = [e for e in (example(t, s) for t, s in chosen_train) if e is not None]
    val = [e for e in (example(t, s) for t, s in chosen_val) if e is not None]
    if not train:
        raise DataBuildError("every train sample failed to render; see the errors above")
    payload = [[e["id"], e["messages"], e["image_key"]] for e in train] + [["val", e["id"]] for e in val]
    fingerprint = stable_hash({"format": DATA_FORMAT, "examples": payload, "render": protocol.render})
    return BuiltData(train=train, val=val, configs=configs, fingerprint=fingerprint, per_task=per_task,
                     skipped=skipped)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
