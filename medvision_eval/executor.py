"""The executor: send what is not answered yet, in batches, and persist every answer at once.

It turns a :class:`~medvision_eval.planning.Plan` into ``responses.jsonl`` lines. Samples are
visited grouped by volume (each volume decoded once); image pixels are attached only when a
sample is actually sent. Adapter failures become stored errors (retried on the next run); a
model that gives up (:class:`~medvision_eval.models.errors.ModelUnavailableError`) stops the run
after the answers its batch did produce are stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .distributed import DistributedContext
from .errors import RunError
from .planning import Plan, PlannedTask
from .schema import GenerationSettings, ImagePart, Request, Response
from .store import PlanEntry, ResponseLog, ResponseRecord

Progress = Callable[[str, int, int], None]  # (task, done, total)


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


@dataclass
class TaskCounts:
    planned: int
    cached: int
    sent: int = 0
    errors: int = 0


class _Abort(Exception):
    """The adapter gave up (failure threshold): carries the batch's partial responses."""

    def __init__(self, message: str, responses: list[Response | None]) -> None:
        super().__init__(message)
        self.message = message
        self.responses = responses


class Executor:
    """Runs a plan against one adapter, appending to the run directory's response log."""

    def __init__(
        self,
        *,
        adapter: Any,
        data: Any,
        protocol: Any,
        batch_size: int,
        dist: DistributedContext,
        done: dict[str, ResponseRecord],
    ) -> None:
        self.adapter = adapter
        self.data = data
        self.protocol = protocol
        self.batch_size = batch_size
        self.dist = dist
        self.done = done
        self.sample_errors: list[str] = []

    def run(self, plan: Plan, log: ResponseLog, progress: Progress | None = None) -> dict[str, TaskCounts]:
        generation = self.adapter.generation_settings()
        counts: dict[str, TaskCounts] = {}
        for item in plan.tasks:
            mine = [e for e in item.entries if self.dist.owns(e.sample.id)]
            todo = [e for e in mine if not (e.key in self.done and self.done[e.key].completed)]
            stats = counts[item.name] = TaskCounts(planned=len(mine), cached=len(mine) - len(todo))
            if progress:
                progress(item.name, stats.cached, len(mine))
            todo.sort(key=lambda e: e.sample.image.path)  # by volume, dataset order within one
            finished = stats.cached
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                self._send(item, batch, generation, log, stats)
                finished += len(batch)
                if progress:
                    progress(item.name, finished, len(mine))
        return counts

    def _send(self, item: PlannedTask, batch: Sequence[PlanEntry], generation: GenerationSettings,
              log: ResponseLog, stats: TaskCounts) -> None:
        requests, ready, failed = self._materialise(item, batch, generation)
        for entry, response in failed:
            log.append(_record(entry, response))
            stats.errors += 1
        if not requests:
            return
        try:
            responses = generate(self.adapter, requests)
        except _Abort as abort:  # keep what the batch did answer, then stop
            for entry, response in zip(ready, abort.responses):
                if response is not None:
                    log.append(_record(entry, response))
            raise RunError(abort.message) from abort.__cause__
        for entry, response in zip(ready, responses):
            log.append(_record(entry, response))
            stats.sent += 1
            if not response.ok:
                stats.errors += 1

    def _materialise(self, item: PlannedTask, batch: Sequence[PlanEntry], generation: GenerationSettings):
        """Requests with their pixels attached; samples whose image cannot be made become errors."""
        from .data import SampleDataError

        requests: list[Request] = []
        ready: list[PlanEntry] = []
        failed: list[tuple[PlanEntry, Response]] = []
        for entry in batch:
            planned = item.requests[entry.key]
            try:
                attach_images(planned.messages, lambda: self.protocol.render_image(self.data, planned.sample))
            except SampleDataError as exc:
                failed.append((entry, Response(error=f"data: {exc}")))
                self.sample_errors.append(f"error: sample {planned.sample.id}: {exc}")
                continue
            requests.append(Request(sample_id=planned.sample.id, task=item.name, messages=planned.messages,
                                    generation=generation, answer=planned.answer, prompt_hash=entry.prompt_hash,
                                    sample=planned.sample))
            ready.append(entry)
        return requests, ready, failed


def attach_images(messages: Sequence[Any], render: Callable[[], Any]) -> None:
    """Fill every image part that has no pixels yet with the sample's image (rendered once)."""
    image = None
    for message in messages:
        for part in message.content:
            if isinstance(part, ImagePart) and part.image is None:
                if image is None:
                    image = render()
                part.image = image


def generate(adapter: Any, requests: list[Request]) -> list[Response]:
    """One adapter call; any exception becomes a per-request error, a give-up becomes :class:`_Abort`."""
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


def _record(entry: PlanEntry, response: Response) -> ResponseRecord:
    return ResponseRecord(key=entry.key, task=entry.task, sample_id=entry.sample.id,
                          prompt_hash=entry.prompt_hash, response=response)
