"""The predict step: plan the samples, send what is not answered yet, persist every answer.

A run is resumable by construction. Planning reads only annotation files (no voxels), so a
finished run re-plans in a fraction of its first wall time and sends nothing; an interrupted
one sends only what is missing. Samples are grouped by volume so each volume is decoded once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import __version__
from .models.base import ModelAdapter, PerceivedGeometry, RunContext
from .plugins import PluginError, Registry, installed, load_target
from .protocol import Protocol, get_protocol
from .schema import ImagePart, Request, Response, Sample, stable_hash
from .store import (
    RUN_CONFIG,
    PlanEntry,
    ResponseLog,
    ResponseRecord,
    cache_key,
    load_responses,
    write_json,
    write_plan,
)
from .tasks.base import Task


class RunError(Exception):
    """A run cannot start or cannot go on; the message says why and what to do."""


class _Abort(Exception):
    """The adapter gave up (failure threshold): carries the batch's partial responses."""

    def __init__(self, message: str, responses: list[Response | None]) -> None:
        super().__init__(message)
        self.message = message
        self.responses = responses


class RunConfig(BaseModel):
    """Everything a run depends on; written to ``run.json``."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str]
    model: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    data: str | None = None
    output: str | None = None
    limit: int | float | None = None  # N samples per config, or a fraction in (0, 1) of each (lmms-eval)
    batch_size: int | None = None
    protocol: str = "paper"
    seed: int = 0
    no_cache: bool = False
    shard: tuple[int, int] | None = None  # (index, count), index 0-based

    @field_validator("tasks")
    @classmethod
    def _tasks_nonempty(cls, value: list[str]) -> list[str]:
        cleaned = [t.strip() for t in value if t.strip()]
        if not cleaned:
            raise ValueError("no task given; e.g. --tasks detection,tl_size,ad_measure")
        return cleaned

    @field_validator("limit")
    @classmethod
    def _limit_positive(cls, value: int | float | None) -> int | float | None:
        if value is None:
            return None
        if 0 < value < 1:
            return float(value)
        if value < 1 or value != int(value):
            raise ValueError("--limit must be a whole number of samples >= 1 or a fraction between 0 and 1")
        return int(value)

    def limit_for(self, n: int) -> int:
        """How many of a config's ``n`` samples to take: the first N, or ceil(fraction * n) as lmms-eval."""
        if self.limit is None:
            return n
        if isinstance(self.limit, float) and self.limit < 1:
            import math

            return min(n, math.ceil(n * self.limit))
        return min(n, int(self.limit))

    @field_validator("shard")
    @classmethod
    def _shard_valid(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None:
            index, count = value
            if count < 1 or not 0 <= index < count:
                raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
        return value

    def output_dir(self) -> Path:
        if self.output:
            return Path(self.output)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)
        return Path("runs") / safe


def parse_task_spec(spec: str) -> tuple[str, str | None]:
    name, _, selector = spec.partition(":")
    return name.strip(), (selector.strip() or None)


def split_model_spec(registry: Registry, name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``backend:SUFFIX`` (e.g. ``lmms:qwen2_5_vl``) means model ``backend`` with its ``suffix_arg=SUFFIX``."""
    if name in registry.models or ":" not in name:
        return name, args
    prefix, _, rest = name.partition(":")
    if prefix in registry.models:
        entry = registry.model(prefix).entry
        if entry.suffix_arg is None:
            raise RunError(f"model {prefix!r} takes no ':' suffix (got {name!r})")
        return prefix, {entry.suffix_arg: rest, **args}
    return name, args


def build_adapter(registry: Registry, name: str, args: dict[str, Any]) -> ModelAdapter:
    name, args = split_model_spec(registry, name, args)
    provided = registry.model(name)
    entry = provided.entry
    if entry.unavailable:
        raise RunError(f"model {name!r} cannot run from {provided.provider}: {entry.unavailable}")
    if entry.requires and not installed(entry.requires):
        extra = f"pip install 'medvision-eval[{entry.extra}]'" if entry.extra else "install its backend"
        missing = ", ".join(entry.requires)
        raise RunError(f"model {name!r} needs {missing}, which is not installed here: {extra}")
    try:
        cls = load_target(entry.target)
    except PluginError as exc:
        raise RunError(f"model {name!r} ({provided.provider}): {exc}") from exc
    from .models.errors import BackendNotInstalledError

    merged = {**entry.defaults, **args}
    try:
        return cls(**merged)
    except BackendNotInstalledError as exc:
        raise RunError(f"model {name!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise RunError(f"model {name!r}: bad --model-args: {exc}") from exc


def build_task(registry: Registry, name: str, protocol: Protocol) -> Task:
    provided = registry.task(name)
    try:
        cls = load_target(provided.entry.target)
    except PluginError as exc:
        raise RunError(f"task {name!r} ({provided.provider}): {exc}") from exc
    return cls(protocol)


def in_shard(sample_id: str, index: int, count: int) -> bool:
    """Deterministic split by sample id: independent of order, batch size and machine."""
    if count == 1:
        return True
    digest = hashlib.sha256(sample_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under ``accelerate launch`` / ``torchrun``; (0, 1) otherwise."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


@dataclass
class PlannedTask:
    name: str
    task: Task
    entries: list[PlanEntry]
    requests: dict[str, Any] = field(default_factory=dict)  # key -> (sample, messages, answer spec)


@dataclass
class RunSummary:
    output: Path
    planned: int
    sent: int
    errors: int
    cached: int
    seconds: float
    per_task: dict[str, dict[str, int]]
    problems: list[str] = field(default_factory=list)  # data warnings and sample errors, by file


Progress = Callable[[str, int, int], None]  # (task, done, total)


class Runner:
    """Plans and executes the predict step of one run."""

    def __init__(
        self,
        config: RunConfig,
        *,
        registry: Registry | None = None,
        adapter: ModelAdapter | None = None,
        data: Any = None,
    ) -> None:
        self.config = config
        self.registry = registry or Registry.discover()
        self.protocol = get_protocol(config.protocol)
        self.output = config.output_dir()
        self.rank, self.world = distributed_rank()
        self._adapter = adapter
        self._data = data
        self._sample_errors: list[str] = []

    # -- setup --------------------------------------------------------------------------------
    @property
    def data(self) -> Any:
        if self._data is None:
            from .data import MedVisionData, default_data_dir

            root = Path(self.config.data) if self.config.data else default_data_dir()
            self._data = MedVisionData(root)
        return self._data

    @property
    def adapter(self) -> ModelAdapter:
        if self._adapter is None:
            self._adapter = build_adapter(self.registry, self.config.model, dict(self.config.model_args))
        return self._adapter

    def plan(self) -> list[PlannedTask]:
        adapter = self.adapter
        identity = adapter.identity()
        generation = adapter.generation_settings().model_dump()
        geometry_cache: dict[tuple[int, int], PerceivedGeometry] = {}
        planned: list[PlannedTask] = []
        seen_names: set[tuple[str, str]] = set()
        order = 0
        for spec in self.config.tasks:
            name, selector = parse_task_spec(spec)
            task = build_task(self.registry, name, self.protocol)
            fingerprint = task.fingerprint()
            try:
                configs = task.configs(self.data.catalogue, selector)
            except (KeyError, ValueError) as exc:
                raise RunError(f"--tasks {spec}: {exc}") from exc
            existing = next((p for p in planned if p.name == name), None)
            item = existing or PlannedTask(name=name, task=task, entries=[])
            for bench_config in configs:
                samples = self.data.samples(bench_config, split="test")
                if self.config.limit is not None:
                    samples = samples[: self.config.limit_for(len(samples))]
                for sample in samples:
                    if not task.keep(sample) or (name, sample.id) in seen_names:
                        continue
                    seen_names.add((name, sample.id))
                    order += 1
                    if self.config.shard and not in_shard(sample.id, *self.config.shard):
                        continue
                    size = tuple(sample.image_size)
                    geometry = geometry_cache.get(size)
                    if geometry is None:
                        geometry = geometry_cache[size] = adapter.perceived_geometry(*size)
                    messages = task.messages(sample, geometry)
                    prompt_hash = stable_hash([m.model_dump(mode="json") for m in messages])
                    key = cache_key(identity, fingerprint, sample.id, prompt_hash, generation)
                    item.entries.append(
                        PlanEntry(task=name, key=key, prompt_hash=prompt_hash, order=order, sample=sample)
                    )
                    item.requests[key] = (sample, messages, task.answer_spec(sample))
            if existing is None:
                planned.append(item)
        return planned

    def batch_size(self) -> int:
        """Requests per adapter call: --batch-size, else the adapter's own setting or default."""
        adapter = self.adapter
        return self.config.batch_size or int(getattr(adapter, "batch_size", 0) or adapter.default_batch_size)

    def run_record(self) -> dict[str, Any]:
        from .environment import environment_info

        adapter = self.adapter
        return {
            "medvision_eval_version": __version__,
            "config": self.config.model_dump(mode="json") | {"model_args": adapter.identity().get("args", {})},
            "data_root": str(self.data.root),
            "model_identity": adapter.identity(),
            "model_info": adapter.info(),
            "generation": adapter.generation_settings().model_dump(),
            "protocol": self.protocol.model_dump(),
            "batch_size": self.batch_size(),
            "backend": adapter.backend,
            "world_size": self.world,
            "environment": environment_info(),
        }

    # -- execution ------------------------------------------------------------------------------
    def execute(self, *, progress: Progress | None = None) -> RunSummary:
        start = time.perf_counter()
        planned = self.plan()
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / f".done.rank{self.rank}").unlink(missing_ok=True)
        if self.rank == 0:
            write_plan(self.output, [e for p in planned for e in p.entries])
            write_json(self.output / RUN_CONFIG, self.run_record())
        done = {} if self.config.no_cache else load_responses(self.output)
        adapter = self.adapter
        tasks = {p.name: p.task for p in planned}

        def truth(task_name: str, sample: Sample) -> tuple[float, ...]:
            return tasks[task_name].answer_spec(sample).truth or sample.target.values

        adapter.prepare(RunContext(train_samples=self._train_samples, truth=truth, seed=self.config.seed))
        batch_size = self.batch_size()
        generation = adapter.generation_settings()
        sent = errors = cached = 0
        per_task: dict[str, dict[str, int]] = {}
        log = ResponseLog(self.output, rank=self.rank)
        try:
            for item in planned:
                mine = [e for e in item.entries if self.world == 1 or in_shard(e.sample.id, self.rank, self.world)]
                todo = [e for e in mine if not (e.key in done and done[e.key].completed)]
                n_cached = len(mine) - len(todo)
                cached += n_cached
                stats = per_task.setdefault(item.name, {"planned": len(mine), "cached": n_cached, "sent": 0, "errors": 0})
                if progress:
                    progress(item.name, n_cached, len(mine))
                # group by volume, keep dataset order within a volume
                todo.sort(key=lambda e: e.sample.image.path)
                count = n_cached
                for start_i in range(0, len(todo), batch_size):
                    batch = todo[start_i : start_i + batch_size]
                    requests, ready, failed = self._materialise(item, batch, generation)
                    for entry, response in failed:
                        log.append(self._record(entry, response))
                        errors += 1
                        stats["errors"] += 1
                    if requests:
                        try:
                            responses = self._generate(adapter, requests)
                        except _Abort as abort:  # keep what the batch did answer, then stop
                            for entry, response in zip(ready, abort.responses):
                                if response is not None:
                                    log.append(self._record(entry, response))
                            raise RunError(abort.message) from abort.__cause__
                        for entry, response in zip(ready, responses):
                            log.append(self._record(entry, response))
                            sent += 1
                            stats["sent"] += 1
                            if not response.ok:
                                errors += 1
                                stats["errors"] += 1
                    count += len(batch)
                    if progress:
                        progress(item.name, count, len(mine))
        finally:
            log.close()
            adapter.close()
        problems = list(getattr(self.data, "problems", [])) + self._sample_errors
        name = "data_problems.txt" if self.rank == 0 else f"data_problems.rank{self.rank}.txt"
        if problems:
            (self.output / name).write_text("".join(p + "\n" for p in problems), encoding="utf-8")
        else:  # a stale list from an earlier invocation would describe files since fixed
            (self.output / name).unlink(missing_ok=True)
        if self.world > 1:
            self._barrier()
        return RunSummary(
            output=self.output,
            planned=sum(len(p.entries) for p in planned),
            sent=sent,
            errors=errors,
            cached=cached,
            seconds=time.perf_counter() - start,
            per_task=per_task,
            problems=problems,
        )

    def _materialise(self, item: PlannedTask, batch: Sequence[PlanEntry], generation: Any):
        from .data import SampleDataError

        requests: list[Request] = []
        ready: list[PlanEntry] = []
        failed: list[tuple[PlanEntry, Response]] = []
        for entry in batch:
            sample, messages, answer = item.requests[entry.key]
            try:
                image = None
                for message in messages:
                    for part in message.content:
                        if isinstance(part, ImagePart) and part.image is None:
                            if image is None:
                                image = self.data.image(sample, self.protocol)
                            part.image = image
            except SampleDataError as exc:
                failed.append((entry, Response(error=f"data: {exc}")))
                self._sample_errors.append(f"error: sample {sample.id}: {exc}")
                continue
            requests.append(
                Request(
                    sample_id=sample.id,
                    task=item.name,
                    messages=messages,
                    generation=generation,
                    answer=answer,
                    prompt_hash=entry.prompt_hash,
                    sample=sample,
                )
            )
            ready.append(entry)
        return requests, ready, failed

    @staticmethod
    def _generate(adapter: ModelAdapter, requests: list[Request]) -> list[Response]:
        from .models.errors import ModelUnavailableError

        t0 = time.perf_counter()
        try:
            responses = adapter.generate(requests)
        except ModelUnavailableError as exc:
            partial = list(getattr(exc, "responses", None) or [])
            partial += [None] * (len(requests) - len(partial))
            raise _Abort(
                f"model unavailable, run stopped: {exc}. Every answer received so far is saved; "
                "rerun the same command to resume.",
                partial[: len(requests)],
            ) from exc
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            return [Response(error=message, latency_s=time.perf_counter() - t0) for _ in requests]
        if len(responses) != len(requests):
            message = f"adapter returned {len(responses)} responses for {len(requests)} requests"
            return [Response(error=message) for _ in requests]
        return list(responses)

    @staticmethod
    def _record(entry: PlanEntry, response: Response) -> ResponseRecord:
        return ResponseRecord(
            key=entry.key,
            task=entry.task,
            sample_id=entry.sample.id,
            prompt_hash=entry.prompt_hash,
            response=response,
        )

    def _train_samples(self, sample: Sample) -> Sequence[Sample]:
        cache = self.__dict__.setdefault("_train_cache", {})
        if sample.config not in cache:
            try:
                config = self.data.catalogue.get(sample.config)
                cache[sample.config] = self.data.samples(config, split="train")
            except Exception:  # no train split available for this config
                cache[sample.config] = []
        return cache[sample.config]

    def _barrier(self, timeout_s: float = 7 * 24 * 3600) -> None:
        """File barrier across data-parallel ranks: rank 0 waits for every rank's marker."""
        marker = self.output / f".done.rank{self.rank}"
        marker.write_text(str(time.time()))
        if self.rank != 0:
            return
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if all((self.output / f".done.rank{r}").exists() for r in range(self.world)):
                for r in range(self.world):
                    (self.output / f".done.rank{r}").unlink(missing_ok=True)
                return
            time.sleep(0.5)
        raise RunError("timed out waiting for the other data-parallel ranks to finish")
