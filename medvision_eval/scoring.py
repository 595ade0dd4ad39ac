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
from .columnar import (NULL_COUNT, FORK, Answer, AnswerColumns, Forked, TaskColumns, Truths, _json_str, float_joined,
                       float_lists, float_texts, int_texts, read_inputs)
from .planstore import open_store
from .storescore import StaleStore, score_from_store
from .schema import ParseStatus, Prediction
from .store import (
    strict_dumps,
    PLAN,
    RESULTS,
    PlanEntry,
    ResponseRecord,
    _storable_bytes,
    atomic_write_pieces,
    atomic_write_text,
    secret_lines,
    write_jsonl,
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
    """The sample rows of a columnar task: iterating gives every line; :meth:`texts` the text of
    a range of them, a block at a time (so two processes can format the two halves)."""

    def __init__(self, cols: TaskColumns, found: list[Answer | None], status: list[str], detail: list[str | None],
                 values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
                 scores: dict[str, np.ndarray]) -> None:
        self.parts = (cols, found, status, detail, values, ok, shown, scores)
        self.n = len(cols)
        self.shown_rows = np.array(sorted(shown), dtype=np.int64)

    def lines(self, lo: int, hi: int) -> Iterator[str]:
        """Lines ``lo`` to ``hi``, formatted :data:`ROW_BLOCK` rows at a time (bounded memory)."""
        for start in range(lo, hi, ROW_BLOCK):
            yield from sample_lines(*self._block(start, min(hi, start + ROW_BLOCK)))

    def texts(self, lo: int, hi: int) -> Iterator[str]:
        """The text of lines ``lo`` to ``hi``, :data:`ROW_BLOCK` lines a piece."""
        for start in range(lo, hi, ROW_BLOCK):
            yield sample_text(*self._block(start, min(hi, start + ROW_BLOCK)))

    def _block(self, lo: int, hi: int) -> tuple:
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
        return cols, found, status, detail, values, ok, shown, scores

    def __iter__(self) -> Iterator[str]:
        return self.lines(0, self.n)


def _write_part(path: Path, rows: RowWriter, lo: int, hi: int) -> None:
    with open(path, "wb") as fh:
        for text in rows.texts(lo, hi):
            fh.write(_storable_bytes(text))


def write_texts(path: Path, texts: Iterator[str]) -> None:
    """:func:`.store.write_lines` of text pieces that each end at a line end: the file written
    atomically a piece at a time (masked, U+FFFD for lone surrogates, as each line would be), or,
    when a known secret spans lines, masked whole."""
    if secret_lines():
        atomic_write_text(path, "".join(texts))
        return
    atomic_write_pieces(path, (_storable_bytes(text) for text in texts))


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
            write_texts(self.path, rows.texts(0, rows.n))
            return
        second, half = self.second, self.split(rows.n)

        def pieces() -> Iterator[bytes]:
            for text in rows.texts(0, half):
                yield _storable_bytes(text)
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


# -- the lines of a samples file, column-wise ---------------------------------------------------
#
# A line is ``strict_dumps(row_of(...)) + "\n"``: constant JSON text between the JSON texts of the
# row's fields. Each field's texts are made for a whole block of rows at once (one orjson call or
# one split of a byte buffer per column); the lines are assembled by interleaving the constant
# pieces and the columns into one list and joining it once (:func:`assemble_rows`). A row holding
# a non-finite number, or text UTF-8 cannot encode, is written by ``strict_dumps`` itself (``null``
# plus ``null_reasons``, U+FFFD): such rows are collected in a ``bad`` set by the functions that
# make the texts. Each part of a line is given as a *layout*: a list of constant texts (str) and
# columns (a list with one text per row). A field that has the same text in every row of the block
# is given as a constant, and a string field every row has is given without its quotes (they are
# constants): the fewer pieces a line has, the less there is to join.

_NULL_USAGE = '{"prompt_tokens": null, "completion_tokens": null}'
_NO_RESPONSE_TEXT = _json_str(NO_RESPONSE)
Column = "list[str] | str | Coded"  # a field's text in each row, the one text of every row, or coded texts


@dataclasses.dataclass
class PlanTexts:
    """The plan's fields of a block of rows (what no answer changes): JSON texts, except ``ids``,
    ``keys`` and ``prompt_hashes``, which are the insides of their JSON strings (no quotes), and
    ``truths``, written with the metrics (:func:`tail_layout`). ``key_hashes``, when set, is each
    row's key and prompt hash as one text (in place of ``keys`` and ``prompt_hashes``)."""

    ids: list[str]
    configs: Column
    datasets: Column
    indexes: list[str]
    labels: Column
    keys: list[str]
    prompt_hashes: list[str]
    truths: Truths
    units: Column
    key_hashes: list[str] | None = None


KEY_TO_HASH = '", "prompt_hash": "'  # between a key's text and its prompt hash's in a line


def plan_texts(cols: TaskColumns, bad: set[int]) -> PlanTexts:
    """:class:`PlanTexts` of the rows of ``cols``."""
    return PlanTexts(inner_strings(cols.ids, bad), categorical(cols.configs, bad), categorical(cols.datasets, bad),
                     int_texts(cols.indexes), categorical(cols.labels, bad), inner_strings(cols.keys, bad),
                     inner_strings(cols.prompt_hashes, bad), cols.truths, categorical(cols.units, bad))


def plan_layout(plan: PlanTexts) -> list:
    """The pieces of a line up to its ``"response"`` field."""
    keys = [plan.key_hashes] if plan.key_hashes is not None else [plan.keys, KEY_TO_HASH, plan.prompt_hashes]
    return ['{"id": "', plan.ids, '", "config": ', plan.configs, ', "dataset": ', plan.datasets, ', "index": ',
            plan.indexes, ', "label": ', plan.labels, ', "key": "', *keys, '"']


def target_texts(truths: Truths, bad: set[int]) -> list[str]:
    """The JSON list of each row's true values; rows with a non-finite one are added to ``bad``."""
    width = truths.width()
    if width:
        matrix = np.frombuffer(truths.flat, dtype=np.float64).reshape(len(truths), width)
        texts, _ = float_lists(matrix)
        bad.update(np.flatnonzero(~np.isfinite(matrix).all(axis=1)).tolist())
        return texts
    isfinite = math.isfinite
    texts = []
    for i, truth in enumerate(truths):
        texts.append("[" + ", ".join(map(repr, truth)) + "]")
        if not all(isfinite(t) for t in truth):
            bad.add(i)
    return texts


def response_layout(texts: list[str | None], bad: set[int]) -> list:
    """The ``"response"`` field's pieces from the answers' texts (None: ``null``)."""
    if None not in texts:
        return [', "response": "', inner_strings(texts, bad), '"']
    none_rows = [i for i, t in enumerate(texts) if t is None]
    out = json_strings([t if t is not None else "" for t in texts], bad)
    for i in none_rows:
        out[i] = "null"
    return [', "response": ', out]


def answer_layout(response: list, present: np.ndarray, errors: dict[int, str], latency: np.ndarray,
                  prompt_tokens: np.ndarray, completion_tokens: np.ndarray, exact: dict[int, Answer],
                  bad: set[int]) -> list:
    """The pieces of the answer's fields: ``response`` (its layout, made by the caller), error,
    latency and usage, from the columns of :class:`.columnar.AnswerColumns`."""
    n = len(present)
    if not n:
        return response
    absent = ~present
    everyone = not absent.any()
    error_texts: Column = "null" if everyone and not errors else \
        np.where(present, "null", _NO_RESPONSE_TEXT).astype(object).tolist()
    for i, e in errors.items():
        try:
            error_texts[i] = _json_str(e)
        except orjson.JSONEncodeError:
            bad.add(i)
            error_texts[i] = ""
    bad.update(np.flatnonzero(present & ~np.isfinite(latency)).tolist())
    latency_texts: Column
    if everyone and (latency == latency[0]).all():  # one latency (NaN never equals: not here)
        latency_texts = float_texts(latency[:1])[0][0]
    else:
        latency_texts, _ = float_texts(latency)
        if not everyone:
            latencies = np.array(latency_texts, dtype=object)
            latencies[absent] = "null"
            latency_texts = latencies.tolist()
    counted = np.flatnonzero(present & ((prompt_tokens != NULL_COUNT) | (completion_tokens != NULL_COUNT)))
    usages: Column = _NULL_USAGE
    if not everyone or len(counted) or exact:
        usages = np.where(present, _NULL_USAGE, "null").astype(object).tolist()
        for i in counted.tolist() + list(exact):
            if i in exact:
                prompt, completion = exact[i][3], exact[i][4]
            else:
                pt, ct = int(prompt_tokens[i]), int(completion_tokens[i])
                prompt, completion = None if pt == NULL_COUNT else pt, None if ct == NULL_COUNT else ct
            usages[i] = '{"prompt_tokens": %s, "completion_tokens": %s}' % (
                "null" if prompt is None else prompt, "null" if completion is None else completion)
    return response + [', "error": ', error_texts, ', "latency_s": ', latency_texts, ', "usage": ', usages]


def parse_layout(status: list[str], detail: list[str | None], values: np.ndarray, ok: np.ndarray,
                 shown: dict[int, tuple | None], bad: set[int]) -> list:
    """The pieces of the parse's fields (status, values, detail; from :func:`parse_and_score`)."""
    n = len(detail)
    # values: the parsed numbers of ok rows (finite by construction), null elsewhere
    lists, inf = float_lists(np.where(ok[:, None], values, 0.0))
    bad.update(np.flatnonzero(inf).tolist())
    if ok.all():
        vals = lists
    else:
        held = np.array(lists, dtype=object)
        held[~ok] = "null"
        vals = held.tolist()
    for i, v in shown.items():
        if v is None:
            vals[i] = "null"
        elif all(math.isfinite(x) for x in v):
            vals[i] = "[" + ", ".join(map(repr, map(float, v))) + "]"
        else:
            bad.add(i)
    states: Column = status[0] if status and status.count(status[0]) == n else status
    details: Column = "null"
    if detail.count(None) != n:  # few distinct details: each encoded once
        encoded: dict[str | None, str] = {None: "null"}
        for d in set(detail):
            if d is not None:
                try:
                    encoded[d] = _json_str(d)
                except orjson.JSONEncodeError:
                    encoded[d] = ""
        details = list(map(encoded.__getitem__, detail))
        if "" in encoded.values():
            bad.update(i for i, text in enumerate(details) if not text)
    return [', "status": "', states, '", "values": ', vals, ', "detail": ', details]


def tail_layout(truths: Truths, units: Column, scores: dict[str, np.ndarray], bad: set[int]) -> list:
    """The pieces of a line from ``, "target": `` to its end: the true values, the unit and the
    metrics (``null`` for NaN). Rows with a non-finite true value or an infinite metric are added
    to ``bad``. The numbers of a row are one text (:func:`.columnar.float_joined`): the true values
    and the metrics together when every row has the same unit and as many true values, else each
    part on its own."""
    n = len(truths)
    names = list(scores)
    heads = [_json_str(name) + ": " for name in names]
    metrics = np.column_stack([np.asarray(v, dtype=np.float64) for v in scores.values()]) if names else None
    joints = [", " + head for head in heads[1:]]
    width = truths.width()
    if width and isinstance(units, str) and names:  # one unit: a constant
        matrix = np.frombuffer(truths.flat, dtype=np.float64).reshape(n, width)
        bad.update(np.flatnonzero(~np.isfinite(matrix).all(axis=1)).tolist())
        middle = '], "unit": ' + units + ', "metrics": {' + heads[0]
        texts, inf = float_joined(np.hstack([matrix, metrics]), [", "] * (width - 1) + [middle] + joints, "[", "}")
        bad.update(np.flatnonzero(inf).tolist())
        return [', "target": ', texts, "}\n"]
    out = [', "target": ', target_texts(truths, bad), ', "unit": ', units, ', "metrics": {']
    if names:
        texts, inf = float_joined(metrics, joints, "", "}")
        bad.update(np.flatnonzero(inf).tolist())
        return out + [heads[0], texts, "}\n"]
    return out + ["}}\n"]


def numbers_layout(status: list[str], detail: list[str | None], values: np.ndarray, ok: np.ndarray,
                   shown: dict[int, tuple | None], truths: Truths, units: Column, scores: dict[str, np.ndarray],
                   bad: set[int]) -> list:
    """:func:`parse_layout` + :func:`tail_layout`: the pieces of a line from ``, "status"`` to its
    end. When every row has as many true values and one unit, each row's values, detail, true
    values and metrics are one text, from one :func:`.columnar.float_joined` call made as for a
    row parsed ok with no detail; the other rows (not ok, a detail, printed values that are not
    their matrix row) have their values and detail put in front of that text's ``"target"`` part."""
    n = len(status)
    names = list(scores)
    width = truths.width()
    k = values.shape[1] if values.ndim == 2 else 0
    if not (n and width and k and names and isinstance(units, str)):
        return parse_layout(status, detail, values, ok, shown, bad) + tail_layout(truths, units, scores, bad)
    heads = [_json_str(name) + ": " for name in names]
    matrix = np.frombuffer(truths.flat, dtype=np.float64).reshape(n, width)
    bad.update(np.flatnonzero(~np.isfinite(matrix).all(axis=1)).tolist())
    metrics = np.column_stack([np.asarray(v, dtype=np.float64) for v in scores.values()])
    joints = ([", "] * (k - 1) + ['], "detail": null, "target": ['] + [", "] * (width - 1)
              + ['], "unit": ' + units + ', "metrics": {' + heads[0]] + [", " + head for head in heads[1:]])
    texts, inf = float_joined(np.hstack([np.where(ok[:, None], values, 0.0), matrix, metrics]), joints, "[", "}")
    bad.update(np.flatnonzero(inf).tolist())
    others = set(shown).union(np.flatnonzero(~ok).tolist())
    if detail.count(None) != n:
        others.update(i for i, d in enumerate(detail) if d is not None)
    for i in others:
        text = texts[i]
        cut = text.index(', "target": ')  # after the values and the detail: numbers and null only
        if i in shown:
            v = shown[i]
            if v is None:
                vals = "null"
            elif all(math.isfinite(x) for x in v):
                vals = "[" + ", ".join(map(repr, map(float, v))) + "]"
            else:
                bad.add(i)
                vals = ""
        else:
            vals = text[:text.index('], "detail": ') + 1] if ok[i] else "null"
        d = detail[i]
        if d is None:
            note = "null"
        else:
            try:
                note = _json_str(d)
            except orjson.JSONEncodeError:
                bad.add(i)
                note = ""
        texts[i] = vals + ', "detail": ' + note + text[cut:]
    states: Column = status[0] if status.count(status[0]) == n else status
    return [', "status": "', states, '", "values": ', texts, "}\n"]


@dataclasses.dataclass
class Coded:
    """A column of few distinct texts: row i's text is ``table[codes[i]]`` (a coded plan column).
    Constants next to it in a line are joined into its table, and two coded columns with only
    constants between them into one (:func:`_merged`): a line has fewer pieces to join."""

    codes: np.ndarray
    table: list[str]

    def texts(self) -> list[str]:
        table = np.empty(len(self.table), dtype=object)
        table[:] = self.table
        return table[self.codes].tolist()

    def around(self, before: str, after: str) -> "Coded":
        return Coded(self.codes, [before + t + after for t in self.table])


CODED_TABLE = 4096  # the most texts a table of two coded columns joined into one may have


def _merged(layout: list) -> list:
    """``layout`` with neighbouring constants joined into one, constants joined into the coded
    column next to them, and neighbouring coded columns (with their table small) into one."""
    out: list = []
    for piece in layout:
        last = out[-1] if out else None
        if isinstance(piece, str) and isinstance(last, str):
            out[-1] = last + piece
        elif isinstance(piece, str) and isinstance(last, Coded):
            out[-1] = last.around("", piece)
        elif isinstance(piece, Coded) and isinstance(last, str) and len(out) > 1:  # the line's first piece stays
            out[-1] = piece.around(last, "")
        else:
            out.append(piece)
        if len(out) > 1 and isinstance(out[-1], Coded) and isinstance(out[-2], Coded) \
                and len(out[-2].table) * len(out[-1].table) <= CODED_TABLE:
            second = out.pop()
            first = out.pop()
            out.append(Coded(first.codes.astype(np.int64) * len(second.table) + second.codes,
                             [a + b for a in first.table for b in second.table]))
    return out


def assemble_rows(layout: list, n: int, strict: dict[int, str]) -> list[str]:
    """The pieces of ``n`` lines in file order (``"".join`` gives the text): the layout's pieces
    interleaved by slice assignment, no per-row Python code; rows in ``strict`` are that line."""
    layout = _merged(layout)
    m = len(layout)
    out: list = [""] * (n * m)
    for j, piece in enumerate(layout):
        out[j::m] = [piece] * n if isinstance(piece, str) else piece.texts() if isinstance(piece, Coded) else piece
    empty = [""] * (m - 1)
    for i, line in strict.items():
        out[i * m] = line
        out[i * m + 1:(i + 1) * m] = empty
    return out


def strict_lines(bad: set[int], cols: TaskColumns, found: AnswerColumns, status: list[str],
                 detail: list[str | None], values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
                 scores: dict[str, np.ndarray]) -> dict[int, str]:
    """The lines of rows ``bad``, by the reference definition ``strict_dumps(row_of(...)) + "\\n"``."""
    out = {}
    for i in sorted(bad):
        head = (cols.ids[i], cols.configs[i], cols.datasets[i], cols.indexes[i], cols.labels[i], cols.keys[i],
                cols.prompt_hashes[i])
        v = shown[i] if i in shown else (tuple(values[i].tolist()) if ok[i] else None)
        metrics = {name: column[i] for name, column in scores.items()}
        out[i] = strict_dumps(row_of(head, found[i], status[i], v, detail[i], metrics, cols.truths[i],
                                     cols.units[i])) + "\n"
    return out


def _sample_pieces(cols: TaskColumns, found: list[Answer | None] | AnswerColumns, status: list[str],
                   detail: list[str | None], values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
                   scores: dict[str, np.ndarray]) -> tuple[list, int]:
    ans = AnswerColumns.of(found)
    bad: set[int] = set()
    plan = plan_texts(cols, bad)
    layout = (plan_layout(plan)
              + answer_layout(response_layout(ans.texts, bad), ans.present, ans.errors, ans.latency,
                              ans.prompt_tokens, ans.completion_tokens, ans.exact, bad)
              + numbers_layout(status, detail, values, ok, shown, cols.truths, plan.units, scores, bad))
    strict = strict_lines(bad, cols, ans, status, detail, values, ok, shown, scores) if bad else {}
    return assemble_rows(layout, len(cols), strict), len(_merged(layout))


def sample_text(cols: TaskColumns, found: list[Answer | None] | AnswerColumns, status: list[str],
                detail: list[str | None], values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
                scores: dict[str, np.ndarray]) -> str:
    """The lines of ``samples_<task>.jsonl`` for these rows, joined: each exactly
    ``strict_dumps(row_of(...)) + "\\n"``."""
    pieces, _ = _sample_pieces(cols, found, status, detail, values, ok, shown, scores)
    return "".join(pieces)


def sample_lines(cols: TaskColumns, found: list[Answer | None] | AnswerColumns, status: list[str],
                 detail: list[str | None], values: np.ndarray, ok: np.ndarray, shown: dict[int, tuple | None],
                 scores: dict[str, np.ndarray]) -> list[str]:
    """:func:`sample_text` as one string per line."""
    pieces, m = _sample_pieces(cols, found, status, detail, values, ok, shown, scores)
    return ["".join(pieces[i:i + m]) for i in range(0, len(pieces), m)]


def inner_strings(values: list[str], bad: set[int]) -> list[str]:
    """The inside of ``json.dumps(v, ensure_ascii=False)`` (without its quotes) of each string:
    one orjson call for the whole column when no element needs an escape (no backslash in the
    output, so no quote inside an element: ``","`` only separates them), else one per element.
    An element UTF-8 cannot encode (a lone surrogate) is added to ``bad``."""
    if not values:
        return []
    try:
        blob = orjson.dumps(values)
    except orjson.JSONEncodeError:
        blob = None
    if blob is not None and b"\\" not in blob:
        return blob[2:-2].decode().split('","')
    out = []
    for i, v in enumerate(values):
        try:
            out.append(_json_str(v)[1:-1])
        except orjson.JSONEncodeError:
            bad.add(i)
            out.append("")
    return out


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


def categorical(values: list[str], bad: set[int]) -> Column:
    """:func:`json_strings` of a column with few distinct values (each encoded once); the one
    text when every row has the same value."""
    encoded: dict[str, str] = {}
    for v in set(values):
        try:
            encoded[v] = _json_str(v)
        except orjson.JSONEncodeError:
            encoded[v] = ""
    if any(text == "" for text in encoded.values()):
        bad.update(i for i, v in enumerate(values) if encoded[v] == "")
    elif len(encoded) == 1:
        return next(iter(encoded.values()))
    return list(map(encoded.__getitem__, values))


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
