"""Columnar reading and writing for the score step, so that scoring a million answers is seconds.

The run directory stays what it is (``plan.jsonl`` and ``responses.jsonl``, one JSON object a
line, appended crash-safe, readable by anything). What changes is how the score step reads it:
each line is decoded with orjson and only the fields scoring needs are kept, in columns (ids,
keys, target values, ...), instead of one validated pydantic object per line. A line is taken on
this fast path only when every field the score step reads is present with exactly the JSON type
the models accept (for a response line: every field of the record; for a plan line: the fields
scoring reads -- the others, such as the image path or the prompt, change no number it writes and
are not checked there); anything else -- a coercible value, a ``null_reasons`` line, a lone
surrogate, a torn or garbage line -- is read by the models themselves
(:func:`medvision_eval.store.load_model_line`), so it is accepted, repaired or rejected exactly as
before, with the same error naming file and line.

Sample fields that only group samples into tables (label, modality, plane, the measurement's
kind, ...) are few-valued: each distinct combination (a *profile*) is validated into one
:class:`~medvision_eval.schema.Sample`, and samples carry a profile code. Tasks that summarise
through :class:`~medvision_eval.tasks.groups.ProfiledSamples` see exactly the values their
per-sample code would.

Samples files are written row by row in exactly the bytes of
``strict_dumps(row)`` (``json.dumps`` with ``", "``/``": "`` separators, ``ensure_ascii=False``,
``repr`` floats); a row holding a non-finite number or text that is not UTF-8 encodable is
written by ``strict_dumps`` itself (``null`` plus ``null_reasons``).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .schema import Sample
from .store import NULL_REASONS, PlanEntry, ResponseRecord, load_model_line, response_files

BLOCK = 1 << 24  # bytes read at a time: memory stays bounded whatever the file size
# Forked helper processes only on Linux (macOS system frameworks are not fork-safe; Windows has no fork).
FORK = sys.platform.startswith("linux") and hasattr(os, "fork")

# (text, error, latency_s, prompt_tokens, completion_tokens) of one stored answer
Answer = tuple[str | None, str | None, float, int | None, int | None]


def jsonl_lines(path: Path, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Complete, non-blank lines of a JSONL file with their numbers, read in blocks.

    Same lines as :func:`medvision_eval.store.iter_jsonl`: a torn final line (no newline) is skipped.
    ``start``/``stop``: only the bytes in that range (``start`` at a line start, ``stop`` just
    after a newline or None); line numbers then count from the range's first line."""
    number = 0
    rest = b""
    with open(path, "rb") as fh:
        fh.seek(start)
        left = None if stop is None else stop - start
        while True:
            block = fh.read(BLOCK if left is None else min(BLOCK, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            parts = (rest + block).split(b"\n") if rest else block.split(b"\n")
            rest = parts.pop()
            for raw in parts:
                number += 1
                if raw.strip():
                    yield number, raw


def lines_before(path: Path, offset: int) -> int:
    """The number of newlines in the first ``offset`` bytes of ``path`` (for a line number)."""
    count = 0
    with open(path, "rb") as fh:
        left = offset
        while left > 0:
            block = fh.read(min(BLOCK, left))
            if not block:
                break
            left -= len(block)
            count += block.count(b"\n")
    return count


def line_boundary(path: Path, near: int) -> int:
    """The offset just after the first newline at or after byte ``near`` (the file size if none)."""
    with open(path, "rb") as fh:
        fh.seek(near)
        offset = near
        while True:
            block = fh.read(1 << 16)
            if not block:
                return offset
            at = block.find(b"\n")
            if at >= 0:
                return offset + at + 1
            offset += len(block)


def _is_num(v: Any) -> bool:
    t = type(v)
    return t is float or t is int


def _opt_str(v: Any) -> bool:
    return v is None or type(v) is str


def _opt_int(v: Any) -> bool:
    return v is None or type(v) is int


# -- responses ---------------------------------------------------------------------------------

def _answer_fast(d: Any) -> tuple[str, Answer] | None:
    """(key, answer) of a response line whose fields have exactly the types the models accept."""
    try:
        r = d["response"]
        row = (d["key"], d["task"], d["sample_id"], d["prompt_hash"], r.get("text"), r.get("error"),
               r.get("latency_s", 0.0), r.get("usage", _NO_USAGE))
    except (KeyError, TypeError, AttributeError):
        return None
    key, task, sample_id, prompt_hash, text, error, latency, usage = row
    t = type(latency)
    if not (type(key) is str and type(task) is str and type(sample_id) is str and type(prompt_hash) is str
            and (text is None or type(text) is str) and (error is None or type(error) is str)
            and (t is float or t is int) and type(usage) is dict):
        return None
    if NULL_REASONS in d or d.get("surrogates") is not None:
        return None
    stamp = d.get("time", 0.0)
    t = type(stamp)
    if t is not float and t is not int:
        return None
    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not ((pt is None or type(pt) is int) and (ct is None or type(ct) is int)):
        return None
    return key, (text, error, float(latency), pt, ct)


_NO_USAGE: dict = {}


def _answer_of(record: ResponseRecord) -> Answer:
    r = record.response
    return (r.text, r.error, r.latency_s, r.usage.prompt_tokens, r.usage.completion_tokens)


NULL_COUNT = -(1 << 63)  # a token count that is null, in AnswerColumns


def put_answer_numbers(at: Iterable[int], answers: Iterable[Answer], errors: dict[int, str], latency: np.ndarray,
                       prompt_tokens: np.ndarray, completion_tokens: np.ndarray, exact: dict[int, Answer]) -> None:
    """Each answer's error, latency and token counts into the columns at its position ``at``
    (what :class:`AnswerColumns` and the score step's answer table hold): a null count as
    :data:`NULL_COUNT`; an answer with a count beyond int64 kept whole in ``exact`` (its counts
    null in the arrays). Texts are the caller's (each column keeps them its own way)."""
    for i, answer in zip(at, answers):
        _, error, lat, pt, ct = answer
        if error is not None:
            errors[i] = error
        latency[i] = lat
        if (pt is not None and not NULL_COUNT < pt < -NULL_COUNT) or (ct is not None and not NULL_COUNT < ct < -NULL_COUNT):
            exact[i] = answer
            pt = ct = None
        prompt_tokens[i] = NULL_COUNT if pt is None else pt
        completion_tokens[i] = NULL_COUNT if ct is None else ct


@dataclass
class AnswerColumns:
    """The answers of a range of rows as columns (what a list of :data:`Answer` or None holds):
    ``present`` (an answer is recorded), each row's text (None where absent or null), the rows
    whose error is set, latency, token counts (:data:`NULL_COUNT` for None); ``exact``: rows whose
    answer the arrays cannot hold (a token count beyond int64), kept whole."""

    present: np.ndarray
    texts: list[str | None]
    errors: dict[int, str]
    latency: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    exact: dict[int, Answer] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> Answer | None:
        if not self.present[i]:
            return None
        hit = self.exact.get(i)
        if hit is not None:
            return hit
        pt, ct = int(self.prompt_tokens[i]), int(self.completion_tokens[i])
        return (self.texts[i], self.errors.get(i), float(self.latency[i]), None if pt == NULL_COUNT else pt,
                None if ct == NULL_COUNT else ct)

    def cut(self, lo: int, hi: int) -> "AnswerColumns":
        return AnswerColumns(self.present[lo:hi], self.texts[lo:hi],
                             {i - lo: e for i, e in self.errors.items() if lo <= i < hi}, self.latency[lo:hi],
                             self.prompt_tokens[lo:hi], self.completion_tokens[lo:hi],
                             {i - lo: a for i, a in self.exact.items() if lo <= i < hi})

    @classmethod
    def of(cls, found: "list[Answer | None] | AnswerColumns") -> "AnswerColumns":
        if isinstance(found, AnswerColumns):
            return found
        n = len(found)
        present = np.zeros(n, dtype=bool)
        texts: list[str | None] = [None] * n
        errors: dict[int, str] = {}
        exact: dict[int, Answer] = {}
        latency = np.zeros(n)
        pts = np.full(n, NULL_COUNT, dtype=np.int64)
        cts = np.full(n, NULL_COUNT, dtype=np.int64)
        at = [i for i, a in enumerate(found) if a is not None]
        present[at] = True
        for i in at:
            texts[i] = found[i][0]
        put_answer_numbers(at, (found[i] for i in at), errors, latency, pts, cts, exact)
        return cls(present, texts, errors, latency, pts, cts, exact)


def read_answers(run_dir: Path) -> dict[str, Answer]:
    """Latest answer per cache key across all response files; completed answers win over errors
    (the rule of :func:`medvision_eval.store.load_responses`)."""
    best: dict[str, Answer] = {}
    loads = orjson.loads
    for path in response_files(run_dir):
        for number, raw in jsonl_lines(path):
            try:
                found = _answer_fast(loads(raw))
            except orjson.JSONDecodeError:
                found = None
            if found is None:
                try:  # undecodable bytes (a UnicodeDecodeError is a ValueError) name the line too
                    record = load_model_line(ResponseRecord, raw.decode("utf-8"))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not a valid response record: {exc}") from exc
                found = (record.key, _answer_of(record))
            key, answer = found
            old = best.get(key)
            # completed = error is None and text is not None
            if old is None or (answer[1] is None and answer[0] is not None) or not (old[1] is None and old[0] is not None):
                best[key] = answer
    return best


class Forked:
    """``fn(*args)`` computed in a forked child process while the caller goes on; :meth:`result`
    returns its value (or raises its exception), unpickled. Without ``os.fork`` (or when
    ``parallel`` is false) the call simply runs inline. The child only reads files and writes
    its pickled answer to a pipe; it shares nothing with the parent after the fork."""

    def __init__(self, fn: Callable[..., Any], *args: Any, parallel: bool = True) -> None:
        self._inline: tuple[str, Any] | None = None
        self._pid = 0
        self._fn, self._args = fn, args
        if not parallel or not FORK:
            self._inline = self._call(fn, args)
            return
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_end)
            code = 0
            try:
                data = pickle.dumps(self._call(fn, args), protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(write_end, "wb") as fh:
                    fh.write(data)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(write_end)
        self._pid = pid
        self._read_end = read_end

    @staticmethod
    def _call(fn: Callable[..., Any], args: tuple) -> tuple[str, Any]:
        try:
            return "value", fn(*args)
        except Exception as exc:
            return "error", exc

    def discard(self) -> None:
        """Stop and reap the child when its answer is no longer wanted (the caller is raising):
        else it would stay blocked writing to the pipe, or a zombie, as long as this process lives."""
        if self._inline is None and self._pid:
            self._inline = ("error", RuntimeError("discarded"))
            try:
                os.kill(self._pid, signal.SIGKILL)
            except OSError:
                pass
            os.close(self._read_end)
            os.waitpid(self._pid, 0)

    def __del__(self) -> None:
        try:
            self.discard()
        except Exception:  # at interpreter exit
            pass

    def result(self) -> Any:
        if self._inline is None:
            with os.fdopen(self._read_end, "rb") as fh:
                data = fh.read()
            _, status = os.waitpid(self._pid, 0)
            if data and status == 0:
                self._inline = pickle.loads(data)
            else:  # the child died or could not pickle its answer: compute it here, raising what it raises
                self._inline = self._call(self._fn, self._args)
        kind, value = self._inline
        if kind == "error":
            raise value
        return value


# -- the plan ------------------------------------------------------------------------------------

_EMPTY: dict = {}


def _plan_fast(d: Any) -> tuple | None:
    """The fields the score step reads from a plan line, when each has exactly the JSON type the
    models accept: (task, key, prompt hash, sample dict, id, config, dataset, index, label,
    modality, plane, slice axis, target values, target unit, extra); else None.

    Fields the score step never reads (image path, image size, pixel spacing, target names,
    prompt, ...) are not checked here: they do not change any number the step writes."""
    try:
        s = d["sample"]
        image = s["image"]
        target = s["target"]
        row = (d["task"], d["key"], d["prompt_hash"], s, s["id"], s["config"], s["dataset"], s["index"], s["label"],
               s.get("modality", ""), s.get("plane", ""), image["slice_axis"], target["values"], target["unit"],
               s.get("extra", _EMPTY))
    except (KeyError, TypeError):
        return None
    if NULL_REASONS in d or NULL_REASONS in s:
        return None
    task, key, prompt_hash, _, sid, config, dataset, index, label, modality, plane, axis, values, unit, extra = row
    if not (type(task) is str and type(key) is str and type(prompt_hash) is str and type(sid) is str
            and type(config) is str and type(dataset) is str and type(index) is int and type(label) is str
            and type(modality) is str and type(plane) is str and type(axis) is int and type(unit) is str
            and type(values) is list and type(extra) is dict):
        return None
    for v in values:
        t = type(v)
        if t is not float and t is not int:
            return None
    return row


PROFILE_EXTRA = ("image_modality", "metric_type", "metric_key", "unit")


def _hashable(v: Any) -> Any:
    return v if v is None or type(v) is str else ("~", type(v).__name__, repr(v))


class Truths:
    """Each sample's true values (:meth:`Protocol.true_values`), stored flat: 8 bytes a value
    instead of a tuple of float objects. ``truths[i]`` is the tuple."""

    def __init__(self, flat: array | None = None, offsets: array | None = None) -> None:
        self.flat = flat if flat is not None else array("d")
        self.offsets = offsets if offsets is not None else array("q", [0])

    def append(self, values: tuple[float, ...]) -> None:
        self.flat.extend(values)
        self.offsets.append(len(self.flat))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                raise ValueError("Truths slices are contiguous")
            stop = max(start, stop)
            base = self.offsets[start]
            return Truths(self.flat[base:self.offsets[stop]], array("q", (o - base for o in self.offsets[start:stop + 1])))
        return tuple(self.flat[self.offsets[i]:self.offsets[i + 1]])

    def __iter__(self) -> Iterator[tuple[float, ...]]:
        flat, offsets = self.flat, self.offsets
        for i in range(len(self)):
            yield tuple(flat[offsets[i]:offsets[i + 1]])

    def width(self) -> int | None:
        """The number of values every sample has, or None when they differ."""
        n = len(self)
        if n == 0:
            return None
        k = self.offsets[1]
        return k if len(self.flat) == n * k and np.all(np.diff(np.frombuffer(self.offsets, dtype=np.int64)) == k) else None

    def matrix(self) -> np.ndarray:
        """(n, width) float64 array (only when :meth:`width` is not None)."""
        k = self.width()
        assert k is not None
        return np.frombuffer(self.flat, dtype=np.float64).reshape(len(self), k).copy()


@dataclass
class TaskColumns:
    """One task's planned samples, in plan order, as columns."""

    ids: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    indexes: array | list[int] = field(default_factory=lambda: array("q"))  # a list once one is beyond int64
    labels: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    prompt_hashes: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    truths: Truths = field(default_factory=Truths)  # Protocol.true_values
    box_ratios: array = field(default_factory=lambda: array("d"))  # detection.box_area_ratio
    codes: array = field(default_factory=lambda: array("q"))  # profile of each sample
    profiles: list[Sample] = field(default_factory=list)  # one validated Sample per profile
    profile_index: dict[tuple, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, other: "TaskColumns") -> None:
        """Append ``other``'s samples (read after this one's), re-coding its profiles into ours."""
        recode = array("q")
        for profile, code in sorted(other.profile_index.items(), key=lambda item: item[1]):
            mine = self.profile_index.get(profile)
            if mine is None:
                mine = self.profile_index[profile] = len(self.profiles)
                self.profiles.append(other.profiles[code])
            recode.append(mine)
        lookup = np.frombuffer(recode, dtype=np.int64) if len(recode) else np.zeros(0, dtype=np.int64)
        codes = np.frombuffer(other.codes, dtype=np.int64) if len(other.codes) else np.zeros(0, dtype=np.int64)
        self.codes.extend(array("q", lookup[codes].tobytes()) if len(codes) else array("q"))
        if isinstance(other.indexes, list) and not isinstance(self.indexes, list):
            self.wide_indexes()
        for name in ("ids", "configs", "datasets", "indexes", "labels", "keys", "prompt_hashes", "units", "box_ratios"):
            getattr(self, name).extend(getattr(other, name))
        base = self.truths.offsets[-1]
        self.truths.flat.extend(other.truths.flat)
        self.truths.offsets.extend(o + base for o in other.truths.offsets[1:])

    def wide_indexes(self) -> None:
        """Keep the indexes as Python ints (an index beyond int64 is valid JSON the model accepts)."""
        self.indexes = list(self.indexes)

    def appenders(self) -> tuple:
        return (self.codes.append, self.ids.append, self.configs.append, self.datasets.append, self.indexes.append,
                self.labels.append, self.keys.append, self.prompt_hashes.append, self.units.append,
                self.truths.append, self.box_ratios.append)


_NAN = float("nan")


def _add(cols: TaskColumns, appenders: tuple, row: tuple, full_precision: bool, make_sample: Callable[[], Sample],
         intern: Callable[[str], str] = sys.intern) -> None:
    _, key, prompt_hash, _, sid, config, dataset, index, label, modality, plane, axis, values, unit, extra = row
    if extra:
        plan = extra.get("plan_values")
        ratio = extra.get("box_area_ratio")
        image_modality, kind, metric_key, extra_unit = (extra.get("image_modality"), extra.get("metric_type"),
                                                        extra.get("metric_key"), extra.get("unit"))
        profile = (label, modality, plane, axis, dataset, unit,
                   image_modality if image_modality is None or type(image_modality) is str else _hashable(image_modality),
                   kind if kind is None or type(kind) is str else _hashable(kind),
                   metric_key if metric_key is None or type(metric_key) is str else _hashable(metric_key),
                   extra_unit if extra_unit is None or type(extra_unit) is str else _hashable(extra_unit))
    else:
        plan = ratio = None
        profile = (label, modality, plane, axis, dataset, unit, None, None, None, None)
    if full_precision and plan:
        truth = tuple([float(v) for v in plan])
    else:
        truth = tuple(map(float, values))
    if ratio is not None:
        box = float(ratio)
    elif len(values) >= 4:
        x1, y1, x2, y2 = values[:4]
        box = abs(x2 - x1) * abs(y2 - y1)
    else:
        box = _NAN  # detection never plans such a sample; other families do not use it
    code = cols.profile_index.get(profile)
    if code is None:
        code = cols.profile_index[profile] = len(cols.profiles)
        cols.profiles.append(make_sample())
    a_code, a_id, a_config, a_dataset, a_index, a_label, a_key, a_hash, a_unit, a_truth, a_box = appenders
    a_code(code)
    a_id(sid)
    a_config(intern(config))
    a_dataset(intern(dataset))
    a_index(index)
    a_label(intern(label))
    a_key(key)
    a_hash(prompt_hash)
    a_unit(intern(unit))
    a_truth(truth)
    a_box(box)


def _row_of_entry(entry: PlanEntry) -> tuple:
    s = entry.sample
    sample = s.model_dump()
    return (entry.task, entry.key, entry.prompt_hash, sample, s.id, s.config, s.dataset, s.index, s.label, s.modality,
            s.plane, s.image.slice_axis, list(s.target.values), s.target.unit, sample["extra"])


Plan = dict[str, "TaskColumns | list[PlanEntry]"]
_INT64 = 1 << 63


def read_inputs(run_dir: Path, columnar: Callable[[str], bool], full_precision: bool, *, parallel: bool
                ) -> tuple[Plan, int, dict[str, Answer]]:
    """:func:`read_plan` and :func:`read_answers`. With ``parallel``, a forked process reads the
    answers and the plan's tail while this one reads the plan's head (split so both do about the
    same work); the parts are joined in plan order, giving exactly what reading in one go gives."""
    path = Path(run_dir) / "plan.jsonl"
    if not parallel or not FORK or not path.exists():
        plan, total = read_plan(run_dir, columnar, full_precision)
        return plan, total, read_answers(run_dir)
    plan_bytes = path.stat().st_size
    answer_bytes = sum(p.stat().st_size for p in response_files(run_dir))
    # a plan byte costs about 10 ns to read, an answer byte about 6 ns: balance the two processes
    share = min(0.95, 0.5 + 0.3 * answer_bytes / max(plan_bytes, 1))
    split = line_boundary(path, int(plan_bytes * share))

    def tail() -> tuple[dict[str, Answer], Plan, int]:  # the plan first: its errors come first, as in one go
        plan, total = read_plan(run_dir, columnar, full_precision, start=split)
        return read_answers(run_dir), plan, total

    child = Forked(tail)
    try:
        head, total = read_plan(run_dir, columnar, full_precision, stop=split)
    except BaseException:
        child.discard()
        raise
    answers, rest, more = child.result()
    for task, part in rest.items():
        mine = head.get(task)
        if mine is None:
            head[task] = part
        elif isinstance(mine, TaskColumns):
            mine.extend(part)
        else:
            mine.extend(part)
    return head, total + more, answers


def read_plan(run_dir: Path, columnar: Callable[[str], bool], full_precision: bool, *, start: int = 0,
              stop: int | None = None) -> tuple[Plan, int]:
    """The plan grouped by task, in plan order: columns for tasks where ``columnar(task)``,
    else validated :class:`PlanEntry` objects. Also returns the number of planned samples.
    ``start``/``stop``: read only that byte range of ``plan.jsonl`` (see :func:`jsonl_lines`)."""
    path = Path(run_dir) / "plan.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a medvision-eval run directory")
    out: dict[str, TaskColumns | list[PlanEntry]] = {}
    kinds: dict[str, bool] = {}
    appenders: dict[str, tuple] = {}
    loads = orjson.loads
    total = 0

    def validated(number: int, raw: bytes) -> PlanEntry:
        """The line as the model reads it; a line it rejects is one error naming file and line."""
        try:
            return load_model_line(PlanEntry, raw.decode("utf-8"))
        except ValueError as exc:
            line = number + (lines_before(path, start) if start else 0)
            raise ValueError(f"{path}:{line}: not a valid plan entry: {exc}") from exc

    for number, raw in jsonl_lines(path, start, stop):
        total += 1
        try:
            row = _plan_fast(loads(raw))
        except orjson.JSONDecodeError:
            row = None
        entry: PlanEntry | None = None
        if row is None:
            entry = validated(number, raw)
        task = entry.task if entry is not None else row[0]
        is_columnar = kinds.get(task)
        if is_columnar is None:
            is_columnar = kinds[task] = columnar(task)
        if not is_columnar:
            out.setdefault(task, []).append(entry or validated(number, raw))
            continue
        cols = out.get(task)
        if cols is None:
            cols = out[task] = TaskColumns()
            appenders[task] = cols.appenders()
        index = row[7] if entry is None else entry.sample.index
        if not -_INT64 <= index < _INT64 and not isinstance(cols.indexes, list):
            cols.wide_indexes()
            appenders[task] = cols.appenders()
        if entry is not None:
            _add(cols, appenders[task], _row_of_entry(entry), full_precision, lambda: entry.sample)
        else:
            # validated as the models read any line (same repairs, same error text)
            _add(cols, appenders[task], row, full_precision, lambda: validated(number, raw).sample)
    return out, total


# -- samples files -------------------------------------------------------------------------------

def _json_str(value: str, cache: dict[str, str] | None = None) -> str:
    """``json.dumps(value, ensure_ascii=False)`` (orjson escapes the same characters the same way);
    raises TypeError for text UTF-8 cannot encode (lone surrogates)."""
    if cache is not None:
        hit = cache.get(value)
        if hit is not None:
            return hit
    out = orjson.dumps(value).decode()
    if cache is not None:
        cache[value] = out
    return out


def _dumps_floats(values: np.ndarray) -> bytes:
    """``orjson.dumps(values.tolist())`` (a float64 array, any shape), without the Python floats:
    orjson writes a float64 array's numbers exactly as it writes the floats (NaN/inf: null)."""
    return orjson.dumps(np.ascontiguousarray(values, dtype=np.float64), option=orjson.OPT_SERIALIZE_NUMPY)


def float_texts(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """``repr`` of each value ("null" for NaN) and a mask of the infinite ones (not JSON).

    orjson writes the same shortest round-trip digits as ``repr`` and, for magnitudes in
    [1e-4, 1e16), the same notation; values outside that range (other than 0) are ``repr``-ed
    one by one, where ``repr`` switches to exponent notation and orjson may not."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if not flat.size:
        return [], np.zeros(0, dtype=bool)
    texts = _dumps_floats(flat)[1:-1].decode().split(",")  # NaN and inf -> null
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(flat)
        odd = ((magnitude < 1e-4) & (magnitude > 0)) | ((magnitude >= 1e16) & np.isfinite(flat))
    for i in np.flatnonzero(odd).tolist():
        texts[i] = repr(float(flat[i]))
    return texts, np.isinf(flat)


def float_row_texts(matrix: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each row of an (n, k) array as ``", ".join`` of :func:`float_texts` of its values (the
    inside of its JSON list), from one orjson call for the whole array; and a mask of the rows
    holding an infinite value."""
    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[0]
    if not n:
        return [], np.zeros(0, dtype=bool)
    k = m.shape[1]
    if not k:
        return [""] * n, np.zeros(n, dtype=bool)
    rows = _dumps_floats(m)[2:-2].replace(b",", b", ").decode().split("], [")  # NaN and inf -> null
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(m)
        odd = (((magnitude < 1e-4) & (magnitude > 0)) | ((magnitude >= 1e16) & np.isfinite(m))).any(axis=1)
    for i in np.flatnonzero(odd).tolist():
        rows[i] = ", ".join(["null" if v != v else repr(v) for v in m[i].tolist()])
    return rows, np.isinf(m).any(axis=1)


def float_lists(matrix: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each row of an (n, k) array as its JSON list: ``"[" + ", ".join(float_texts(row)) + "]"``
    (NaN: ``null``), from one orjson call for the whole array; and a mask of the rows holding an
    infinite value (not JSON: such a row is written another way by the caller)."""
    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[0]
    if not n:
        return [], np.zeros(0, dtype=bool)
    if not m.shape[1]:
        return ["[]"] * n, np.zeros(n, dtype=bool)
    # orjson writes [[a,b],[c,d]]: cut the outer brackets, put a newline between the rows (no
    # number text holds one) and the ", " separator json.dumps writes, and split once
    rows = _dumps_floats(m)[1:-1].replace(b"],[", b"]\n[").replace(b",", b", ").decode().split("\n")
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(m)
        odd = (((magnitude < 1e-4) & (magnitude > 0)) | ((magnitude >= 1e16) & np.isfinite(m))).any(axis=1)
    for i in np.flatnonzero(odd).tolist():
        rows[i] = "[" + ", ".join(_float_text_of(m[i].tolist())) + "]"
    return rows, np.isinf(m).any(axis=1)


def int_texts(values: Any) -> list[str]:
    """``str`` of each integer (an int64 array, an ``array("q")`` or a list of Python ints)."""
    if isinstance(values, np.ndarray) or isinstance(values, array):
        flat = np.asarray(values, dtype=np.int64)
        if not flat.size:
            return []
        return orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode().split(",")
    return list(map(str, values))


# bytes JSON escapes inside a string (json.dumps and orjson alike): control characters, '"' and '\'
_ESCAPED_BYTE = np.zeros(256, dtype=bool)
_ESCAPED_BYTE[:0x20] = True
_ESCAPED_BYTE[[0x22, 0x5C]] = True


def json_inner_texts(blob: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[str]:
    """The inside of ``json.dumps(text, ensure_ascii=False)`` (the JSON string without its two
    quotes) of each UTF-8 text ``blob[starts[i]:ends[i]]``.

    Exact: a text holding no byte that JSON escapes (a control character, ``"``, ``\\``; UTF-8
    multi-byte sequences never contain those bytes) is written by json.dumps as its characters.
    Such texts are gathered into one buffer with a newline between them (a newline is escaped, so
    it is in none of them), decoded and split once; a text that needs an escape is encoded on its
    own (:func:`_json_str`). ``blob`` must hold valid UTF-8 (as the plan columns and the answer
    table do: lone surrogates are never stored there)."""
    n = len(starts)
    if not n:
        return []
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    if n == 1 or np.array_equal(starts[1:], starts[:-1] + lengths[:-1]):  # one run of bytes: a slice
        raw = np.asarray(blob[int(starts[0]):int(starts[0]) + int(bounds[-1])])
    else:
        raw = np.asarray(blob)[np.arange(int(bounds[-1]), dtype=np.int64) + np.repeat(starts - bounds[:-1], lengths)]
    dirty: list[int] = []
    if (raw < 0x20).any() or (raw == 0x22).any() or (raw == 0x5C).any():
        seen = np.zeros(len(raw) + 1, dtype=np.int64)
        np.cumsum(_ESCAPED_BYTE[raw], out=seen[1:])
        mask = seen[bounds[1:]] > seen[bounds[:-1]]
        dirty = np.flatnonzero(mask).tolist()
        dirty_texts = [raw[bounds[i]:bounds[i + 1]].tobytes().decode("utf-8") for i in dirty]
        raw = raw[~np.repeat(mask, lengths)]
        lengths = np.where(mask, 0, lengths)
        np.cumsum(lengths, out=bounds[1:])
    texts = np.insert(raw, bounds[1:-1], 0x0A).tobytes().decode("utf-8").split("\n")
    for i, text in zip(dirty, dirty_texts) if dirty else ():
        texts[i] = _json_str(text)[1:-1]
    return texts


_DROP = 0x1F  # a byte no JSON number text or separator text holds: marks bytes to cut
# the marker bytes of float_joined's distinct joints: control characters other than the newline
# that separates the rows and _DROP (a joint marked 0x0A would split or join rows)
_JOINT_CODES = tuple(c for c in range(1, 0x20) if c not in (0x0A, _DROP))


def float_joined(matrix: np.ndarray, joints: list[str], opening: str = "", closing: str = "") -> tuple[list[str], np.ndarray]:
    """Each row of an (n, k) array as one text: ``opening``, the :func:`float_texts` of its values
    with ``joints[j]`` between value j and j + 1 (``", "`` inside a JSON list, or any constant
    JSON text such as ``', "Precision": '``), then ``closing`` (each "" or one printable ASCII
    character); and a mask of the rows holding an infinite value.

    Exact: the numbers are written by one orjson call (the digits of ``repr``; the few values
    whose notation differs, and NaN, are redone as :func:`float_texts` does); orjson separates
    them by a comma only. The comma after value j of a row is turned into a marker byte for
    ``joints[j]`` (a control character, which no JSON text holds unescaped), the row's brackets
    become ``opening`` and ``closing`` (or are cut), and each marker is replaced by its joint (one
    ``bytes.replace`` a distinct joint), so a row is one string, made without a Python object per
    value."""
    m = np.asarray(matrix, dtype=np.float64)
    n, k = m.shape
    if len(joints) != max(k - 1, 0) or len(opening) > 1 or len(closing) > 1:
        raise ValueError("one joint between each two columns; opening and closing: one character or none")
    if not n:
        return [], np.zeros(0, dtype=bool)
    if not k:
        return [opening + closing] * n, np.zeros(n, dtype=bool)
    distinct = list(dict.fromkeys(joints))
    if len(distinct) > len(_JOINT_CODES) or any(any(ord(c) < 0x20 for c in j) for j in distinct) \
            or any(not (" " <= c < "\x7f") for c in opening + closing):
        return _float_joined_slowly(m, joints, opening, closing), np.isinf(m).any(axis=1)
    raw = bytearray(_dumps_floats(m))  # [[a,b],[c,d]]
    buf = np.frombuffer(raw, dtype=np.uint8)
    # the commas, k - 1 in each row then one between rows (and a stand-in after the last row)
    commas = np.append(np.flatnonzero(buf == 0x2C), len(raw) - 1).reshape(n, k)
    for j, joint in enumerate(joints):
        buf[commas[:, j]] = _JOINT_CODES[distinct.index(joint)]
    between = commas[:-1, k - 1]  # "],[" -> "\n", its brackets: closing and opening
    buf[between] = 0x0A
    last, first = ord(closing) if closing else _DROP, ord(opening) if opening else _DROP
    buf[between - 1] = last
    buf[between + 1] = first
    buf[1], buf[-2] = first, last
    data = bytes(raw[1:-1])
    if not opening or not closing:
        data = data.replace(bytes([_DROP]), b"")
    for code, joint in zip(_JOINT_CODES, distinct):
        data = data.replace(bytes([code]), joint.encode("utf-8"))
    rows = data.decode("utf-8").split("\n")
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(m)
        odd = (((magnitude < 1e-4) & (magnitude > 0)) | ((magnitude >= 1e16) & np.isfinite(m))).any(axis=1)
    for i in np.flatnonzero(odd).tolist():
        rows[i] = opening + _float_joined_row(m[i].tolist(), joints) + closing
    return rows, np.isinf(m).any(axis=1)


def _float_text_of(values: list[float]) -> list[str]:
    """:func:`float_texts` of a few values, one by one (``repr``; NaN and infinities: null)."""
    return [repr(v) if v - v == 0 else "null" for v in values]


def _float_joined_row(values: list[float], joints: list[str]) -> str:
    texts = _float_text_of(values)
    return "".join([t + j for t, j in zip(texts, joints)]) + texts[-1]


def _float_joined_slowly(m: np.ndarray, joints: list[str], opening: str, closing: str) -> list[str]:
    return [opening + _float_joined_row(row, joints) + closing for row in m.tolist()]
