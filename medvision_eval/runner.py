"""The predict step, wired: planner -> executor, inside a distributed context.

A run is resumable by construction. Planning (:mod:`.planning`) reads only annotation files and
volume headers, and ``run.json`` records what it read (:mod:`.manifest`): a finished, scored run
whose inputs are unchanged is recognised without planning (:meth:`Runner.finished_results`), any
other rerun plans again and sends only what is missing; the executor
(:mod:`.executor`) sends only what is missing and appends every answer as it arrives; ranks of a
data-parallel launch meet at a torch.distributed barrier (:mod:`.distributed`) before rank 0 scores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig, parse_task_spec
from .distributed import DistributedContext
from .errors import RunError
from .executor import Progress, RunSummary
from .factory import build_adapter, build_task, split_model_spec
from .manifest import MANIFEST_FIELD, SELECTION_ENV, build_manifest, finished_run, run_key
from .models.base import ModelAdapter, RunContext, TruthChannel
from .planning import Plan, PlannedTask, build_plan, gc_paused, in_shard
from .plugins import Registry
from .protocol import get_protocol
from .results import Environment, RunRecord, Selection
from .schema import Sample
from .store import RUN_CONFIG, ResponseLog, atomic_write_text, load_responses, write_plan

__all__ = [
    "RunConfig", "RunError", "Runner", "RunSummary", "Progress", "Plan", "PlannedTask",
    "build_adapter", "build_task", "split_model_spec", "parse_task_spec", "in_shard",
]



class Runner:
    """Plans and executes the predict step of one run."""

    def __init__(
        self,
        config: RunConfig,
        *,
        registry: Registry | None = None,
        adapter: ModelAdapter | None = None,
        data: Any = None,
        dist: DistributedContext | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or Registry.discover()
        self.protocol = get_protocol(config.protocol)
        self.output = config.output_dir()
        self.dist = dist or DistributedContext.from_environment()
        self._adapter = adapter
        self._data = data
        self._train_cache: dict[str, Sequence[Sample]] = {}

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world(self) -> int:
        return self.dist.world

    # -- setup --------------------------------------------------------------------------------
    def data_root(self) -> Path:
        """The data directory this run reads (resolved as :class:`MedVisionData` resolves it)."""
        if self._data is not None:
            return Path(self._data.root)
        from .data.location import default_data_dir

        root = Path(self.config.data) if self.config.data else default_data_dir()
        return root.expanduser().resolve()

    @property
    def data(self) -> Any:
        if self._data is None:
            from .data import MedVisionData

            self._data = MedVisionData(self.data_root(), families=self.registry.sample_builders())
        return self._data

    def key(self) -> str:
        """Digest of the invocation and code that shape this run's plan (:func:`.manifest.run_key`)."""
        return run_key(self.config, self.adapter, self.protocol, self.registry, world_size=self.world,
                       data_root=self.data_root())

    def finished_results(self) -> Any:
        """The stored results when this exact run is already finished and scored (nothing to plan,
        send or score: :func:`.manifest.finished_run`), else None."""
        if self.world != 1 or self.config.no_cache:
            return None
        return finished_run(self.output, self.key(), self.data_root())

    def manifest(self) -> dict[str, Any] | None:
        """What planning consumed (after :func:`build_plan`), for ``run.json``; None when the data
        layer does not say which files it read."""
        consulted = getattr(self.data, "consulted_files", None)
        if not callable(consulted):
            return None
        return build_manifest(self.key(), Path(self.data.root), consulted())

    @property
    def adapter(self) -> ModelAdapter:
        if self._adapter is None:
            self._adapter = build_adapter(self.registry, self.config.model, dict(self.config.model_args))
        return self._adapter

    def tasks(self) -> dict[str, Any]:
        """Every task family named in ``--tasks``, built under the run's protocol."""
        names = dict.fromkeys(parse_task_spec(spec)[0] for spec in self.config.tasks)
        return {name: build_task(self.registry, name, self.protocol) for name in names}

    def plan(self) -> list[PlannedTask]:
        return build_plan(self.config, self.tasks(), self.data, self.adapter).tasks

    def batch_size(self) -> int:
        """Requests per adapter call: --batch-size, else the adapter's own setting or default."""
        adapter = self.adapter
        return self.config.batch_size or int(getattr(adapter, "batch_size", 0) or adapter.default_batch_size)

    def selection(self) -> Selection:
        data = self.data
        identity = getattr(data, "identity", None)
        return Selection(
            tasks=list(self.config.tasks),
            protocol=self.protocol.name,
            limit=self.config.limit,
            shard=self.config.shard,
            world_size=self.world,
            data_root=str(data.root),
            data_files=identity() if callable(identity) else {},
            sample_filtering=bool(getattr(data, "sample_filtering", True)),
            env={name: os.environ[name] for name in SELECTION_ENV if name in os.environ},
        )

    def run_record(self, manifest: dict[str, Any] | None = None) -> RunRecord:
        from .environment import environment_info

        adapter = self.adapter
        extra = {MANIFEST_FIELD: manifest} if manifest else {}
        return RunRecord(
            medvision_eval_version=__version__,
            config=self.config.model_copy(update={"model_args": adapter.identity().get("args", {})}),
            data_root=str(self.data.root),
            model_identity=adapter.identity(),
            model_info=adapter.info(),
            generation=adapter.generation_settings().model_dump(),
            protocol=self.protocol.model_dump(),
            batch_size=self.batch_size(),
            backend=adapter.backend,
            world_size=self.world,
            environment=Environment(**environment_info()),
            selection=self.selection(),
            **extra,
        )

    # -- execution ------------------------------------------------------------------------------
    def execute(self, *, progress: Progress | None = None) -> RunSummary:
        from .executor import Executor

        start = time.perf_counter()
        with gc_paused():  # the plan's records live for the run: see gc_paused
            plan = build_plan(self.config, self.tasks(), self.data, self.adapter)
            self.output.mkdir(parents=True, exist_ok=True)
            if self.dist.is_main:
                write_plan(self.output, plan.entries)
        if self.dist.is_main:
            record = self.run_record(self.manifest())
            atomic_write_text(self.output / RUN_CONFIG, record.model_dump_json(indent=2) + "\n")
        adapter = self.adapter
        adapter.prepare(RunContext(seed=self.config.seed, truth=self.truth_channel(plan) if adapter.uses_truth else None))
        executor = Executor(
            adapter=adapter,
            data=self.data,
            protocol=self.protocol,
            batch_size=self.batch_size(),
            dist=self.dist,
            done={} if self.config.no_cache else load_responses(self.output),
        )
        log = ResponseLog(self.output, rank=self.rank)
        try:
            counts = executor.run(plan, log, progress)
        finally:
            log.close()
            adapter.close()
            close = getattr(self._data, "close", None)  # decoded volumes are not needed after the run
            if close is not None:
                close()
        problems = list(getattr(self.data, "problems", [])) + executor.sample_errors
        name = "data_problems.txt" if self.dist.is_main else f"data_problems.rank{self.rank}.txt"
        if problems:
            (self.output / name).write_text("".join(p + "\n" for p in problems), encoding="utf-8")
        else:  # a stale list from an earlier invocation would describe files since fixed
            (self.output / name).unlink(missing_ok=True)
        self.dist.barrier()
        self.dist.close()
        return RunSummary(
            output=self.output,
            planned=len(plan),
            sent=sum(c.sent for c in counts.values()),
            errors=sum(c.errors for c in counts.values()),
            cached=sum(c.cached for c in counts.values()),
            seconds=time.perf_counter() - start,
            per_task={name: vars(c).copy() for name, c in counts.items()},
            problems=problems,
        )

    def truth_channel(self, plan: Plan) -> TruthChannel:
        """Ground truth of the planned samples, for adapters that declare ``uses_truth``."""
        tasks = {p.name: p.task for p in plan.tasks}
        samples = {(e.task, e.sample.id): e.sample for e in plan.entries}
        return TruthChannel(samples, lambda task, sample: tasks[task].true_values(sample), self._train_samples)

    def _train_samples(self, sample: Sample) -> Sequence[Sample]:
        if sample.config not in self._train_cache:
            try:
                config = self.data.catalogue.get(sample.config)
                self._train_cache[sample.config] = self.data.samples(config, split="train")
            except Exception:  # no train split available for this config
                self._train_cache[sample.config] = []
        return self._train_cache[sample.config]
