"""The score step: parse and score stored responses, aggregate, write the run's outputs.

Needs no model and no data directory: ``plan.jsonl`` carries the samples and
``responses.jsonl`` the answers. Running it twice gives byte-identical metrics.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .factory import build_task
from .judge import JUDGED_PREFIX, load_judged
from .plugins import Registry
from .protocol import Protocol
from .results import Counts, ModelRecord, RunRecord, RunResults, Selection, TaskResult, load_results, load_run_record
from .schema import ParseStatus, Prediction
from .store import (
    strict_dumps,
    PLAN,
    RESULTS,
    RUN_CONFIG,
    PlanEntry,
    ResponseRecord,
    atomic_write_text,
    load_plan,
    load_responses,
    response_files,
    write_jsonl,
)

NO_RESPONSE = "no response recorded (run interrupted or not yet predicted)"


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def predict_from_record(task: Any, sample: Any, record: ResponseRecord | None) -> Prediction:
    if record is None:
        return Prediction(status=ParseStatus.error, detail=NO_RESPONSE)
    if not record.completed:
        return Prediction(status=ParseStatus.error, detail=record.response.error or "empty response")
    return task.parse_for(sample, record.response.text or "")


def sample_row(
    entry: PlanEntry, record: ResponseRecord | None, pred: Prediction, metrics: dict[str, float], target: list[float]
) -> dict:
    s = entry.sample
    response = record.response if record else None
    return {
        "id": s.id,
        "config": s.config,
        "dataset": s.dataset,
        "index": s.index,
        "label": s.label,
        "key": entry.key,
        "prompt_hash": entry.prompt_hash,
        "response": response.text if response else None,
        "error": response.error if response else NO_RESPONSE,
        "latency_s": response.latency_s if response else None,
        "usage": response.usage.model_dump() if response else None,
        "status": pred.status.value,
        "values": list(pred.values) if pred.values is not None else None,
        "detail": pred.detail,
        "target": target,
        "unit": s.target.unit,
        "metrics": {k: _finite(float(v)) for k, v in metrics.items()},
    }


def score_task(task: Any, entries: list[PlanEntry], records: dict[str, ResponseRecord], *, seed: int,
               judged: dict[str, dict[str, Any]] | None = None):
    """``judged``: rows of ``judged_<task>.jsonl`` (:mod:`.judge`); their judged parse replaces the
    strict one, and each sample row records both (``raw_status``/``raw_values``, ``judge_mode``)."""
    samples = [e.sample for e in entries]
    found = [records.get(e.key) for e in entries]
    predictions = [predict_from_record(task, s, r) for s, r in zip(samples, found)]
    raw = list(predictions)
    if judged:
        for i, s in enumerate(samples):
            row = judged.get(s.id)
            if row is not None and row["judged"]["status"] == ParseStatus.ok.value and predictions[i].status != ParseStatus.ok:
                predictions[i] = Prediction(status=ParseStatus.ok, values=tuple(row["judged"]["values"]),
                                            detail=row["judged"].get("detail"))
    scores = task.score(samples, predictions)
    result: TaskResult = task.aggregate(samples, predictions, scores, seed=seed)
    rows = []
    columns = {name: np.asarray(values, dtype=np.float64).tolist() for name, values in scores.items()}  # one pass each
    for i, (entry, record, pred) in enumerate(zip(entries, found, predictions)):
        metrics = {name: column[i] for name, column in columns.items()}
        row = sample_row(entry, record, pred, metrics, list(task.true_values(entry.sample)))
        if judged:
            jrow = judged.get(entry.sample.id)
            row["raw_status"] = raw[i].status.value
            row["raw_values"] = list(raw[i].values) if raw[i].values is not None else None
            row["judge_mode"] = jrow["mode"] if jrow else None
        rows.append(row)
    return result, rows


def inputs_digest(run_dir: Path) -> str:
    """Digest of everything scoring reads: run.json, plan.jsonl and every response file."""
    h = hashlib.sha256(__version__.encode())
    judged = sorted(Path(run_dir).glob(f"{JUDGED_PREFIX}*.jsonl"))
    for path in [Path(run_dir) / RUN_CONFIG, Path(run_dir) / PLAN, *response_files(run_dir), *judged]:
        h.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def cached_results(run_dir: Path) -> RunResults | None:
    """results.json if it was scored from exactly the run's current inputs, else None."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return None
    try:
        results = load_results(path)
    except ValueError:
        return None
    return results if results.inputs_digest == inputs_digest(run_dir) else None


def score_run(run_dir: Path, *, registry: Registry | None = None) -> RunResults:
    """Score a run directory; writes ``samples_<task>.jsonl`` and ``results.json``; returns results."""
    run_dir = Path(run_dir)
    record = load_run_record(run_dir)
    protocol = Protocol.model_validate(record.protocol)
    seed = record.config.seed
    registry = registry or Registry.discover()
    plan = load_plan(run_dir)
    responses = load_responses(run_dir)

    by_task: dict[str, list[PlanEntry]] = {}
    for entry in plan:
        by_task.setdefault(entry.task, []).append(entry)

    tasks_out: dict[str, TaskResult] = {}
    counts = Counts(planned=len(plan))
    for name, entries in by_task.items():
        task = build_task(registry, name, protocol)
        loaded = load_judged(run_dir, name)
        result, rows = score_task(task, entries, responses, seed=seed, judged=loaded[1] if loaded else None)
        if loaded:
            result.notes.append(
                f"Failed parses re-read by an LLM judge (strict parse first; {JUDGED_PREFIX}{name}.jsonl): judge "
                f"{loaded[0].get('judge', {}).get('model', {}).get('adapter', '?')}; raw_status/raw_values keep the strict parse.")
        write_jsonl(run_dir / f"samples_{name}.jsonl", rows)
        tasks_out[name] = result
        for row in rows:
            if row["response"] is not None and row["error"] is None:
                counts.answered += 1
            elif row["error"] == NO_RESPONSE:
                counts.no_response += 1
            else:
                counts.errors += 1

    results = RunResults(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        scored_with=__version__,
        model=ModelRecord(
            name=record.config.model,
            identity=record.model_identity,
            info=record.model_info,
            generation=record.generation,
            backend=record.backend,
            batch_size=record.batch_size,
            world_size=record.world_size,
        ),
        protocol=record.protocol,
        config=record.config,
        selection=record.selection or legacy_selection(record),
        environment=record.environment,
        counts=counts,
        task_fingerprints={n: t.fingerprint for n, t in tasks_out.items()},
        tasks=tasks_out,
        inputs_digest=inputs_digest(run_dir),
        merged_from=record.merged_from,
    )
    # strict JSON: a non-finite metric is null, with its reason under "null_reasons" (JSON pointer -> why)
    text = strict_dumps(results.model_dump(mode="json"), indent=2) + "\n"
    atomic_write_text(run_dir / RESULTS, text)
    return RunResults.model_validate_json(text)  # exactly what the file holds (non-finite -> None)


def legacy_selection(record: RunRecord) -> Selection:
    """What a run.json written before selections were recorded says about its samples."""
    return Selection(tasks=record.config.tasks, protocol=str(record.protocol.get("name")), limit=record.config.limit,
                     shard=record.config.shard, world_size=record.world_size, data_root=record.data_root)
