"""The executor: send what is not answered yet, in batches, and persist every answer at once.

It turns a :class:`~medvision_eval.planning.Plan` into ``responses.jsonl`` lines. Samples are
visited grouped by volume across all configs and tasks (each volume decoded once per run, the
next one decoded on a worker thread meanwhile, a finished one released at once); image pixels are
attached only when a sample is actually sent and dropped as soon as it is answered. Adapter failures become stored errors (retried on the next run); a
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
        """Send every unanswered entry, visiting volumes one at a time across all tasks.

        Entries are ordered by volume (path), then task (``--tasks`` order), then dataset order,
        so a volume is decoded once for every config and task that slices it. When the first
        sample of a volume is rendered, the next volume is decoded on the data's worker thread;
        when the last one is rendered, the volume is released, so at most the volume in use and
        the next one are held whatever the cache bound. A batch holds one task's entries (it may
        span volumes). Files and results keep the official order: scoring reads ``plan.jsonl``,
        not the arrival order of answers.
        """
        generation = self.adapter.generation_settings()
        counts: dict[str, TaskCounts] = {}
        finished: dict[str, int] = {}
        todo: list[tuple[str, int, int, PlannedTask, PlanEntry]] = []
        for rank, item in enumerate(plan.tasks):
            mine = [e for e in item.entries if self.dist.owns(e.sample.id)]
            waiting = [e for e in mine if not (e.key in self.done and self.done[e.key].completed)]
            stats = counts[item.name] = TaskCounts(planned=len(mine), cached=len(mine) - len(waiting))
            finished[item.name] = stats.cached
            if progress:
                progress(item.name, stats.cached, len(mine))
            todo.extend((e.sample.image.path, rank, i, item, e) for i, e in enumerate(waiting))
        todo.sort(key=lambda t: t[:3])  # volume, task, dataset order
        visit = VolumeVisit([t[0] for t in todo], [t[4].sample for t in todo], self.data)
        start = 0
        while start < len(todo):
            item = todo[start][3]
            stop = start + 1
            while stop < len(todo) and stop - start < self.batch_size and todo[stop][3] is item:
                stop += 1
            self._send(item, range(start, stop), todo, visit, generation, log, counts[item.name])
            finished[item.name] += stop - start
            if progress:
                progress(item.name, finished[item.name], counts[item.name].planned)
            start = stop
        return counts

    def _send(self, item: PlannedTask, rows: range, todo: Sequence[tuple], visit: "VolumeVisit",
              generation: GenerationSettings, log: ResponseLog, stats: TaskCounts) -> None:
        requests, ready, failed = self._materialise(item, rows, todo, visit, generation)
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
        finally:
            release_images(requests)  # pixels live only until their request is answered
        for entry, response in zip(ready, responses):
            log.append(_record(entry, response))
            stats.sent += 1
            if not response.ok:
                stats.errors += 1

    def _materialise(self, item: PlannedTask, rows: range, todo: Sequence[tuple], visit: "VolumeVisit",
                     generation: GenerationSettings):
        """Requests with their pixels attached; samples whose image cannot be made become errors."""
        from .data import SampleDataError

        requests: list[Request] = []
        ready: list[PlanEntry] = []
        failed: list[tuple[PlanEntry, Response]] = []
        for row in rows:
            entry = todo[row][4]
            planned = item.requests[entry.key]
            visit.starting(row)
            try:
                attach_images(planned.messages, lambda: self.protocol.render_image(self.data, planned.sample))
            except SampleDataError as exc:
                failed.append((entry, Response(error=f"data: {exc}")))
                self.sample_errors.append(f"error: sample {planned.sample.id}: {exc}")
                continue
            finally:
                visit.done(row)
            requests.append(Request(sample_id=planned.sample.id, task=item.name, messages=planned.messages,
                                    generation=generation, answer=planned.answer, prompt_hash=entry.prompt_hash))
            ready.append(entry)
        return requests, ready, failed


class VolumeVisit:
    """Decode-ahead and release for samples visited in volume order (``paths[i]`` of ``samples[i]``).

    ``starting(i)`` before rendering sample ``i``: on the first sample of a volume, start decoding
    the next volume on the data's worker thread (``data.prefetch``), so the decode overlaps the
    work on this one. ``done(i)`` after it: on the last sample of a volume, release it
    (``data.release``); the volume cache then never holds finished volumes. Data objects without
    those methods are simply not asked.
    """

    def __init__(self, paths: Sequence[str], samples: Sequence[Any], data: Any) -> None:
        self.paths = paths
        self.samples = samples
        self.prefetch = getattr(data, "prefetch", None)
        self.release = getattr(data, "release", None)
        # following[i]: index of the first sample after i on another volume (len(paths) if none)
        self.following = [len(paths)] * len(paths)
        for i in range(len(paths) - 2, -1, -1):
            self.following[i] = i + 1 if paths[i + 1] != paths[i] else self.following[i + 1]

    def starting(self, i: int) -> None:
        if self.prefetch is not None and (i == 0 or self.paths[i - 1] != self.paths[i]):
            nxt = self.following[i]
            if nxt < len(self.paths):
                self.prefetch(self.samples[nxt])

    def done(self, i: int) -> None:
        if self.release is not None and (i + 1 == len(self.paths) or self.paths[i + 1] != self.paths[i]):
            self.release(self.samples[i])


def attach_images(messages: Sequence[Any], render: Callable[[], Any]) -> None:
    """Fill every image part that has no pixels yet with the sample's image (rendered once)."""
    image = None
    for message in messages:
        for part in message.content:
            if isinstance(part, ImagePart) and part.image is None:
                if image is None:
                    image = render()
                part.image = image


def release_images(requests: Sequence[Request]) -> None:
    """Drop the pixels of answered requests; the planned messages (kept for the run) hold refs only."""
    for request in requests:
        for message in request.messages:
            for part in message.content:
                if isinstance(part, ImagePart):
                    part.image = None


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
