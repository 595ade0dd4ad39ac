"""The score step: parse and score stored responses, aggregate, write the run's outputs.

Needs no model and no data directory: ``plan.jsonl`` carries the samples and
``responses.jsonl`` the answers. Running it twice gives byte-identical metrics.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import __version__
from .factory import build_task
from .judge import JUDGED_PREFIX, load_judged
from .plugins import Registry
from .protocol import Protocol
from .results import Counts, ModelRecord, RunRecord, RunResults, Selection, TaskResult, load_results, load_run_record
from .columnar import Answer, TaskColumns, _json_str, float_texts, read_answers, read_plan
from .schema import ParseStatus, Prediction
from .store import (
    strict_dumps,
    PLAN,
    RESULTS,
    RUN_CONFIG,
    PlanEntry,
    ResponseRecord,
    atomic_write_text,
    response_files,
    write_jsonl,
    write_lines,
)
from .tasks.base import Task
from .tasks.groups import ProfiledSamples
from .tasks.parsing import parse_last_k_many

NO_RESPONSE = "no response recorded (run interrupted or not yet predicted)"


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def predict_from_record(task: Any, sample: Any, record: ResponseRecord | None) -> Prediction:
    if record is None:
        return Prediction(status=ParseStatus.error, detail=NO_RESPONSE)
    if not record.completed:
        return Prediction(status=ParseStatus.error, detail=record.response.error or "empty response")
    return task.parse_for(sample, record.response.text or "")


def predict_from_answer(task: Any, sample: Any, answer: Answer | None) -> Prediction:
    """:func:`predict_from_record` of a stored answer as :func:`.columnar.read_answers` holds it."""
    if answer is None:
        return Prediction(status=ParseStatus.error, detail=NO_RESPONSE)
    text, error = answer[0], answer[1]
    if error is not None or text is None:
        return Prediction(status=ParseStatus.error, detail=error or "empty response")
    return task.parse_for(sample, text)


def row_of(
    head: tuple[str, str, str, int, str, str, str], answer: Answer | None, status: str,
    values: Sequence[float] | None, detail: str | None, metrics: dict[str, float], target: Sequence[float], unit: str,
) -> dict:
    """One line of ``samples_<task>.jsonl``; ``head``: id, config, dataset, index, label, key, prompt hash."""
    sid, config, dataset, index, label, key, prompt_hash = head
    return {
        "id": sid,
        "config": config,
        "dataset": dataset,
        "index": index,
        "label": label,
        "key": key,
        "prompt_hash": prompt_hash,
        "response": answer[0] if answer else None,
        "error": answer[1] if answer else NO_RESPONSE,
        "latency_s": answer[2] if answer else None,
        "usage": {"prompt_tokens": answer[3], "completion_tokens": answer[4]} if answer else None,
        "status": status,
        "values": list(values) if values is not None else None,
        "detail": detail,
        "target": list(target),
        "unit": unit,
        "metrics": {k: _finite(float(v)) for k, v in metrics.items()},
    }


def sample_row(
    entry: PlanEntry, answer: Answer | None, pred: Prediction, metrics: dict[str, float], target: list[float]
) -> dict:
    s = entry.sample
    head = (s.id, s.config, s.dataset, s.index, s.label, entry.key, entry.prompt_hash)
    return row_of(head, answer, pred.status.value, pred.values, pred.detail, metrics, target, s.target.unit)


def score_task(task: Any, entries: list[PlanEntry], answers: Mapping[str, Answer], *, seed: int,
               judged: dict[str, dict[str, Any]] | None = None):
    """``judged``: rows of ``judged_<task>.jsonl`` (:mod:`.judge`); their judged parse replaces the
    strict one, and each sample row records both (``raw_status``/``raw_values``, ``judge_mode``)."""
    samples = [e.sample for e in entries]
    found = [answers.get(e.key) for e in entries]
    predictions = [predict_from_answer(task, s, a) for s, a in zip(samples, found)]
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
    for i, (entry, answer, pred) in enumerate(zip(entries, found, predictions)):
        metrics = {name: column[i] for name, column in columns.items()}
        row = sample_row(entry, answer, pred, metrics, list(task.true_values(entry.sample)))
        if judged:
            jrow = judged.get(entry.sample.id)
            row["raw_status"] = raw[i].status.value
            row["raw_values"] = list(raw[i].values) if raw[i].values is not None else None
            row["judge_mode"] = jrow["mode"] if jrow else None
        rows.append(row)
    return result, rows


def row_counts(answers: Sequence[Answer | None]) -> tuple[int, int, int]:
    """(answered, no response, errors) of a task's rows: what ``Counts`` adds up."""
    answered = no_response = errors = 0
    for a in answers:
        if a is not None and a[0] is not None and a[1] is None:
            answered += 1
        elif a is None or a[1] == NO_RESPONSE:
            no_response += 1
        else:
            errors += 1
    return answered, no_response, errors


STATUS_VALUES = [status.value for status in ParseStatus]


def score_task_columns(task: Any, cols: TaskColumns, answers: Mapping[str, Answer], *, seed: int):
    """:func:`score_task` of a ``columnar`` task from plan columns: the same result and the same
    sample rows (as an iterator of text lines), without a pydantic object per sample."""
    n = len(cols)
    k = task.k
    codes = np.asarray(cols.codes, dtype=np.int64)
    found = [answers.get(key) for key in cols.keys]
    status: list[str] = ["ok"] * n
    detail: list[str | None] = [None] * n
    shown: dict[int, tuple | None] = {}  # rows whose printed values are not their matrix row
    values = np.full((n, k), np.nan)
    ok = np.zeros(n, dtype=bool)
    text_rows: list[int] = []
    texts: list[str] = []
    for i, a in enumerate(found):
        if a is None:
            status[i], detail[i] = "error", NO_RESPONSE
        elif a[1] is not None or a[0] is None:
            status[i], detail[i] = "error", a[1] or "empty response"
        else:
            text_rows.append(i)
            texts.append(a[0])
    rows_index = np.asarray(text_rows, dtype=np.int64)
    ks = {task.strict_rules(p).k for p in cols.profiles}
    if task.protocol.parser == "lastk" and ks == {k} and type(task).parse_for is Task.parse_for:
        failures, parsed = parse_last_k_many(texts, k)
        values[rows_index] = parsed
        good = ~np.isnan(parsed).any(axis=1) if len(texts) else np.zeros(0, dtype=bool)
        ok[rows_index[good]] = True
        for j, pred in enumerate(failures):
            if pred is not None:
                i = text_rows[j]
                status[i], detail[i] = pred.status.value, pred.detail
                shown[i] = pred.values
    else:
        profiles = cols.profiles
        for j, text in enumerate(texts):
            i = text_rows[j]
            pred = task.parse_for(profiles[codes[i]], text)
            status[i], detail[i] = pred.status.value, pred.detail
            if pred.status == ParseStatus.ok and pred.values is not None and len(pred.values) == k:
                values[i] = pred.values
                ok[i] = True
                if pred.values != tuple(values[i].tolist()):
                    shown[i] = pred.values
            else:
                shown[i] = pred.values
    targets = np.full((n, k), np.nan)
    for i, truth in enumerate(cols.truths):
        if len(truth) == k:
            targets[i] = truth
        else:
            targets[i, : min(k, len(truth))] = truth[:k]
    scores = task.score_matrix(values, ok, targets)
    order = np.array(sorted(range(n), key=cols.ids.__getitem__), dtype=np.int64)
    ordered = ProfiledSamples(cols.profiles, codes[order], np.asarray(cols.box_ratios, dtype=np.float64)[order])
    ordered_scores = {name: np.asarray(v, dtype=np.float64)[order] for name, v in scores.items()}
    counted = Counter(status)
    stats = {value: int(counted.get(value, 0)) for value in STATUS_VALUES}
    result: TaskResult = task.result(ordered, ordered_scores, stats, seed=seed)
    lines = sample_lines(cols, found, status, detail, values, ok, shown, scores)
    return result, lines, row_counts(found)


def sample_lines(cols: TaskColumns, found: list[Answer | None], status: list[str], detail: list[str | None],
                 values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
                 scores: dict[str, np.ndarray]) -> Iterator[str]:
    """The lines of ``samples_<task>.jsonl``, each exactly ``strict_dumps(row_of(...)) + "\n"``."""
    names = list(scores)
    metric_texts = []
    bad = np.zeros(len(cols), dtype=bool)
    for name in names:
        texts, inf = float_texts(scores[name])
        metric_texts.append(texts)
        bad |= inf
    bad |= ~np.isfinite(np.where(ok[:, None], values, 0.0)).all(axis=1) if len(cols) else bad
    metric_part = ", ".join(f"{_json_str(name)}: %s" for name in names)
    template = ('{"id": %s, "config": %s, "dataset": %s, "index": %d, "label": %s, "key": %s, "prompt_hash": %s, '
                '"response": %s, "error": %s, "latency_s": %s, "usage": %s, "status": "%s", "values": %s, '
                '"detail": %s, "target": %s, "unit": %s, "metrics": {' + metric_part + '}}\n')
    cache: dict[str, str] = {}
    value_rows = values.tolist()
    no_answer = ("null", _json_str(NO_RESPONSE), "null", "null")
    isfinite = math.isfinite
    for i in range(len(cols)):
        a = found[i]
        truth = cols.truths[i]
        try:
            if bad[i] or not all(isfinite(t) for t in truth):
                raise ValueError("not finite")
            if a is None:
                response, error, latency, usage = no_answer
            else:
                if not isfinite(a[2]):
                    raise ValueError("not finite")
                response = "null" if a[0] is None else _json_str(a[0])
                error = "null" if a[1] is None else _json_str(a[1])
                latency = repr(a[2])
                usage = ('{"prompt_tokens": %s, "completion_tokens": %s}'
                         % ("null" if a[3] is None else a[3], "null" if a[4] is None else a[4]))
            if i in shown or not ok[i]:
                v = shown.get(i)
                if v is not None and not all(isfinite(x) for x in v):
                    raise ValueError("not finite")
                vals = "null" if v is None else "[" + ", ".join(map(repr, map(float, v))) + "]"
            else:
                vals = "[" + ", ".join(map(repr, value_rows[i])) + "]"
            d = detail[i]
            line = template % (
                _json_str(cols.ids[i]), _json_str(cols.configs[i], cache), _json_str(cols.datasets[i], cache),
                cols.indexes[i], _json_str(cols.labels[i], cache), _json_str(cols.keys[i]),
                _json_str(cols.prompt_hashes[i]), response, error, latency, usage, status[i], vals,
                "null" if d is None else _json_str(d), "[" + ", ".join(map(repr, truth)) + "]",
                _json_str(cols.units[i], cache), *(texts[i] for texts in metric_texts))
        except (ValueError, TypeError, orjson.JSONEncodeError):
            head = (cols.ids[i], cols.configs[i], cols.datasets[i], cols.indexes[i], cols.labels[i], cols.keys[i],
                    cols.prompt_hashes[i])
            v = shown[i] if i in shown else (tuple(value_rows[i]) if ok[i] else None)
            metrics = {name: scores[name][i] for name in names}
            line = strict_dumps(row_of(head, a, status[i], v, detail[i], metrics, truth, cols.units[i])) + "\n"
        yield line


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


class DigestThread:
    """:func:`inputs_digest` computed on a thread (hashlib releases the GIL on large blocks)."""

    def __init__(self, run_dir: Path) -> None:
        self._value: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(Path(run_dir),), daemon=True)
        self._thread.start()

    def _run(self, run_dir: Path) -> None:
        try:
            self._value = inputs_digest(run_dir)
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


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


def _columnar(registry: Registry, protocol: Protocol, run_dir: Path, built: dict[str, Any]) -> Any:
    """Whether the score step may keep a task's samples as columns: a built-in family class
    exactly (a subclass may read any sample field) and no judge re-parse to merge."""

    def decide(name: str) -> bool:
        try:
            task = built[name] = build_task(registry, name, protocol)
        except Exception:  # raised again, in order, when the task is scored
            return False
        return bool(type(task).__dict__.get("columnar", False)) and load_judged(run_dir, name) is None

    return decide


def score_run(run_dir: Path, *, registry: Registry | None = None) -> RunResults:
    """Score a run directory; writes ``samples_<task>.jsonl`` and ``results.json``; returns results."""
    run_dir = Path(run_dir)
    record = load_run_record(run_dir)
    protocol = Protocol.model_validate(record.protocol)
    seed = record.config.seed
    registry = registry or Registry.discover()
    digest = DigestThread(run_dir)  # hashes the inputs on a second core while they are scored
    built: dict[str, Any] = {}
    by_task, planned = read_plan(run_dir, _columnar(registry, protocol, run_dir, built), protocol.full_precision_targets)
    answers = read_answers(run_dir)

    tasks_out: dict[str, TaskResult] = {}
    counts = Counts(planned=planned)
    for name, entries in by_task.items():
        task = built.get(name) or build_task(registry, name, protocol)
        if isinstance(entries, TaskColumns):
            result, lines, (answered, no_response, errors) = score_task_columns(task, entries, answers, seed=seed)
            write_lines(run_dir / f"samples_{name}.jsonl", lines)
        else:
            loaded = load_judged(run_dir, name)
            result, rows = score_task(task, entries, answers, seed=seed, judged=loaded[1] if loaded else None)
            if loaded:
                result.notes.append(
                    f"Failed parses re-read by an LLM judge (strict parse first; {JUDGED_PREFIX}{name}.jsonl): judge "
                    f"{loaded[0].get('judge', {}).get('model', {}).get('adapter', '?')}; raw_status/raw_values keep the strict parse.")
            write_jsonl(run_dir / f"samples_{name}.jsonl", rows)
            answered, no_response, errors = row_counts([answers.get(e.key) for e in entries])
        tasks_out[name] = result
        counts.answered += answered
        counts.no_response += no_response
        counts.errors += errors

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
        inputs_digest=digest.result(),
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
