"""Columnar reading and writing for the score step, so that scoring a million answers is seconds.

The run directory stays what it is (``plan.jsonl`` and ``responses.jsonl``, one JSON object a
line, appended crash-safe, readable by anything). What changes is how the score step reads it:
each line is decoded with orjson and only the fields scoring needs are kept, in columns (ids,
keys, target values, ...), instead of one validated pydantic object per line. A line is taken on
this fast path only when every field the pydantic models define is present with exactly the JSON
type they accept; anything else -- a coercible value, a ``null_reasons`` line, a lone surrogate,
a torn or garbage line -- is read by the models themselves (:func:`medvision_eval.store.load_model_line`),
so it is accepted, repaired or rejected exactly as before, with the same error naming file and line.

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

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .schema import Sample
from .store import NULL_REASONS, PlanEntry, ResponseRecord, load_model_line, response_files

BLOCK = 1 << 24  # bytes read at a time: memory stays bounded whatever the file size

# (text, error, latency_s, prompt_tokens, completion_tokens) of one stored answer
Answer = tuple[str | None, str | None, float, int | None, int | None]


def jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Complete, non-blank lines of a JSONL file with their numbers, read in blocks.

    Same lines as :func:`medvision_eval.store.iter_jsonl`: a torn final line (no newline) is skipped."""
    number = 0
    rest = b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(BLOCK)
            if not block:
                return
            parts = (rest + block).split(b"\n") if rest else block.split(b"\n")
            rest = parts.pop()
            for raw in parts:
                number += 1
                if raw.strip():
                    yield number, raw


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
    if type(d) is not dict or NULL_REASONS in d:
        return None
    key = d.get("key")
    r = d.get("response")
    if (type(key) is not str or type(d.get("task")) is not str or type(d.get("sample_id")) is not str
            or type(d.get("prompt_hash")) is not str or type(r) is not dict or d.get("surrogates") is not None):
        return None
    if "time" in d and not _is_num(d["time"]):
        return None
    text = r.get("text")
    error = r.get("error")
    latency = r.get("latency_s", 0.0)
    if not (_opt_str(text) and _opt_str(error) and _is_num(latency)):
        return None
    usage = r.get("usage")
    if usage is None and "usage" not in r:
        pt = ct = None
    elif type(usage) is dict:
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not (_opt_int(pt) and _opt_int(ct)):
            return None
    else:
        return None
    return key, (text, error, float(latency), pt, ct)


def _answer_of(record: ResponseRecord) -> Answer:
    r = record.response
    return (r.text, r.error, r.latency_s, r.usage.prompt_tokens, r.usage.completion_tokens)


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
                line = raw.decode("utf-8")
                try:
                    record = load_model_line(ResponseRecord, line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not a valid response record: {exc}") from exc
                found = (record.key, _answer_of(record))
            key, answer = found
            old = best.get(key)
            # completed = error is None and text is not None
            if old is None or (answer[1] is None and answer[0] is not None) or not (old[1] is None and old[0] is not None):
                best[key] = answer
    return best


# -- the plan ------------------------------------------------------------------------------------

def _sample_fast(s: Any) -> bool:
    """Every field of :class:`Sample` present (or defaulted) with exactly the type it accepts."""
    if type(s) is not dict:
        return False
    image, size, spacing, target = s.get("image"), s.get("image_size"), s.get("pixel_spacing"), s.get("target")
    if not (type(s.get("id")) is str and type(s.get("task")) is str and type(s.get("config")) is str
            and type(s.get("dataset")) is str and type(s.get("index")) is int and type(s.get("label")) is str
            and type(s.get("split", "")) is str and _opt_int(s.get("label_id"))
            and type(s.get("modality", "")) is str and type(s.get("plane", "")) is str
            and type(s.get("image_description", "")) is str and type(s.get("extra", {})) is dict):
        return False
    if not (type(image) is dict and type(image.get("path")) is str and type(image.get("slice_axis")) is int
            and type(image.get("slice_index")) is int):
        return False
    if not (type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int):
        return False
    if not (type(spacing) is list and len(spacing) == 2 and _is_num(spacing[0]) and _is_num(spacing[1])):
        return False
    if not (type(target) is dict and type(target.get("unit")) is str):
        return False
    values, names = target.get("values"), target.get("names")
    if not (type(values) is list and type(names) is list):
        return False
    for v in values:
        if not _is_num(v):
            return False
    for v in names:
        if type(v) is not str:
            return False
    return True


def _entry_fast(d: Any) -> bool:
    if type(d) is not dict or NULL_REASONS in d:
        return False
    if not (type(d.get("task")) is str and type(d.get("key")) is str and type(d.get("prompt_hash")) is str
            and type(d.get("order", 0)) is int):
        return False
    prompt = d.get("prompt")
    if prompt is not None:
        if type(prompt) is not list:
            return False
        for part in prompt:
            if type(part) is not dict:
                return False
    return _sample_fast(d.get("sample"))


PROFILE_EXTRA = ("image_modality", "metric_type", "metric_key", "unit")


def _hashable(v: Any) -> Any:
    return v if v is None or type(v) is str else ("~", type(v).__name__, repr(v))


@dataclass
class TaskColumns:
    """One task's planned samples, in plan order, as columns."""

    ids: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    prompt_hashes: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    truths: list[tuple[float, ...]] = field(default_factory=list)  # Protocol.true_values
    box_ratios: list[float] = field(default_factory=list)  # detection.box_area_ratio
    codes: list[int] = field(default_factory=list)  # profile of each sample
    profiles: list[Sample] = field(default_factory=list)  # one validated Sample per profile
    profile_index: dict[tuple, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def _add(cols: TaskColumns, key: str, prompt_hash: str, s: dict, full_precision: bool,
         make_sample: Callable[[], Sample], intern: Callable[[str], str] = sys.intern) -> None:
    target = s["target"]
    values = target["values"]
    extra = s.get("extra") or {}
    plan = extra.get("plan_values")
    truth = tuple(float(v) for v in plan) if full_precision and plan else tuple(float(v) for v in values)
    ratio = extra.get("box_area_ratio")
    if ratio is not None:
        box = float(ratio)
    elif len(values) >= 4:
        x1, y1, x2, y2 = values[:4]
        box = abs(x2 - x1) * abs(y2 - y1)
    else:
        box = float("nan")  # detection never plans such a sample; other families do not use it
    image = s["image"]
    unit = target["unit"]
    profile = (s["label"], s.get("modality", ""), s.get("plane", ""), image["slice_axis"], s["dataset"], unit,
               *(_hashable(extra.get(name)) for name in PROFILE_EXTRA))
    code = cols.profile_index.get(profile)
    if code is None:
        code = cols.profile_index[profile] = len(cols.profiles)
        cols.profiles.append(make_sample())
    cols.codes.append(code)
    cols.ids.append(s["id"])
    cols.configs.append(intern(s["config"]))
    cols.datasets.append(intern(s["dataset"]))
    cols.indexes.append(s["index"])
    cols.labels.append(intern(s["label"]))
    cols.keys.append(key)
    cols.prompt_hashes.append(prompt_hash)
    cols.units.append(intern(unit))
    cols.truths.append(truth)
    cols.box_ratios.append(box)


def read_plan(run_dir: Path, columnar: Callable[[str], bool], full_precision: bool
              ) -> tuple[dict[str, TaskColumns | list[PlanEntry]], int]:
    """The plan grouped by task, in plan order: columns for tasks where ``columnar(task)``,
    else validated :class:`PlanEntry` objects. Also returns the number of planned samples."""
    path = Path(run_dir) / "plan.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a medvision-eval run directory")
    out: dict[str, TaskColumns | list[PlanEntry]] = {}
    kinds: dict[str, bool] = {}
    loads = orjson.loads
    total = 0
    for _, raw in jsonl_lines(path):
        total += 1
        try:
            d = loads(raw)
        except orjson.JSONDecodeError:
            d = None
        entry: PlanEntry | None = None
        if not _entry_fast(d):
            entry = load_model_line(PlanEntry, raw.decode("utf-8"))
        task = entry.task if entry is not None else d["task"]
        is_columnar = kinds.get(task)
        if is_columnar is None:
            is_columnar = kinds[task] = columnar(task)
        if not is_columnar:
            out.setdefault(task, []).append(entry or load_model_line(PlanEntry, raw.decode("utf-8")))
            continue
        cols = out.get(task)
        if cols is None:
            cols = out[task] = TaskColumns()
        if entry is not None:
            sample = entry.sample
            _add(cols, entry.key, entry.prompt_hash, sample.model_dump(), full_precision, lambda: sample)
        else:
            s = d["sample"]
            _add(cols, d["key"], d["prompt_hash"], s, full_precision, lambda: Sample.model_validate(s))
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


def float_texts(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """``repr`` of each value ("null" for NaN) and a mask of the infinite ones (not JSON)."""
    flat = np.asarray(values, dtype=np.float64)
    texts = list(map(float.__repr__, flat.tolist()))
    for i in np.flatnonzero(np.isnan(flat)).tolist():
        texts[i] = "null"
    return texts, np.isinf(flat)
