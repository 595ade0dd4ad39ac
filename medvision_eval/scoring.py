"""The score step: parse and score stored responses, aggregate, write the run's outputs.

Needs no model and no data directory: ``plan.jsonl`` carries the samples and
``responses.jsonl`` the answers. Running it twice gives byte-identical metrics.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
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
from .rundigest import digests, inputs_digest  # one digest: the finished-rerun check reads it without this module
from .results import Counts, ModelRecord, RunRecord, RunResults, Selection, TaskResult, load_results, load_run_record
from .columnar import (NULL_COUNT, FORK, Answer, AnswerColumns, Forked, TaskColumns, _json_str, float_row_texts,
                       float_texts, read_inputs)
from .planstore import open_store
from .storescore import StaleStore, score_from_store
from .schema import ParseStatus, Prediction
from .store import (
    strict_dumps,
    PLAN,
    RESULTS,
    PlanEntry,
    ResponseRecord,
    atomic_write_pieces,
    atomic_write_text,
    secret_lines,
    storable_pieces,
    write_jsonl,
    write_lines,
)
from .tasks.base import Task
from .tasks.groups import ProfiledSamples
from .tasks.parsing import parse_last_k_many

NO_RESPONSE = "no response recorded (run interrupted or not yet predicted)"
PARALLEL_BYTES = 16 << 20  # a plan above this is read by two processes (with the answers)
ROW_BLOCK = 32_768  # rows formatted at a time
WRITE_SHARE = 0.4  # of a large samples file formatted by this process; the forked writer does the rest
PARALLEL_ROWS = 50_000  # a task with more samples has the second half of its rows formatted by a second process


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


def row_counts(answers: "Sequence[Answer | None] | AnswerColumns") -> tuple[int, int, int]:
    """(answered, no response, errors) of a task's rows: what ``Counts`` adds up."""
    if isinstance(answers, AnswerColumns):
        n, present = len(answers), answers.present
        erred = np.zeros(n, dtype=bool)
        told = np.zeros(n, dtype=bool)
        for i, e in answers.errors.items():
            erred[i] = True
            told[i] = e == NO_RESPONSE
        has_text = np.fromiter((t is not None for t in answers.texts), dtype=bool, count=n)
        answered = int((present & has_text & ~erred).sum())
        no_response = int((~present).sum() + (present & told).sum())
        return answered, no_response, n - answered - no_response
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
_NULL_USAGE = '{"prompt_tokens": null, "completion_tokens": null}'


def score_task_columns(task: Any, cols: TaskColumns, answers: Mapping[str, Answer] | list[Answer | None], *,
                       seed: int, rows_ready: Any = None):
    """:func:`score_task` of a ``columnar`` task from plan columns: the same result and the same
    sample rows (a :class:`RowWriter`), without a pydantic object per sample. ``rows_ready(rows)``
    is called as soon as the rows are known, before the tables and intervals are computed (so a
    second process can start writing them)."""
    result, rows, counts = _score_columns(task, cols, answers, seed=seed, rows_ready=rows_ready)
    return result, rows, counts


def _score_columns(task: Any, cols: TaskColumns, answers: Mapping[str, Answer] | list[Answer | None], *,
                   seed: int, rows_ready: Any = None):
    n = len(cols)
    codes = np.asarray(cols.codes, dtype=np.int64)
    found = answers if isinstance(answers, list) else [answers.get(key) for key in cols.keys]
    status, detail, values, ok, shown, scores = parse_and_score(task, cols, found)
    lines = RowWriter(cols, found, status, detail, values, ok, shown, scores)
    if rows_ready is not None:
        rows_ready(lines)
    order = np.array(sorted(range(n), key=cols.ids.__getitem__), dtype=np.int64)
    ordered = ProfiledSamples(cols.profiles, codes[order], np.asarray(cols.box_ratios, dtype=np.float64)[order])
    ordered_scores = {name: np.asarray(v, dtype=np.float64)[order] for name, v in scores.items()}
    result: TaskResult = task.result(ordered, ordered_scores, status_counts(status), seed=seed)
    return result, lines, row_counts(found)


def status_counts(status: list[str]) -> dict[str, int]:
    counted = Counter(status)
    return {value: int(counted.get(value, 0)) for value in STATUS_VALUES}


def parse_and_score(task: Any, cols: TaskColumns, found: list[Answer | None]):
    """Each row's parse (status, detail, values, ok mask, ``shown``: rows whose printed values are
    not their matrix row) and per-sample metrics; row by row independent, so any range of rows
    gives the rows' part of the whole."""
    n = len(cols)
    k = task.k
    codes = np.asarray(cols.codes, dtype=np.int64)
    status: list[str] = ["ok"] * n
    detail: list[str | None] = [None] * n
    shown: dict[int, tuple | None] = {}  # rows whose printed values are not their matrix row
    values = np.full((n, k), np.nan)
    ok = np.zeros(n, dtype=bool)
    ans = AnswerColumns.of(found)
    errors = ans.errors
    text_rows: list[int] = []
    texts: list[str] = []
    for i, (here, text) in enumerate(zip(ans.present.tolist(), ans.texts)):
        if not here:
            status[i], detail[i] = "error", NO_RESPONSE
        elif text is None or i in errors:
            status[i], detail[i] = "error", errors.get(i) or "empty response"
        else:
            text_rows.append(i)
            texts.append(text)
    rows_index = np.asarray(text_rows, dtype=np.int64)
    ks = {task.strict_rules(p).k for p in cols.profiles}
    if task.protocol.parser == "lastk" and ks == {k} and type(task).parse_for is Task.parse_for:
        for start in range(0, len(texts), ROW_BLOCK):  # in blocks: the tokens of a block at a time
            failures, parsed = parse_last_k_many(texts[start:start + ROW_BLOCK], k)
            where = rows_index[start:start + ROW_BLOCK]
            values[where] = parsed
            ok[where[~np.isnan(parsed).any(axis=1)]] = True
            for j, pred in enumerate(failures):
                if pred is not None:
                    i = text_rows[start + j]
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
    if n and cols.truths.width() == k:
        targets = cols.truths.matrix()
    else:  # Task.targets: NaN-padded, cut to k
        targets = np.full((n, k), np.nan)
        for i, truth in enumerate(cols.truths):
            targets[i, : min(k, len(truth))] = truth[:k]
    scores = task.score_matrix(values, ok, targets)
    return status, detail, values, ok, shown, scores


class RowWriter:
    """The sample rows of a columnar task: iterating gives every line; :meth:`lines` a range of them
    (so two processes can format the two halves)."""

    def __init__(self, cols: TaskColumns, found: list[Answer | None], status: list[str], detail: list[str | None],
                 values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
                 scores: dict[str, np.ndarray]) -> None:
        self.parts = (cols, found, status, detail, values, ok, shown, scores)
        self.n = len(cols)
        self.shown_rows = np.array(sorted(shown), dtype=np.int64)

    def lines(self, lo: int, hi: int) -> Iterator[str]:
        """Lines ``lo`` to ``hi``, formatted :data:`ROW_BLOCK` rows at a time (bounded memory)."""
        for start in range(lo, hi, ROW_BLOCK):
            yield from self._block(start, min(hi, start + ROW_BLOCK))

    def _block(self, lo: int, hi: int) -> Iterator[str]:
        cols, found, status, detail, values, ok, shown, scores = self.parts
        if (lo, hi) != (0, self.n):
            cut = slice(lo, hi)
            cols = dataclasses.replace(
                cols, ids=cols.ids[cut], configs=cols.configs[cut], datasets=cols.datasets[cut],
                indexes=cols.indexes[cut], labels=cols.labels[cut], keys=cols.keys[cut],
                prompt_hashes=cols.prompt_hashes[cut], units=cols.units[cut], truths=cols.truths[cut],
                box_ratios=cols.box_ratios[cut], codes=cols.codes[cut])
            first, last = np.searchsorted(self.shown_rows, [lo, hi])
            shown = {i - lo: shown[i] for i in self.shown_rows[first:last].tolist()}
            found, status, detail = found[cut], status[cut], detail[cut]
            values, ok = values[cut], ok[cut]
            scores = {name: v[cut] for name, v in scores.items()}
        return sample_lines(cols, found, status, detail, values, ok, shown, scores)

    def __iter__(self) -> Iterator[str]:
        return self.lines(0, self.n)


def _write_part(path: Path, rows: RowWriter, lo: int, hi: int) -> None:
    with open(path, "wb") as fh:
        for piece in storable_pieces(rows.lines(lo, hi)):
            fh.write(piece)


class RowsFile:
    """Writes a task's samples file. With ``parallel``, :meth:`start` forks a process that formats
    the second half of the rows into a temporary part file (cleaned like any interrupted temporary
    file) while this process goes on; :meth:`finish` writes the first half and appends the part."""

    def __init__(self, path: Path, *, parallel: bool) -> None:
        self.path = path
        self.parallel = parallel
        self.rows: RowWriter | None = None
        self.second: Forked | None = None
        self.part = path.parent / f".{path.name}.{os.getpid()}.part.tmp"

    def start(self, rows: RowWriter) -> None:
        self.rows = rows
        if self.parallel and rows.n >= 2:
            self.second = Forked(_write_part, self.part, rows, self.split(rows.n), rows.n)

    @staticmethod
    def split(n: int) -> int:
        """Rows this process formats (the rest go to the forked one, which starts while this one
        still computes the tables and intervals, so it takes the larger share)."""
        return max(1, int(n * WRITE_SHARE))

    def finish(self) -> None:
        rows = self.rows
        assert rows is not None
        if self.second is None:
            write_lines(self.path, rows)
            return
        second, half = self.second, self.split(rows.n)

        def pieces() -> Iterator[bytes]:
            yield from storable_pieces(rows.lines(0, half))
            second.result()
            with open(self.part, "rb") as fh:
                while block := fh.read(1 << 24):
                    yield block

        try:
            atomic_write_pieces(self.path, pieces())
        finally:
            self.part.unlink(missing_ok=True)


def write_rows(path: Path, rows: RowWriter, *, parallel: bool) -> None:
    """``write_lines(path, rows)``, the second half formatted by a forked process with ``parallel``."""
    out = RowsFile(path, parallel=parallel)
    out.start(rows)
    out.finish()


def _row_texts(cols: TaskColumns, found: list[Answer | None], status: list[str], detail: list[str | None],
               values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
               scores: dict[str, np.ndarray]) -> tuple[str, list[list], set[int]]:
    """The row template and its argument columns; rows that must be written by ``strict_dumps``."""
    n = len(cols)
    bad: set[int] = set()
    names = list(scores)
    metric_columns = []
    for name in names:
        texts, inf = float_texts(scores[name])
        metric_columns.append(texts)
        bad.update(np.flatnonzero(inf).tolist())
    # values: the parsed numbers of ok rows (finite by construction), null elsewhere
    value_rows, value_inf = float_row_texts(np.where(ok[:, None], values, 0.0))
    bad.update(np.flatnonzero(value_inf).tolist())
    vals = ["[" + v + "]" if good else "null" for v, good in zip(value_rows, ok.tolist())]
    for i, v in shown.items():
        if v is None:
            vals[i] = "null"
        elif all(math.isfinite(x) for x in v):
            vals[i] = "[" + ", ".join(map(repr, map(float, v))) + "]"
        else:
            bad.add(i)
    isfinite = math.isfinite
    width = cols.truths.width()
    if width:
        matrix = np.frombuffer(cols.truths.flat, dtype=np.float64).reshape(n, width)
        targets, _ = float_row_texts(matrix)
        bad.update(np.flatnonzero(~np.isfinite(matrix).all(axis=1)).tolist())
    else:
        targets = []
        for i, truth in enumerate(cols.truths):
            targets.append(", ".join(map(repr, truth)))
            if not all(isfinite(t) for t in truth):
                bad.add(i)
    ans = AnswerColumns.of(found)
    present = ans.present
    texts = ans.texts
    none_rows = [i for i, t in enumerate(texts) if t is None]
    responses = json_strings([t if t is not None else "" for t in texts] if none_rows else texts, bad)
    for i in none_rows:
        responses[i] = "null"
    no_response = _json_str(NO_RESPONSE)
    absent = ~present
    errors = np.where(present, "null", no_response).astype(object).tolist() if n else []
    for i, e in ans.errors.items():
        try:
            errors[i] = _json_str(e)
        except orjson.JSONEncodeError:
            bad.add(i)
            errors[i] = ""
    latency_texts, _ = float_texts(ans.latency)
    bad.update(np.flatnonzero(present & ~np.isfinite(ans.latency)).tolist())
    latencies = np.array(latency_texts, dtype=object)
    latencies[absent] = "null"
    latencies = latencies.tolist()
    usages = np.where(present, _NULL_USAGE, "null").astype(object).tolist() if n else []
    counted = np.flatnonzero(present & ((ans.prompt_tokens != NULL_COUNT) | (ans.completion_tokens != NULL_COUNT)))
    for i in counted.tolist() + list(ans.exact):
        _, _, _, prompt_tokens, completion_tokens = ans[i]
        usages[i] = '{"prompt_tokens": %s, "completion_tokens": %s}' % (
            "null" if prompt_tokens is None else prompt_tokens, "null" if completion_tokens is None else completion_tokens)
    details = ["null"] * n
    for i, d in enumerate(detail):
        if d is not None:
            try:
                details[i] = _json_str(d)
            except orjson.JSONEncodeError:
                bad.add(i)
                details[i] = ""
    metric_part = ", ".join(f"{_json_str(name)}: %s" for name in names)
    template = ('{"id": %s, "config": %s, "dataset": %s, "index": %d, "label": %s, "key": %s, "prompt_hash": %s, '
                '"response": %s, "error": %s, "latency_s": %s, "usage": %s, "status": "%s", "values": %s, '
                '"detail": %s, "target": [%s], "unit": %s, "metrics": {' + metric_part + '}}\n')
    columns = [json_strings(cols.ids, bad), categorical(cols.configs, bad), categorical(cols.datasets, bad),
               cols.indexes, categorical(cols.labels, bad), json_strings(cols.keys, bad),
               json_strings(cols.prompt_hashes, bad), responses, errors, latencies, usages, status, vals, details,
               targets, categorical(cols.units, bad), *metric_columns]
    return template, columns, bad


def json_strings(values: list[str], bad: set[int]) -> list[str]:
    """``json.dumps(v, ensure_ascii=False)`` of each string; one orjson call for the whole column
    when no element needs an escape (no backslash in the output), else one per element. An
    element UTF-8 cannot encode (a lone surrogate) is added to ``bad``."""
    if not values:
        return []
    try:
        blob = orjson.dumps(values)
    except orjson.JSONEncodeError:
        blob = None
    if blob is not None and b"\\" not in blob:  # no escapes: no NUL either, so it can mark the cuts
        return blob[1:-1].replace(b'","', b'"\x00"').decode().split("\x00")
    out = []
    for i, v in enumerate(values):
        try:
            out.append(_json_str(v))
        except orjson.JSONEncodeError:
            bad.add(i)
            out.append("")
    return out


def categorical(values: list[str], bad: set[int]) -> list[str]:
    """:func:`json_strings` of a column with few distinct values (each encoded once)."""
    encoded: dict[str, str] = {}
    for v in set(values):
        try:
            encoded[v] = _json_str(v)
        except orjson.JSONEncodeError:
            encoded[v] = ""
    if any(text == "" for text in encoded.values()):
        bad.update(i for i, v in enumerate(values) if encoded[v] == "")
    return list(map(encoded.__getitem__, values))


def sample_lines(cols: TaskColumns, found: list[Answer | None], status: list[str], detail: list[str | None],
                 values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
                 scores: dict[str, np.ndarray]) -> list[str]:
    """The lines of ``samples_<task>.jsonl``, each exactly ``strict_dumps(row_of(...)) + "\n"``:
    formatted column-wise; a row holding a non-finite number or text UTF-8 cannot encode is
    written by ``strict_dumps`` (``null`` plus ``null_reasons``, U+FFFD)."""
    found = AnswerColumns.of(found)
    template, columns, bad = _row_texts(cols, found, status, detail, values, ok, shown, scores)
    names = list(scores)
    lines = [template % args for args in zip(*columns)]
    for i in sorted(bad):
        head = (cols.ids[i], cols.configs[i], cols.datasets[i], cols.indexes[i], cols.labels[i], cols.keys[i],
                cols.prompt_hashes[i])
        v = shown[i] if i in shown else (tuple(values[i].tolist()) if ok[i] else None)
        metrics = {name: scores[name][i] for name in names}
        lines[i] = strict_dumps(row_of(head, found[i], status[i], v, detail[i], metrics, cols.truths[i],
                                       cols.units[i])) + "\n"
    return lines


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
    # Millions of small lists and tuples, none of them cyclic: the cyclic garbage collector would
    # re-scan them again and again as they grow (a third of the reading time at a million samples).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _score_run(Path(run_dir), registry)
    finally:
        if enabled:
            gc.enable()


def _score_run(run_dir: Path, registry: Registry | None) -> RunResults:
    record = load_run_record(run_dir)
    protocol = Protocol.model_validate(record.protocol)
    seed = record.config.seed
    registry = registry or Registry.discover()
    # Large runs (a fork costs milliseconds) use the second core: one process hashes the inputs,
    # another reads half of the answers (and, without plan columns, the plan's tail) and later
    # formats every other block of each large samples file. No threads run while forking.
    plan_path = run_dir / PLAN
    big = plan_path.exists() and plan_path.stat().st_size > PARALLEL_BYTES
    store = None if secret_lines() else open_store(run_dir)
    if store is not None and "key.hex" not in store:  # keys that are not cache keys: read the plan
        store = None
    # the inputs digest, and in the same read plan.jsonl's fingerprint as the plan columns recorded it
    digest = Forked(digests, run_dir, store.plan_hash if store is not None else None,
                    parallel=big or (store is not None and store.rows > PARALLEL_ROWS))
    built: dict[str, Any] = {}
    decide = _columnar(registry, protocol, run_dir, built)

    def build(name: str) -> Any:
        return built.get(name) or build_task(registry, name, protocol)

    scored = None
    if store is not None:
        try:
            scored = score_from_store(
                run_dir, store, protocol=protocol, seed=seed, build=build, is_columnar=decide,
                verified=lambda: digest.result()[1] == store.plan_digest, parallel=FORK and store.rows > PARALLEL_ROWS,
                score_objects=lambda name, task, entries, answers: _score_objects(run_dir, name, task, entries,
                                                                                  answers, seed))
        except StaleStore:
            scored = None
        except BaseException:
            try:
                fresh = digest.result()[1] == store.plan_digest
            except BaseException:
                fresh = True
            if fresh:
                digest.discard()
                raise
            scored = None  # plan.jsonl is not what the columns were made from: read it as before
    if scored is not None:
        tasks_out, (answered, no_response, errors) = scored
        counts = Counts(planned=store.rows, answered=answered, no_response=no_response, errors=errors)
    else:
        tasks_out, counts = _score_from_jsonl(run_dir, protocol, seed, built, decide, build, digest, big)

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
        inputs_digest=digest.result()[0],
        merged_from=record.merged_from,
    )
    # strict JSON: a non-finite metric is null, with its reason under "null_reasons" (JSON pointer -> why)
    text = strict_dumps(results.model_dump(mode="json"), indent=2) + "\n"
    atomic_write_text(run_dir / RESULTS, text)
    return RunResults.model_validate_json(text)  # exactly what the file holds (non-finite -> None)


def _score_objects(run_dir: Path, name: str, task: Any, entries: list[PlanEntry], answers: Mapping[str, Answer],
                   seed: int) -> tuple[TaskResult, tuple[int, int, int]]:
    """A task kept as validated entries (not columnar: a plugin family, judged answers): scored,
    its samples file written; returns its result and (answered, no response, errors)."""
    loaded = load_judged(run_dir, name)
    result, rows = score_task(task, entries, answers, seed=seed, judged=loaded[1] if loaded else None)
    if loaded:
        result.notes.append(
            f"Failed parses re-read by an LLM judge (strict parse first; {JUDGED_PREFIX}{name}.jsonl): judge "
            f"{loaded[0].get('judge', {}).get('model', {}).get('adapter', '?')}; raw_status/raw_values keep the strict parse.")
    write_jsonl(run_dir / f"samples_{name}.jsonl", rows)
    return result, row_counts([answers.get(e.key) for e in entries])


def _score_from_jsonl(run_dir: Path, protocol: Protocol, seed: int, built: dict[str, Any], decide: Any, build: Any,
                      digest: Forked, big: bool) -> tuple[dict[str, TaskResult], Counts]:
    """Every task scored from plan.jsonl itself (no plan columns, or stale ones)."""
    try:
        by_task, planned, answers = read_inputs(run_dir, decide, protocol.full_precision_targets, parallel=big)
    except BaseException:
        digest.discard()
        raise
    # each task's answers, in its plan order; then the table of all answers by key can go
    mine: dict[str, Any] = {
        name: [answers.get(key) for key in entries.keys] if isinstance(entries, TaskColumns)
        else {e.key: answers[e.key] for e in entries if e.key in answers}
        for name, entries in by_task.items()}
    del answers

    tasks_out: dict[str, TaskResult] = {}
    counts = Counts(planned=planned)
    for name, entries in by_task.items():
        task = build(name)
        answers = mine.pop(name)
        if isinstance(entries, TaskColumns):
            out = RowsFile(run_dir / f"samples_{name}.jsonl", parallel=len(entries) > PARALLEL_ROWS and not secret_lines())
            result, _, (answered, no_response, errors) = score_task_columns(task, entries, answers, seed=seed,
                                                                             rows_ready=out.start)
            out.finish()
        else:
            result, (answered, no_response, errors) = _score_objects(run_dir, name, task, entries, answers, seed)
        tasks_out[name] = result
        counts.answered += answered
        counts.no_response += no_response
        counts.errors += errors
    return tasks_out, counts


def legacy_selection(record: RunRecord) -> Selection:
    """What a run.json written before selections were recorded says about its samples."""
    return Selection(tasks=record.config.tasks, protocol=str(record.protocol.get("name")), limit=record.config.limit,
                     shard=record.config.shard, world_size=record.world_size, data_root=record.data_root)
