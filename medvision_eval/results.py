"""Typed run records: ``run.json`` (:class:`RunRecord`) and ``results.json`` (:class:`RunResults`).

``score`` writes :class:`RunResults`; ``report``, ``compare``, ``merge``, the leaderboard and the
Python API read it through :func:`load_results`. Its JSON Schema is ``docs/results.schema.json``
(regenerate with ``python -m medvision_eval.results > docs/results.schema.json``; a test fails when
they drift). Metric names follow :mod:`medvision_eval.metric_names`. Non-finite numbers are
written as ``null``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import RunConfig
from .schema import Interval

RESULTS_SCHEMA_VERSION = "2.0"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"


class TaskResult(BaseModel):
    """Aggregated results of one task family in one run (a block of results.json)."""

    task: str
    protocol: str
    fingerprint: str
    n_samples: int
    parse_stats: dict[str, int]  # ParseStatus value -> count
    # Headline numbers with 95 % bootstrap intervals, keyed "<scope>/<metric>" (see metric_names).
    metrics: dict[str, Interval]
    # Paper-style tables: table name -> rows (each row a flat dict, first key the group name).
    tables: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class Selection(BaseModel):
    """Everything that decides which samples a run asked (and so what its numbers cover)."""

    tasks: list[str]
    protocol: str
    split: str = "test"
    limit: int | float | None = None
    shard: tuple[int, int] | None = None
    world_size: int = 1
    data_root: str | None = None
    # Digest of the annotation files planning read (plan files and catalogue), per file.
    data_files: dict[str, str] = Field(default_factory=dict)
    sample_filtering: bool = True  # the official loader's per-sample filters
    env: dict[str, str] = Field(default_factory=dict)  # data-selection environment variables that were set


class ModelRecord(BaseModel):
    name: str
    identity: dict[str, Any] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    generation: dict[str, Any] = Field(default_factory=dict)
    backend: str | None = None
    batch_size: int | None = None
    world_size: int = 1


class Environment(BaseModel):
    python: str | None = None
    platform: str | None = None
    packages: dict[str, str] = Field(default_factory=dict)
    git_revision: str | None = None  # only when running from medvision-eval's own git checkout


class RunRecord(BaseModel):
    """``run.json``: the resolved configuration of a run, written by the predict step."""

    model_config = ConfigDict(extra="allow")

    medvision_eval_version: str
    config: RunConfig
    data_root: str | None = None
    model_identity: dict[str, Any] = Field(default_factory=dict)
    model_info: dict[str, Any] = Field(default_factory=dict)
    generation: dict[str, Any] = Field(default_factory=dict)
    protocol: dict[str, Any]
    batch_size: int | None = None
    backend: str | None = None
    world_size: int = 1
    environment: Environment = Field(default_factory=Environment)
    selection: Selection | None = None  # None in run directories written before 0.2
    merged_from: list[str] | None = None


class Counts(BaseModel):
    planned: int = 0
    answered: int = 0
    errors: int = 0
    no_response: int = 0


class RunResults(BaseModel):
    """``results.json``: what ``medvision-eval score`` and ``medvision_eval.score()`` produce."""

    schema_version: Literal["2.0"] = RESULTS_SCHEMA_VERSION
    created: str
    scored_with: str
    model: ModelRecord
    protocol: dict[str, Any]
    config: RunConfig
    selection: Selection
    environment: Environment = Field(default_factory=Environment)
    counts: Counts
    task_fingerprints: dict[str, str]
    tasks: dict[str, TaskResult]
    inputs_digest: str
    merged_from: list[str] | None = None

    def metric(self, task: str, name: str) -> float | None:
        """Point value of ``<scope>/<metric>`` of a task (``None`` if undefined)."""
        return self.tasks[task].metrics[name].value

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def load_results(path: str | Path) -> RunResults:
    """Read ``results.json`` (a run directory or the file itself) into :class:`RunResults`."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{file} not found (run 'medvision-eval score {path}' first?)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != RESULTS_SCHEMA_VERSION:
        raise ValueError(f"{file}: results schema {version!r}, this medvision-eval reads {RESULTS_SCHEMA_VERSION!r}; "
                         f"re-score the run: medvision-eval score {file.parent}")
    try:
        return RunResults.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{file}: field {where}: {first['msg']}") from None


def load_run_record(run_dir: str | Path) -> RunRecord:
    """Read ``run.json`` of a run directory."""
    file = Path(run_dir) / RUN_FILE
    if not file.exists():
        raise FileNotFoundError(f"{file} not found: {run_dir} is not a medvision-eval run directory")
    try:
        return RunRecord.model_validate_json(file.read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{file}: field {where}: {first['msg']}") from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of results.json, as exported to docs/results.schema.json."""
    return RunResults.model_json_schema()


if __name__ == "__main__":  # pragma: no cover - exercised through the drift test's command
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
