"""Merge shard run directories (``--shard i/n``) into one run directory, deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .store import (
    RUN_CONFIG,
    PlanEntry,
    ResponseLog,
    load_plan,
    load_responses,
    read_json,
    write_json,
    write_plan,
)

# Parts of run.json that must agree between shards of one evaluation.
_MUST_MATCH = ("model_identity", "protocol", "generation")


def merge_runs(output: Path, shards: list[Path]) -> dict[str, Any]:
    output = Path(output)
    if not shards:
        raise ValueError("merge: give at least one shard directory")
    records = []
    first: dict[str, Any] | None = None
    for shard in shards:
        path = Path(shard) / RUN_CONFIG
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {shard} is not a run directory")
        record = read_json(path)
        if first is None:
            first = record
        else:
            for key in _MUST_MATCH:
                if record.get(key) != first.get(key):
                    raise ValueError(f"merge: {shard} differs from {shards[0]} in {key}; these are not shards of one run")
            for key in ("tasks", "limit", "protocol", "seed"):
                if record["config"].get(key) != first["config"].get(key):
                    raise ValueError(f"merge: {shard} differs from {shards[0]} in --{key}")
        records.append(record)
    assert first is not None

    entries: dict[str, PlanEntry] = {}
    for shard in shards:
        for entry in load_plan(shard):
            entries.setdefault(entry.key, entry)
    merged_plan = sorted(entries.values(), key=lambda e: (e.order, e.task, e.sample.id))

    merged_config = dict(first)
    merged_config["config"] = dict(first["config"], shard=None, output=str(output))
    merged_config["merged_from"] = [str(s) for s in shards]
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / RUN_CONFIG, merged_config)
    write_plan(output, merged_plan)

    existing = load_responses(output)
    n = 0
    with ResponseLog(output) as log:
        for shard in shards:
            if Path(shard).resolve() == output.resolve():
                continue
            for key, record in load_responses(shard).items():
                old = existing.get(key)
                if old is not None and (old.completed or not record.completed):
                    continue
                log.append(record)
                existing[key] = record
                n += 1
    return {"shards": len(shards), "planned": len(merged_plan), "responses": n}
