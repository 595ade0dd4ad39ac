"""The score step from the plan's columns (:mod:`.planstore`): bounded memory, both cores.

:func:`medvision_eval.scoring.score_run` takes this path when ``plan.columns/`` matches
``plan.jsonl`` (size and mtime first; plan.jsonl's fingerprint as the columns' index records it,
computed in the same read as the inputs digest, before any output file is replaced) and every plan key is a
cache key (32 hex digits); otherwise it reads ``plan.jsonl`` as before. Both paths write the same
bytes.

- **Answers** are read once into arrays (:class:`AnswerTable`): each key as 16 bytes, the
  texts as one UTF-8 buffer with offsets, latency and token counts as numbers; errors and odd
  lines are kept as Python values (few). Two processes each read half of the response bytes.
  The plan's rows are joined to the answers by sorting keys (no dictionary of a million
  strings); of several answers to one key, the last completed one wins, else the last one (the
  rule of :func:`medvision_eval.columnar.read_answers`).
- **Rows** are handled in blocks of :data:`BLOCK_ROWS`: a block's answers are parsed and scored
  (per-sample metrics are row by row) by the same functions the JSONL path uses; its lines are
  laid out by the same functions too (:func:`medvision_eval.scoring.plan_layout` and the rest),
  with the plan's and the answers' texts made straight from the columns' bytes, so the lines are
  the same. On large tasks a forked process
  takes every other block and writes it into the same temporary file at the offset this process
  hands it; writeback to disk is started as blocks are written, so the final fsync has little
  left to do. The tables and intervals are computed from the gathered per-sample metrics
  while the file is synced.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import struct
import tempfile
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .columnar import (FORK, NULL_COUNT, Answer, AnswerColumns, TaskColumns, Truths, _json_str, int_texts, json_inner_texts,
                       line_boundary, lines_before, put_answer_numbers)
from .planstore import PlanStore, hex_keys
from .store import PlanEntry, _storable_bytes, load_model_line, response_files

BLOCK_ROWS = 8_192  # rows parsed and formatted at a time (bounds the memory a block needs)
PARALLEL_ROWS = 50_000  # a task with more rows is formatted by two processes
PARALLEL_ANSWER_BYTES = 8 << 20  # response files above this are read by two processes
_NULL = NULL_COUNT  # a token count that is null


# -- answers -----------------------------------------------------------------------------------

@dataclass
class AnswerTable:
    """Answers in file order (all response files, each from its first line to its last)."""

    hex_key: np.ndarray  # (m, 16) uint8; a key that is not 32 hex digits: zeros, and ``other_key`` set
    other_key: dict[int, str]
    text: np.ndarray  # uint8: the UTF-8 of the texts
    text_start: np.ndarray  # (m,) int64: answer i's text is text[text_start[i]:text_end[i]]
    text_end: np.ndarray
    has_text: np.ndarray  # bool: text is not None
    latency: np.ndarray  # float64
    prompt_tokens: np.ndarray  # int64, NULL_COUNT for None
    completion_tokens: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)  # answer -> its error (None elsewhere)
    exact: dict[int, Answer] = field(default_factory=dict)  # answers whose numbers the arrays cannot hold

    def __len__(self) -> int:
        return len(self.latency)

    @property
    def completed(self) -> np.ndarray:
        done = self.has_text.copy()
        if self.errors:
            done[np.fromiter(self.errors, dtype=np.int64, count=len(self.errors))] = False
        return done

    def answer(self, i: int, text: str | None) -> Answer:
        hit = self.exact.get(i)
        if hit is not None:
            return hit
        pt, ct = int(self.prompt_tokens[i]), int(self.completion_tokens[i])
        return (text, self.errors.get(i), float(self.latency[i]), None if pt == _NULL else pt,
                None if ct == _NULL else ct)

    def texts(self, ids: np.ndarray) -> list[str | None]:
        """The texts of answers ``ids`` (None where an answer has none)."""
        if not len(ids):
            return []
        starts, ends = self.text_start[ids], self.text_end[ids]
        lengths = ends - starts
        total = int(lengths.sum())
        bounds = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        if total:
            at = np.arange(total, dtype=np.int64) + np.repeat(starts - bounds[:-1], lengths)
            raw = self.text[at].tobytes()
        else:
            raw = b""
        cuts = zip(bounds[:-1].tolist(), bounds[1:].tolist())
        out: list[str | None]
        if raw.isascii():
            whole = raw.decode("ascii")
            out = [whole[a:b] for a, b in cuts]
        else:
            out = [raw[a:b].decode("utf-8") for a, b in cuts]
        for j in np.flatnonzero(~self.has_text[ids]).tolist():
            out[j] = None
        return out

    @staticmethod
    def concat(parts: list["AnswerTable"]) -> "AnswerTable":
        if len(parts) == 1:
            return parts[0]
        base, text_base = 0, 0
        other: dict[int, str] = {}
        errors: dict[int, str] = {}
        exact: dict[int, Answer] = {}
        starts, ends = [], []
        for p in parts:
            other.update({base + i: k for i, k in p.other_key.items()})
            errors.update({base + i: e for i, e in p.errors.items()})
            exact.update({base + i: a for i, a in p.exact.items()})
            starts.append(p.text_start + text_base)
            ends.append(p.text_end + text_base)
            base += len(p)
            text_base += len(p.text)
        return AnswerTable(
            hex_key=np.concatenate([p.hex_key for p in parts]), other_key=other,
            text=np.concatenate([p.text for p in parts]), text_start=np.concatenate(starts),
            text_end=np.concatenate(ends), has_text=np.concatenate([p.has_text for p in parts]),
            latency=np.concatenate([p.latency for p in parts]),
            prompt_tokens=np.concatenate([p.prompt_tokens for p in parts]),
            completion_tokens=np.concatenate([p.completion_tokens for p in parts]), errors=errors, exact=exact)


def _empty_table() -> AnswerTable:
    return AnswerTable(hex_key=np.zeros((0, 16), dtype=np.uint8), other_key={}, text=np.zeros(0, dtype=np.uint8),
                       text_start=np.zeros(0, dtype=np.int64), text_end=np.zeros(0, dtype=np.int64),
                       has_text=np.zeros(0, dtype=bool),
                       latency=np.zeros(0), prompt_tokens=np.zeros(0, dtype=np.int64),
                       completion_tokens=np.zeros(0, dtype=np.int64))


def scan_answers(ranges: list[tuple[Path, int, int | None]]) -> AnswerTable:
    """The answers of the response lines in ``ranges`` ((file, start, stop) byte ranges, each
    starting at a line start), in order: each line as :func:`.columnar.read_answers` reads it (the
    same fast path, the same validation and error, naming file and line, for any other line)."""
    from . import answerscan

    parts: list[AnswerTable] = []
    for path, start, stop in ranges:
        parts.extend(_scan_bulk(answerscan, path, start, stop))
    parts = [p for p in parts if len(p)]
    return AnswerTable.concat(parts) if parts else _empty_table()


SCAN_BLOCK = 1 << 24  # response bytes scanned at a time


def _scan_bulk(bulk: Any, path: Path, start: int, stop: int | None):
    """The answers of one byte range, a block at a time, with the bulk scanner; each block's
    lines it does not take are read exactly (:func:`answerscan.read_line_exactly`)."""
    base: list[int] = []  # lines before ``start`` (counted only if a line needs naming)

    def where(number: int) -> str:
        if not base:
            base.append(lines_before(path, start) if start else 0)
        return f"{path}:{base[0] + number}"

    with open(path, "rb") as fh:
        fh.seek(start)
        left = None if stop is None else stop - start
        rest = b""
        number = 0
        while left is None or left > 0:
            block = fh.read(SCAN_BLOCK if left is None else min(SCAN_BLOCK, left))
            if not block:
                break  # a torn last line (no newline) is skipped, as jsonl_lines does
            if left is not None:
                left -= len(block)
            data = rest + block if rest else block
            scan = bulk.scan_answers(data)
            rest = data[scan.consumed:]
            yield _table_of_scan(bulk, scan, lambda i: where(number + i + 1))
            number += scan.lines


def _table_of_scan(bulk: Any, scan: Any, where: Callable[[int], str]) -> AnswerTable:
    lines = scan.lines
    canon = np.asarray(scan.canonical, dtype=bool)
    keep = np.ones(lines, dtype=bool)
    odd: dict[int, tuple[str, Answer]] = {}
    for i in np.flatnonzero(~canon).tolist():
        found = bulk.read_line_exactly(scan.line(i), where(i))
        if found is None:
            keep[i] = False  # a blank line
        else:
            odd[i] = found
    blob, tstart, tend = scan.text_blob()
    text = np.frombuffer(blob, dtype=np.uint8) if blob else np.zeros(0, dtype=np.uint8)
    tstart = np.asarray(tstart, dtype=np.int64).copy()
    tend = np.asarray(tend, dtype=np.int64).copy()
    has_text = canon & (np.asarray(scan.text_start) >= 0)
    hexed = np.zeros((lines, 16), dtype=np.uint8)
    if canon.any():
        hexed[canon] = np.frombuffer(bytes.fromhex(np.asarray(scan.keys)[canon].tobytes().decode("ascii")),
                                     dtype=np.uint8).reshape(-1, 16)
    latency = np.asarray(scan.latency, dtype=np.float64).copy()
    pts = np.where(scan.prompt_tokens_null, _NULL, scan.prompt_tokens).astype(np.int64)
    cts = np.where(scan.completion_tokens_null, _NULL, scan.completion_tokens).astype(np.int64)
    errors: dict[int, str] = {}
    for i in np.flatnonzero(canon & (np.asarray(scan.error_start) >= 0)).tolist():
        errors[i] = scan.error(i)
    other: dict[int, str] = {}
    exact: dict[int, Answer] = {}
    # a count of exactly NULL_COUNT (-2**63, a valid int64) would read back as null: kept whole
    for i in np.flatnonzero(canon & (((scan.prompt_tokens == _NULL) & ~scan.prompt_tokens_null)
                                     | ((scan.completion_tokens == _NULL) & ~scan.completion_tokens_null))).tolist():
        exact[i] = scan.answer(i)[1]
    extra: list[bytes] = []
    extra_at = len(text)

    def put_text(i: int, value: str | None) -> None:
        nonlocal extra_at
        if value is None:
            has_text[i] = False
            tstart[i] = tend[i] = 0
            return
        raw = value.encode("utf-8")
        has_text[i] = True
        tstart[i], tend[i] = extra_at, extra_at + len(raw)
        extra.append(raw)
        extra_at += len(raw)

    for i in np.flatnonzero(canon & np.asarray(scan.text_escaped, dtype=bool)).tolist():
        put_text(i, scan.escaped_texts[i])
    for i, (key, answer) in odd.items():
        one = hex_keys([key]) if len(key) == 32 else None
        if one is None:
            other[i] = key
        else:
            hexed[i] = one[0]
        try:
            put_text(i, answer[0])
        except UnicodeEncodeError:  # lone surrogates: kept whole
            put_text(i, "")
            exact[i] = answer
    put_answer_numbers(odd, (answer for _, answer in odd.values()), errors, latency, pts, cts, exact)
    if extra:
        text = np.concatenate([text, np.frombuffer(b"".join(extra), dtype=np.uint8)])
    if not keep.all():
        new = np.cumsum(keep) - 1
        remap = lambda d: {int(new[i]): v for i, v in d.items() if keep[i]}  # noqa: E731
        other, errors, exact = remap(other), remap(errors), remap(exact)
        hexed, tstart, tend, has_text = hexed[keep], tstart[keep], tend[keep], has_text[keep]
        latency, pts, cts = latency[keep], pts[keep], cts[keep]
    return AnswerTable(hex_key=hexed, other_key=other, text=text, text_start=tstart, text_end=tend,
                       has_text=has_text, latency=latency, prompt_tokens=pts, completion_tokens=cts,
                       errors=errors, exact=exact)


def read_answer_table(run_dir: Path, *, parallel: bool) -> AnswerTable:
    """All answers of the run, in file order; with ``parallel`` a forked process reads the second
    half of the bytes."""
    paths = response_files(run_dir)
    sizes = [p.stat().st_size for p in paths]
    total = sum(sizes)
    if not parallel or not FORK or total <= PARALLEL_ANSWER_BYTES:
        return scan_answers([(p, 0, None) for p in paths])
    # split the bytes of all files in two at a line start
    half = total // 2
    first: list[tuple[Path, int, int | None]] = []
    second: list[tuple[Path, int, int | None]] = []
    seen = 0
    for path, size in zip(paths, sizes):
        if seen + size <= half:
            first.append((path, 0, None))
        elif seen >= half:
            second.append((path, 0, None))
        else:
            cut = line_boundary(path, half - seen)
            first.append((path, 0, cut))
            if cut < size:
                second.append((path, cut, None))
        seen += size
    from .columnar import Forked

    child = Forked(scan_answers, second)
    try:
        head = scan_answers(first)
    except BaseException:
        child.discard()
        raise
    return AnswerTable.concat([head, child.result()])


def join_answers(plan_keys: np.ndarray, answers: AnswerTable) -> np.ndarray:
    """For each plan row (``plan_keys``: (n, 16) uint8), the index of its answer, or -1: of the
    answers to a key, the last completed one, else the last one; an answer whose key is no cache
    key (``other_key``) matches no row.

    Keys are compared as two native uint64 words (big-endian views, so word order is byte order).
    Answers are sorted by their first word; the few answers sharing a first word with another are
    resolved by one lexicographic sort of those alone (key, completed, file position: the last of
    each key is its winner). Plan rows are looked up in sorted order (a sorted search is
    sequential in memory, an unsorted one misses the cache on every row)."""
    n, m = len(plan_keys), len(answers)
    pick = np.full(n, -1, dtype=np.int64)
    if not n or not m:
        return pick
    pwords = np.ascontiguousarray(plan_keys).view(">u8")
    phi = pwords[:, 0].astype(np.uint64)
    if m == n and not answers.other_key and np.array_equal(answers.hex_key, plan_keys):
        first = np.sort(phi)
        if not (first[1:] == first[:-1]).any():  # answered in plan order, once each
            return np.arange(n, dtype=np.int64)
    words = np.ascontiguousarray(answers.hex_key).view(">u8")  # (m, 2)
    hi, lo = words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)
    if answers.other_key:  # keys that are no cache key match no plan row
        usable = np.ones(m, dtype=bool)
        usable[np.fromiter(answers.other_key, dtype=np.int64, count=len(answers.other_key))] = False
        ids = np.flatnonzero(usable)
        order = ids[np.argsort(hi[ids])]
        if not len(order):
            return pick
    else:
        order = np.argsort(hi)
    shi = hi[order]
    same = shi[1:] == shi[:-1]
    if same.any():  # answers sharing a first word (duplicates, rarely distinct keys): winners
        shared = np.zeros(len(order), dtype=bool)
        shared[1:] = same
        shared[:-1] |= same
        sub = order[shared]
        sub = sub[np.lexsort((sub, answers.completed[sub], lo[sub], hi[sub]))]
        last = np.ones(len(sub), dtype=bool)
        last[:-1] = (hi[sub[1:]] != hi[sub[:-1]]) | (lo[sub[1:]] != lo[sub[:-1]])
        winners = np.concatenate([order[~shared], sub[last]])
        winners = winners[np.argsort(hi[winners], kind="stable")]
        whi = hi[winners]
    else:
        winners, whi = order, shi
    prow = np.argsort(phi)
    sphi = phi[prow]
    at = np.searchsorted(whi, sphi)
    at_ok = np.minimum(at, len(whi) - 1)
    found = (at < len(whi)) & (whi[at_ok] == sphi)
    cand = winners[at_ok]
    plo = pwords[:, 1].astype(np.uint64)
    hit = found & (lo[cand] == plo[prow])
    pick[prow[hit]] = cand[hit]
    if len(whi) > 1 and (whi[1:] == whi[:-1]).any():  # distinct keys sharing a first word: the rest
        for j in np.flatnonzero(found & ~hit).tolist():
            r, k = int(prow[j]), int(at[j]) + 1
            while k < len(whi) and whi[k] == sphi[j]:
                if lo[winners[k]] == plo[r]:
                    pick[r] = winners[k]
                    break
                k += 1
    return pick


# -- the plan side ----------------------------------------------------------------------------

def task_rows(store: PlanStore) -> dict[str, np.ndarray]:
    """Each task's plan rows, in plan order, tasks in order of first appearance."""
    codes = np.asarray(store["task"])
    names = store.tables["task"]
    present, first = np.unique(codes, return_index=True)
    out = {}
    for code in present[np.argsort(first)].tolist():
        out[names[code]] = np.flatnonzero(codes == code)
    return out


@dataclass
class TaskPlan:
    """One columnar task's rows from the store."""

    name: str
    rows: np.ndarray  # plan rows, plan order
    codes: np.ndarray  # task-local profile code of each row
    profiles: list  # one validated Sample per task-local profile
    store: PlanStore
    full_precision: bool  # the protocol scores full-precision targets

    def truths(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(flat float64 values, offsets from 0) of the true values of the task's rows ``lo:hi``,
        read from the store when a block needs them (never gathered for the whole task)."""
        return self.store.truths(self.rows[lo:hi], self.full_precision)


def first_indexes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_index=True)``: the distinct values, ascending, and where each
    first occurs; for small non-negative codes (profile codes) without a sort."""
    n = len(codes)
    if not n or int(codes.min()) < 0 or int(codes.max()) > 4 * n + 1024:
        return np.unique(codes, return_index=True)
    first = np.full(int(codes.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first, codes, np.arange(n, dtype=np.int64))
    used = np.flatnonzero(first < n)
    return used.astype(codes.dtype), first[used]


def _rows_slice(rows: np.ndarray) -> slice | None:
    """``rows`` as a slice when they are consecutive and ascending (one task's rows of a one-task plan)."""
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows) and bool(np.all(np.diff(rows) == 1)):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return None


def task_plan(store: PlanStore, plan_path: Path, name: str, rows: np.ndarray, full_precision: bool) -> TaskPlan:
    run = _rows_slice(rows)
    global_codes = np.asarray(store["profile"])[run if run is not None else rows]
    used, first = first_indexes(global_codes)
    order = np.argsort(first, kind="stable")  # profiles in order of first appearance, as the JSONL reader
    local = np.empty(int(used.max()) + 1 if len(used) else 0, dtype=np.int64)
    local[used[order]] = np.arange(len(used))
    profiles = [load_model_line(PlanEntry, store.line(plan_path, int(rows[first[j]])).decode("utf-8")).sample
                for j in order.tolist()]
    return TaskPlan(name, rows, local[global_codes] if len(rows) else np.zeros(0, dtype=np.int64), profiles,
                    store, full_precision)


def id_order(id_rank: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions of ``rows`` sorted by their ``id_rank`` (stable): what
    ``np.argsort(id_rank[rows], kind="stable")`` gives, without a sort when the ranks of ``rows``
    are distinct (the store's ``id_rank`` is a permutation): each rank scattered to its slot."""
    ranks = np.asarray(id_rank)[rows].astype(np.int64, copy=False)
    total = len(id_rank)
    if not len(ranks) or int(ranks.min()) < 0 or int(ranks.max()) >= total:
        return np.argsort(ranks, kind="stable")
    slot = np.full(total, -1, dtype=np.int64)
    slot[ranks] = np.arange(len(ranks), dtype=np.int64)
    order = slot[slot >= 0]
    if len(order) != len(ranks):  # a repeated rank: the sort decides the order of equals
        return np.argsort(ranks, kind="stable")
    return order


def entries_of(store: PlanStore, plan_path: Path, rows: np.ndarray) -> list[PlanEntry]:
    """The validated plan entries of ``rows`` (for tasks the score step keeps as objects)."""
    out = []
    with open(plan_path, "rb") as fh:
        offsets = store["line"]
        for r in rows.tolist():
            start, end = int(offsets[r]), int(offsets[r + 1])
            fh.seek(start)
            out.append(load_model_line(PlanEntry, fh.read(end - start).rstrip(b"\n").decode("utf-8")))
    return out


def block_columns(store: PlanStore, plan: TaskPlan, lo: int, hi: int, *, for_parse: bool = False) -> TaskColumns:
    """Rows ``lo:hi`` of the task as the JSONL path's :class:`TaskColumns` (only the block);
    ``for_parse``: only what parsing and scoring read (profiles, codes, true values)."""
    rows = plan.rows[lo:hi]
    tables = store.tables
    flat, offsets = plan.truths(lo, hi)
    truths = Truths(array("d", flat.tobytes()), array("q", offsets.tobytes()))
    codes = array("q", plan.codes[lo:hi].astype(np.int64).tobytes())
    if for_parse:
        return TaskColumns(ids=[""] * len(rows), truths=truths, codes=codes, profiles=plan.profiles)

    def coded(name: str) -> list[str]:
        table = np.empty(len(tables[name]), dtype=object)
        table[:] = tables[name]
        return table[np.asarray(store[name])[rows]].tolist()

    return TaskColumns(
        ids=store.texts("id", rows), configs=coded("config"), datasets=coded("dataset"),
        indexes=np.asarray(store["index"])[rows].tolist(), labels=coded("label"), keys=store.texts("key", rows),
        prompt_hashes=store.texts("prompt_hash", rows), units=coded("unit"), truths=truths,
        box_ratios=array("d", np.asarray(store["box_ratio"])[rows].tobytes()), codes=codes, profiles=plan.profiles)


def block_answers(answers: AnswerTable, pick: np.ndarray) -> AnswerColumns:
    """The answers of rows whose answer ids are ``pick`` (-1: none), as columns."""
    n = len(pick)
    present = pick >= 0
    have = np.flatnonzero(present)
    ids = pick[have]
    texts: list[str | None] = [None] * n
    for j, text in zip(have.tolist(), answers.texts(ids)):
        texts[j] = text
    latency = np.zeros(n)
    latency[have] = answers.latency[ids]
    pts = np.full(n, NULL_COUNT, dtype=np.int64)
    cts = np.full(n, NULL_COUNT, dtype=np.int64)
    pts[have] = answers.prompt_tokens[ids]
    cts[have] = answers.completion_tokens[ids]
    errors: dict[int, str] = {}
    exact: dict[int, Answer] = {}
    for table, out in ((answers.errors, errors), (answers.exact, exact)):
        if table:
            hit = np.isin(ids, np.fromiter(table, dtype=np.int64, count=len(table)))
            for j, i in zip(have[hit].tolist(), ids[hit].tolist()):
                out[j] = table[i]
    for j, a in exact.items():  # kept whole: its text too
        texts[j] = a[0]
    return AnswerColumns(present, texts, errors, latency, pts, cts, exact)


# -- one block: parse and score; then format -----------------------------------------------------

@dataclass
class Parsed:
    """A block's parse and per-sample metrics (what its rows need, with the block's columns and
    answers, to be formatted)."""

    status: list[str]
    detail: list[str | None]
    values: np.ndarray
    ok: np.ndarray
    shown: dict[int, tuple | None]
    scores: dict[str, np.ndarray]
    counts: tuple[int, int, int]


def parse_block(task: Any, store: PlanStore, plan: TaskPlan, answers: AnswerTable, pick: np.ndarray,
                lo: int, hi: int) -> Parsed:
    from .scoring import parse_and_score, row_counts

    cols = block_columns(store, plan, lo, hi, for_parse=True)
    found = block_answers(answers, pick[plan.rows[lo:hi]])
    status, detail, values, ok, shown, scores = parse_and_score(task, cols, found)
    return Parsed(status, detail, values, ok, shown, {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()},
                  row_counts(found))


def parse_blocks(task: Any, store: PlanStore, plan: TaskPlan, answers: AnswerTable, pick: np.ndarray,
                 blocks: list[tuple[int, int]], *, parallel: bool) -> list[Parsed]:
    """Every block parsed and scored; with ``parallel``, a forked process takes the second half."""
    from .columnar import Forked

    def run(part: list[tuple[int, int]]) -> list[Parsed]:
        return [parse_block(task, store, plan, answers, pick, lo, hi) for lo, hi in part]

    if not parallel or not FORK or len(blocks) < 2:
        return run(blocks)
    half = len(blocks) // 2
    child = Forked(run, blocks[half:])
    try:
        mine = run(blocks[:half])
    except BaseException:
        child.discard()
        raise
    return mine + child.result()


def format_block(store: PlanStore, plan: TaskPlan, answers: AnswerTable, pick: np.ndarray, parsed: Parsed,
                 lo: int, hi: int) -> bytes:
    """The samples file's bytes of rows ``lo:hi``: exactly the plan.jsonl path's lines
    (:func:`medvision_eval.scoring.sample_text`), with the plan's and the answers' texts made
    straight from the columns (UTF-8 bytes to JSON text, no Python object per field in between).
    Rows written by ``strict_dumps`` (a non-finite number, unencodable text) are made from the
    block's :func:`block_columns` and :func:`block_answers`, as the plan.jsonl path makes them."""
    from .scoring import assemble_rows, numbers_layout, plan_layout, strict_lines

    p = parsed
    ids = pick[plan.rows[lo:hi]]
    bad: set[int] = set()
    texts = block_plan_texts(store, plan, lo, hi, bad)
    layout = (plan_layout(texts) + block_answer_layout(answers, ids, bad)
              + numbers_layout(p.status, p.detail, p.values, p.ok, p.shown, texts.truths, texts.units, p.scores, bad))
    strict: dict[int, str] = {}
    if bad:
        strict = strict_lines(bad, block_columns(store, plan, lo, hi), block_answers(answers, ids), p.status, p.detail,
                              p.values, p.ok, p.shown, p.scores)
    return _storable_bytes("".join(assemble_rows(layout, hi - lo, strict)))


def block_plan_texts(store: PlanStore, plan: TaskPlan, lo: int, hi: int, bad: set[int]) -> Any:
    """:class:`medvision_eval.scoring.PlanTexts` of rows ``lo:hi`` of the task, from the columns."""
    from .scoring import KEY_TO_HASH, Coded, PlanTexts

    rows = plan.rows[lo:hi]
    flat, offsets = plan.truths(lo, hi)
    truths = Truths(array("d", flat.tobytes()), array("q", offsets.tobytes()))

    def coded(name: str) -> Any:
        table = store.json_table(name)
        codes = np.asarray(store[name])[rows]
        if len(codes) and table[codes[0]] and (codes == codes[0]).all():
            return table[codes[0]]  # the same in every row
        if "" in table:  # a text JSON cannot hold (not in a store: no columns then); kept exact anyway
            unencodable = np.array([not t for t in table], dtype=bool)
            bad.update(np.flatnonzero(unencodable[codes]).tolist())
        return Coded(codes, table)

    key_hashes = store.key_and_hash_texts(rows, KEY_TO_HASH)
    keys, hashes = ([], []) if key_hashes is not None else (store.json_texts("key", rows),
                                                            store.json_texts("prompt_hash", rows))
    return PlanTexts(store.json_texts("id", rows), coded("config"), coded("dataset"),
                     int_texts(np.asarray(store["index"])[rows]), coded("label"), keys, hashes, truths, coded("unit"),
                     key_hashes)


def block_answer_layout(answers: AnswerTable, ids: np.ndarray, bad: set[int]) -> list:
    """:func:`medvision_eval.scoring.answer_layout` of the rows whose answer ids are ``ids`` (-1:
    none): the same columns :func:`block_answers` gives, the response texts made from the UTF-8
    bytes of the answer table (:func:`.columnar.json_inner_texts`)."""
    from .scoring import answer_layout

    n = len(ids)
    present = ids >= 0
    have = np.flatnonzero(present)
    picked = ids[have]
    with_text = answers.has_text[picked]
    rows, texts_of = have[with_text], picked[with_text]
    inner: list[str | None] = json_inner_texts(answers.text, answers.text_start[texts_of], answers.text_end[texts_of])
    if len(rows) != n:
        spread: list[str | None] = [None] * n
        for j, text in zip(rows.tolist(), inner):
            spread[j] = text
        inner = spread
    latency = np.zeros(n)
    latency[have] = answers.latency[picked]
    pts = np.full(n, NULL_COUNT, dtype=np.int64)
    cts = np.full(n, NULL_COUNT, dtype=np.int64)
    pts[have] = answers.prompt_tokens[picked]
    cts[have] = answers.completion_tokens[picked]
    errors: dict[int, str] = {}
    exact: dict[int, Answer] = {}
    for table, out in ((answers.errors, errors), (answers.exact, exact)):
        if table:
            hit = np.isin(picked, np.fromiter(table, dtype=np.int64, count=len(table)))
            for j, i in zip(have[hit].tolist(), picked[hit].tolist()):
                out[j] = table[i]
    for j, a in exact.items():  # kept whole: its text too
        if a[0] is None:
            inner[j] = None
        else:
            try:
                inner[j] = _json_str(a[0])[1:-1]
            except orjson.JSONEncodeError:
                bad.add(j)
                inner[j] = ""
    if None in inner:
        response = [', "response": ', ["null" if t is None else '"' + t + '"' for t in inner]]
    else:
        response = [', "response": "', inner, '"']
    return answer_layout(response, present, errors, latency, pts, cts, exact, bad)


# -- memory ----------------------------------------------------------------------------------------

def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).
    Called before forking: glibc keeps freed blocks (its mmap threshold grows to the largest block
    freed), and a forked child shares that dead memory, so the answers' and the join's temporaries
    would stay resident for the rest of the step."""
    if not FORK:
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


# -- writing a samples file with two processes -------------------------------------------------

_libc = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk now (``sync_file_range``, Linux), so a
    later fsync has little left to wait for. A no-op where unavailable."""
    global _libc
    if not FORK or length <= 0:
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        _libc.sync_file_range(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE
    except (OSError, AttributeError):
        _libc = False  # type: ignore[assignment]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError("the row-writing process ended early")
        out += chunk
    return out


class BlockFile:
    """A samples file written block by block into a temporary file (the same temporary names
    and permissions as :func:`medvision_eval.store.atomic_write_text`), synced on a thread, then
    renamed into place by :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        self.fd, self.tmp = fd, Path(tmp)
        self.size = 0
        self._sync: threading.Thread | None = None
        self._sync_error: BaseException | None = None

    def write_at(self, data: bytes, offset: int) -> None:
        _pwrite_all(self.fd, data, offset)
        start_writeback(self.fd, offset, len(data))

    def sync_in_background(self) -> None:
        def run() -> None:
            try:
                os.fsync(self.fd)
            except BaseException as exc:  # re-raised by commit()
                self._sync_error = exc

        self._sync = threading.Thread(target=run, name="samples-fsync", daemon=True)
        self._sync.start()

    def wait(self) -> None:
        if self._sync is not None:
            self._sync.join()
            self._sync = None
        if self._sync_error is not None:
            raise self._sync_error

    def commit(self) -> None:
        if self._sync is None:
            os.fsync(self.fd)
        self.wait()
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        try:
            self.wait()
        except BaseException:
            pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


def write_blocks(out: BlockFile, blocks: list[tuple[int, int]], make: Callable[[int], bytes], *,
                 parallel: bool) -> None:
    """Every block's bytes (``make(j)``) into ``out`` in order. With ``parallel``, a forked process
    makes every other block and writes it at the offset this process sends it."""
    if not parallel or not FORK or len(blocks) < 2:
        for j in range(len(blocks)):
            data = make(j)
            out.write_at(data, out.size)
            out.size += len(data)
        return
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: odd blocks
        code = 0
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            os.close(result_r)
            for j in range(1, len(blocks), 2):
                data = make(j)
                offset = struct.unpack("<q", _read_exact(to_child_r, 8))[0]
                out.write_at(data, offset)
                os.write(to_parent_w, struct.pack("<q", offset + len(data)))
            payload = pickle.dumps(("value", None), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:
            code = 1
            try:
                payload = pickle.dumps(("error", exc), protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException:
                payload = pickle.dumps(("error", RuntimeError(f"row-writing process failed: {exc!r}")))
        try:
            with os.fdopen(result_w, "wb") as fh:
                fh.write(payload)
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    os.close(result_w)
    try:
        try:
            for j in range(0, len(blocks), 2):
                data = make(j)
                out.write_at(data, out.size)
                out.size += len(data)
                if j + 1 < len(blocks):
                    os.write(to_child_w, struct.pack("<q", out.size))
                    out.size = struct.unpack("<q", _read_exact(to_parent_r, 8))[0]
        except EOFError:  # the child stopped: raise what it raised
            with os.fdopen(result_r, "rb") as fh:
                result_r = -1
                data = fh.read()
            kind, value = pickle.loads(data) if data else ("error", RuntimeError("the row-writing process died"))
            raise value if kind == "error" else RuntimeError("the row-writing process ended early")
        with os.fdopen(result_r, "rb") as fh:
            result_r = -1
            kind, value = pickle.loads(fh.read())
        os.waitpid(pid, 0)
        pid = 0
        if kind == "error":
            raise value
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
        for fd in (to_child_w, to_parent_r) + ((result_r,) if result_r >= 0 else ()):
            try:
                os.close(fd)
            except OSError:
                pass


# -- the whole step ------------------------------------------------------------------------------

def table_result(task: Any, store: PlanStore, plan: TaskPlan, parsed: list[Parsed], seed: int) -> Any:
    """``task.result`` of a columnar task: its samples (as profiles) and per-sample scores in
    sample-id order, gathered from the parsed blocks, and the parse-status counts."""
    from .scoring import status_counts
    from .tasks.groups import ProfiledSamples

    def inputs() -> tuple[ProfiledSamples, dict[str, np.ndarray]]:
        order = id_order(np.asarray(store["id_rank"]), plan.rows)
        ordered = ProfiledSamples(plan.profiles, plan.codes[order], np.asarray(store["box_ratio"])[plan.rows][order])
        return ordered, {k: np.concatenate([p.scores[k] for p in parsed])[order] for k in parsed[0].scores}

    ordered, ordered_scores = inputs()  # (the order itself is not kept)
    store.release()  # the id ranks and box ratios read
    trim_heap()  # and the gathering's temporaries
    stats = status_counts(chain.from_iterable(p.status for p in parsed))
    return task.result(ordered, ordered_scores, stats, seed=seed)


class StaleStore(Exception):
    """The plan columns are not plan.jsonl's: score from plan.jsonl instead."""


def score_from_store(run_dir: Path, store: PlanStore, *, protocol: Any, seed: int, build: Callable[[str], Any],
                     is_columnar: Callable[[str], bool], verified: Callable[[], bool], parallel: bool,
                     score_objects: Callable[..., Any]) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """Score every task of the run from the plan columns; writes each samples file (after
    ``verified()`` confirmed plan.jsonl is the store's). Returns the task results and the
    (answered, no response, errors) counts. Raises :class:`StaleStore` when not verified."""
    from .columnar import Forked

    plan_path = run_dir / "plan.jsonl"
    checked = False

    def check() -> None:
        nonlocal checked
        if not checked:
            if not verified():
                raise StaleStore()
            checked = True

    answers = read_answer_table(run_dir, parallel=parallel)
    pick = join_answers(np.asarray(store["key.hex"]), answers)
    answers.hex_key = np.zeros((0, 16), dtype=np.uint8)  # joined: the keys are not read again
    store.release()  # (column pages are unmapped once read: see PlanStore.release)
    trim_heap()
    results: dict[str, Any] = {}
    answered = no_response = errors = 0
    for name, rows in task_rows(store).items():
        columnar = is_columnar(name)
        task = build(name)
        if not columnar:
            entries = entries_of(store, plan_path, rows)
            have = np.flatnonzero(pick[rows] >= 0)
            ids = pick[rows][have]
            mine = {entries[j].key: answers.answer(i, t)
                    for j, i, t in zip(have.tolist(), ids.tolist(), answers.texts(ids))}
            check()
            results[name], counted = score_objects(name, task, entries, mine)
        else:
            plan = task_plan(store, plan_path, name, rows, protocol.full_precision_targets)
            store.release()
            n = len(rows)
            blocks = [(lo, min(n, lo + BLOCK_ROWS)) for lo in range(0, n, BLOCK_ROWS)]
            two = parallel and n > PARALLEL_ROWS
            parsed = parse_blocks(task, store, plan, answers, pick, blocks, parallel=two)
            store.release()
            trim_heap()
            counted = tuple(sum(p.counts[i] for p in parsed) for i in range(3))
            # the tables and intervals in a forked process while two format and write the rows; it
            # gathers its id-ordered inputs itself, so the writing processes never hold them
            tables = Forked(table_result, task, store, plan, parsed, seed, parallel=two)

            def make(j: int) -> bytes:
                data = format_block(store, plan, answers, pick, parsed[j], *blocks[j])
                store.release()  # the block's column pages
                return data

            out = BlockFile(run_dir / f"samples_{name}.jsonl")
            try:
                write_blocks(out, blocks, make, parallel=two)
                out.sync_in_background()
                results[name] = tables.result()
                check()
                out.commit()
            except BaseException:
                tables.discard()
                out.discard()
                raise
        answered += counted[0]
        no_response += counted[1]
        errors += counted[2]
    check()
    return results, (answered, no_response, errors)
