"""Merge shard run directories (``--shard i/n``) into one run directory, deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import RunRecord, load_run_record
from .store import RUN_CONFIG, PlanEntry, ResponseLog, atomic_write_text, load_plan, load_responses, write_plan

# Parts of run.json that must agree between shards of one evaluation.
_MUST_MATCH = ("model_identity", "protocol", "generation")
_CONFIG_MUST_MATCH = ("tasks", "limit", "protocol", "seed")


def merge_runs(output: Path, shards: list[Path]) -> dict[str, Any]:
    output = Path(output)
    if not shards:
        raise ValueError("merge: give at least one shard directory")
    first: RunRecord | None = None
    for shard in shards:
        record = load_run_record(shard)
        if first is None:
            first = record
            continue
        for key in _MUST_MATCH:
            if getattr(record, key) != getattr(first, key):
                raise ValueError(f"merge: {shard} differs from {shards[0]} in {key}; these are not shards of one run")
        for key in _CONFIG_MUST_MATCH:
            if getattr(record.config, key) != getattr(first.config, key):
                raise ValueError(f"merge: {shard} differs from {shards[0]} in --{key}")
    assert first is not None

    entries: dict[str, PlanEntry] = {}
    for shard in shards:
        for entry in load_plan(shard):
            entries.setdefault(entry.key, entry)
    merged_plan = sorted(entries.values(), key=lambda e: (e.order, e.task, e.sample.id))

    merged = first.model_copy(update={
        "config": first.config.model_copy(update={"shard": None, "output": str(output)}),
        "selection": first.selection.model_copy(update={"shard": None}) if first.selection else None,
        "merged_from": [str(s) for s in shards],
    })
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / RUN_CONFIG, merged.model_dump_json(indent=2) + "\n")
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
