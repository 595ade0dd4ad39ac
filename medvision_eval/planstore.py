"""The plan's scoring columns, written next to ``plan.jsonl`` so the score step need not parse it.

``plan.jsonl`` stays the run's record of its samples (one JSON object a line, readable by
anything). When :func:`medvision_eval.store.write_plan` writes it, it also writes the fields the
score step reads as NumPy columns under ``RUN_DIR/plan.columns/``::

    index.json     format name and version, the row count, plan.jsonl's size, mtime_ns and
                   fingerprint as written (``xxh3_128``: its 128-bit XXH3 in hex; an index written
                   by an older version has ``sha256`` instead), each column's dtype, shape and byte
                   offset in columns.bin, the value tables of the coded columns, the profiles, and
                   the seal: ``xxh3_128:`` and the XXH3-128 of the rest of the index (canonical
                   JSON) and of columns.bin (an older index: the sha256 of the same, bare hex),
                   checked before any column is read
    columns.bin    the columns, each at a 64-byte aligned offset:
                   numpy.memmap(path, dtype, "r", offset, tuple(shape)) reads one

Columns (one entry per plan line, in plan order, unless said otherwise):

- ``task``, ``config``, ``dataset``, ``label``, ``unit``: codes into the index's value tables;
- ``profile``: code of the sample's grouping fields (label, modality, plane, slice axis, dataset,
  target unit, ``extra`` image_modality / metric_type / metric_key / unit), the same for two
  samples exactly when those fields are equal;
- ``index``: the sample's index; ``box_ratio``: detection's box/image area ratio (the sample's
  ``extra.box_area_ratio``, else v1's fallback from the target box, NaN when it has no box);
- ``id_rank``: position of the row when all rows are sorted by sample id (stable);
- ``id``, ``prompt_hash``: UTF-8 text (``<name>.blob``, uint8) and ``<name>.offsets`` (int64,
  rows + 1); ``key`` likewise, or, when every key is 32 lowercase hex digits (what
  :func:`~medvision_eval.store.cache_key` makes), ``key.hex``: the 16 bytes of each key;
- ``truth`` / ``truth_full``: the target values (flat float64, ``.offsets`` int64), and the
  values under protocols that score full-precision targets (``extra.plan_values`` when present);
- ``line``: the byte offset of each plan line in ``plan.jsonl`` (rows + 1).

Crash safety and staleness: ``index.json`` is removed before a plan is rewritten; then
``plan.jsonl``, ``columns.bin`` and last ``index.json`` are each written to a temporary name,
fsynced and renamed. A reader uses the columns only when ``index.json`` has this module's format version
and plan.jsonl's size and mtime_ns are the recorded ones; the score step also checks plan.jsonl's
recorded fingerprint (computed in the same read as the inputs digest) before it writes anything. Anything missing,
unreadable, stale or of another version: the score step reads ``plan.jsonl`` as before, with
the same results. A plan holding a value the columns cannot carry exactly (a NaN target, lone
surrogates, an index beyond int64, an ``extra`` entry of another type) gets no columns at all.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import queue
import tempfile
import threading
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from . import secrets

_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # where the platform has madvise

STORE_DIR = "plan.columns"
INDEX = "index.json"
DATA = "columns.bin"
FORMAT = "medvision-eval plan columns"
VERSION = 1
_INT64 = 1 << 63


class _Columns:
    """The columns of the plan lines written so far: :meth:`take` records a batch of dumped
    entries (column by column: a few list comprehensions per batch, no per-entry method call)."""

    def __init__(self) -> None:
        self.ok = True
        # one code per distinct (task, config, grouping fields): the few-valued columns derive from it
        self.heads: dict[tuple, int] = {}
        self.head: list[int] = []
        self.ids: list[str] = []
        self.keys: list[str] = []
        self.hashes: list[str] = []
        self.index: list[int] = []
        self.ratios: list[Any] = []
        self.truth: list[float] = []
        self.truth_len: list[int] = []
        self.full: list[float] = []
        self.full_len: list[int] = []
        self.any_full = False
        self.line_len: list[int] = []

    def take(self, batch: list[Any]) -> None:
        """Record a batch of plan entries (validated samples: their fields have their types)."""
        if not self.ok or not batch:
            return
        samples = [e.sample for e in batch]
        self.ids += [s.id for s in samples]
        self.keys += [e.key for e in batch]
        self.hashes += [e.prompt_hash for e in batch]
        self.index += [s.index for s in samples]
        targets = [s.target for s in samples]
        values = [t.values for t in targets]
        lengths = list(map(len, values))
        self.truth += chain.from_iterable(values)
        self.truth_len += lengths
        extras = [s.extra for s in samples]
        heads = self.heads
        if any(extras):
            ratios = [e.get("box_area_ratio") if e else None for e in extras]
            plans = [e.get("plan_values") if e else None for e in extras]
            self.head += [heads.setdefault(
                (d.task, s.config, s.label, s.modality, s.plane, s.image.slice_axis, s.dataset, t.unit,
                 e.get("image_modality"), e.get("metric_type"), e.get("metric_key"), e.get("unit")),
                len(heads)) for d, s, t, e in zip(batch, samples, targets, extras)]
        else:
            ratios = plans = [None] * len(batch)
            self.head += [heads.setdefault(
                (d.task, s.config, s.label, s.modality, s.plane, s.image.slice_axis, s.dataset, t.unit,
                 None, None, None, None), len(heads)) for d, s, t in zip(batch, samples, targets)]
        self.ratios += ratios
        if not set(map(type, ratios)) <= _RATIO_TYPES or not set(map(type, extras)) <= {dict}:
            self.ok = False
            return
        if any(plans):
            self.any_full = True
            for p, v, n in zip(plans, values, lengths):
                if p:
                    if type(p) is not list and type(p) is not tuple:
                        self.ok = False
                        return
                    try:
                        self.full += [float(x) for x in p]  # what the score step's float() of each gives
                    except (TypeError, ValueError, OverflowError):
                        self.ok = False
                        return
                    self.full_len.append(len(p))
                else:
                    self.full += v
                    self.full_len.append(n)
        else:
            self.full += chain.from_iterable(values)
            self.full_len += lengths
    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, list], list[list]]:
        """The columns, the value tables of the coded ones, and the profiles."""
        out: dict[str, np.ndarray] = {}
        heads = list(self.heads)  # in code order
        for h in heads:  # (task, config, label, modality, plane, axis, dataset, unit, 4 extra picks)
            if not all(type(v) is str for v in h[:5] + h[6:8]) or type(h[5]) is not int \
                    or not all(v is None or type(v) is str for v in h[8:]):
                raise TypeError("a grouping field of another type")
        head = np.asarray(self.head, dtype=np.int64)
        tables: dict[str, list] = {}
        for name, at in (("task", 0), ("config", 1), ("dataset", 6), ("label", 2), ("unit", 7)):
            values: dict[str, int] = {}
            lookup = np.asarray([values.setdefault(h[at], len(values)) for h in heads], dtype=np.int32)
            tables[name] = list(values)
            out[name] = lookup[head] if len(head) else np.zeros(0, dtype=np.int32)
        profiles: dict[tuple, int] = {}
        lookup = np.asarray([profiles.setdefault((h[2], h[3], h[4], h[5], h[6], h[7], *h[8:]), len(profiles))
                             for h in heads], dtype=np.int32)
        out["profile"] = lookup[head] if len(head) else np.zeros(0, dtype=np.int32)
        if not set(map(type, self.index)) <= {int} or not set(map(type, self.truth)) <= {float, int} \
                or not set(map(type, self.ids)) | set(map(type, self.keys)) | set(map(type, self.hashes)) <= {str}:
            raise TypeError("a value of another type")
        out["index"] = np.asarray(self.index, dtype=np.int64)  # OverflowError beyond int64: no columns
        n = len(self.ids)
        truth = np.asarray(self.truth, dtype=np.float64)
        truth_offsets = _offsets(self.truth_len)
        out["box_ratio"] = box_ratios(self.ratios, truth, truth_offsets)
        ranks = np.empty(n, dtype=np.int64)
        ranks[np.asarray(sorted(range(n), key=self.ids.__getitem__), dtype=np.int64)] = np.arange(n)
        out["id_rank"] = ranks
        for name, texts in (("id", self.ids), ("prompt_hash", self.hashes)):
            out[f"{name}.blob"], out[f"{name}.offsets"] = text_column(texts)
        hexed = hex_keys(self.keys)
        if hexed is not None:
            out["key.hex"] = hexed
        else:
            out["key.blob"], out["key.offsets"] = text_column(self.keys)
        out["truth"] = truth
        out["truth.offsets"] = truth_offsets
        if self.any_full:
            out["truth_full"] = np.asarray(self.full, dtype=np.float64)
            out["truth_full.offsets"] = _offsets(self.full_len)
        out["line"] = _offsets(self.line_len)
        return out, tables, [list(p) for p in profiles]


def hex_keys(keys: list[str]) -> np.ndarray | None:
    """(n, 16) uint8: the bytes of each key when every key is 32 lowercase hex digits, else None."""
    if not keys or set(map(len, keys)) != {32}:
        return None
    joined = "".join(keys)
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    if len(raw) != 16 * len(keys) or raw.hex() != joined:  # upper case or spaces are not the key's text
        return None
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(keys), 16)


def _run_of(rows: np.ndarray) -> slice | None:
    """``rows`` as a slice when they are one run of consecutive rows, else None."""
    if len(rows) and int(rows[-1]) - int(rows[0]) == len(rows) - 1 and (np.diff(rows) == 1).all():
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return None


def hex_texts(hexed: np.ndarray) -> list[str]:
    """Each key of ``hexed`` ((n, 16) uint8) as its 32 lowercase hex digits, the text
    :func:`hex_keys` read (made as one ASCII buffer, split once)."""
    n = len(hexed)
    if not n:
        return []
    out = np.empty((n, 33), dtype=np.uint8)
    out[:, 32] = 0x0A
    _hex_into(out[:, :32], hexed)
    return out.tobytes()[:-1].decode("ascii").split("\n")


def _hex_into(out: np.ndarray, hexed: np.ndarray) -> None:
    """Write the lowercase hex digits of ``hexed`` ((n, 16) uint8) into ``out`` ((n, 32))."""
    digits = np.ascontiguousarray(hexed).tobytes().hex().encode("ascii")
    out[:] = np.frombuffer(digits, dtype=np.uint8).reshape(len(hexed), 32)


_NO_PICKS = (None, None, None, None)
_RATIO_TYPES = {float, int, type(None)}


def box_ratios(ratios: list[Any], truth: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each sample's ``extra.box_area_ratio`` as float, else ``abs(x2 - x1) * abs(y2 - y1)`` of its
    first four target values, else NaN (what the score step's reader computes)."""
    out = np.array([np.nan if r is None else float(r) for r in ratios], dtype=np.float64)
    missing = np.flatnonzero(np.array([r is None for r in ratios], dtype=bool))
    if len(missing):
        starts = offsets[missing]
        has_box = offsets[missing + 1] - starts >= 4
        rows, at = missing[has_box], starts[has_box]
        x1, y1, x2, y2 = (truth[at + j] for j in range(4))
        out[rows] = np.abs(x2 - x1) * np.abs(y2 - y1)
    return out


def _offsets(lengths: list[int]) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=out[1:])
    return out


def text_column(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 of ``texts`` joined (uint8) and the (n + 1) byte offsets of each."""
    joined = "".join(texts)
    blob = joined.encode("utf-8")
    if len(blob) == len(joined):
        lengths = list(map(len, texts))
    else:
        lengths = [len(t.encode("utf-8")) for t in texts]
    return np.frombuffer(blob, dtype=np.uint8), _offsets(lengths)


def plan_lines(entries: Iterable[Any], columns: _Columns) -> Iterator[str]:
    """Each entry's plan line (:func:`~medvision_eval.store.strict_dumps`), recording its columns
    on the way (a batch at a time)."""
    from .store import strict_dumps

    line_len = columns.line_len.append
    batch: list[Any] = []
    for entry in entries:
        line = strict_dumps(entry) + "\n"
        line_len(len(line) if line.isascii() else len(line.encode("utf-8")))
        batch.append(entry)
        if len(batch) >= 1024:
            columns.take(batch)
            batch = []
        yield line
    columns.take(batch)


def remove_index(run_dir: Path) -> None:
    (Path(run_dir) / STORE_DIR / INDEX).unlink(missing_ok=True)


# plan.jsonl's fingerprint in the index: a fast non-cryptographic 128-bit hash (it tells whether
# the columns were made from this plan.jsonl, e.g. after a hand edit keeping size and mtime; the
# seal, not this, guards the columns themselves). An older index's "sha256" is still honoured.
PLAN_HASH = "xxh3_128"
SEAL_PREFIX = "xxh3_128:"


def _new_hash() -> Any:
    import xxhash

    return xxhash.xxh3_128()


class _Hasher:
    """The fingerprint (:data:`PLAN_HASH`) of the pieces handed to it, computed on a thread (the
    hashing overlaps the formatting of the next piece)."""

    def __init__(self) -> None:
        self.digest = _new_hash()
        self.size = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="plan-fingerprint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            self.digest.update(piece)

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        self._queue.put(piece)

    def hexdigest(self) -> str:
        self.close()
        return self.digest.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def write_plan(run_dir: Path, entries: Iterable[Any]) -> None:
    """Write ``plan.jsonl`` (strict JSON, one entry a line, atomically) and its columns."""
    from .store import LINES_PER_PIECE, NULL_REASONS, PLAN, _atomic_write, _storable_bytes, secret_lines, write_jsonl

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_index(run_dir)  # a crash from here on leaves no index, so no stale one is ever trusted
    if secret_lines():  # a secret spanning lines: the text is masked whole, as write_jsonl does
        write_jsonl(run_dir / PLAN, entries)
        return
    columns = _Columns()
    masking = bool(secrets.known())
    hasher = _Hasher()

    def piece(batch: list[str]) -> bytes:
        text = "".join(batch)
        if masking and secrets.mask(text) != text:  # a masked line's columns would not be the file's
            columns.ok = False
        if NULL_REASONS in text:  # a NaN, an infinity or lone surrogates: not carried exactly
            columns.ok = False
        data = _storable_bytes(text)
        hasher.add(data)
        return data

    def pieces() -> Iterator[bytes]:
        batch: list[str] = []
        for line in plan_lines(entries, columns):
            batch.append(line)
            if len(batch) >= LINES_PER_PIECE:
                yield piece(batch)
                batch = []
        if batch:
            yield piece(batch)

    path = run_dir / PLAN
    try:
        _atomic_write(path, pieces())
    finally:
        hasher.close()
    if not columns.ok or hasher.size != int(sum(columns.line_len)):
        return
    try:
        arrays, tables, profiles = columns.arrays()
    except (OverflowError, ValueError, TypeError):  # an index beyond int64, a value of another type
        return
    stat = os.stat(path)
    write_columns(run_dir / STORE_DIR, arrays, tables, profiles,
                  {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, PLAN_HASH: hasher.hexdigest()})


def _sealed_text(index: dict[str, Any]) -> bytes:
    """What the index's ``seal`` covers of the index itself (all but the seal), canonical JSON."""
    return json.dumps({k: v for k, v in index.items() if k != "seal"}, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _atomic_bytes(path: Path, pieces: Iterable[bytes]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in pieces:
                fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


ALIGN = 64


def write_columns(directory: Path, arrays: dict[str, np.ndarray], tables: dict[str, list], profiles: list[list],
                  plan: dict[str, Any]) -> None:
    """``columns.bin`` (every array at a 64-byte aligned offset) then ``index.json``, each atomic."""
    directory.mkdir(exist_ok=True)
    for tmp in directory.glob(".*.tmp"):  # left by a killed writer
        tmp.unlink(missing_ok=True)
    files: dict[str, dict[str, Any]] = {}
    parts: list[bytes | memoryview] = []
    offset = 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        pad = -offset % ALIGN
        if pad:
            parts.append(bytes(pad))
            offset += pad
        files[name] = {"offset": offset, "dtype": array.dtype.str, "shape": list(array.shape)}
        data = memoryview(array).cast("B") if array.size else b""
        parts.append(data)
        offset += len(data)
    _atomic_bytes(directory / DATA, parts)
    index = {
        "format": FORMAT,
        "version": VERSION,
        "rows": len(arrays["index"]),
        "plan": plan,
        "data": {"file": DATA, "size": offset},
        "columns": files,
        "tables": tables,
        "profiles": profiles,
    }
    seal = _new_hash()
    seal.update(_sealed_text(index))
    for part in parts:
        seal.update(part)
    index["seal"] = SEAL_PREFIX + seal.hexdigest()
    _atomic_bytes(directory / INDEX, [(json.dumps(index, indent=1, ensure_ascii=False) + "\n").encode("utf-8")])


# -- reading -------------------------------------------------------------------------------------

class PlanStore:
    """The columns of a run's plan, memory-mapped. :func:`open_store` returns one only when it
    matches ``plan.jsonl`` as far as size and mtime tell; :attr:`plan_digest` is what the caller
    must still compare with plan.jsonl's own :attr:`plan_hash` (a
    :data:`medvision_eval.rundigest.PLAN_HASHES` name) before trusting it."""

    def __init__(self, directory: Path, index: dict[str, Any]) -> None:
        self.directory = directory
        self.index = index
        self.rows: int = index["rows"]
        plan = index["plan"]
        self.plan_hash: str = PLAN_HASH if PLAN_HASH in plan else "sha256"  # "sha256": an older index
        self.plan_digest: str = plan[self.plan_hash]
        if type(self.plan_digest) is not str:
            raise ValueError(f"{directory}: plan.jsonl's fingerprint is not a text")
        self.tables: dict[str, list[str]] = index["tables"]
        self._arrays: dict[str, np.ndarray] = {}
        self._json_tables: dict[str, list[str]] = {}
        path = directory / index["data"]["file"]
        size = os.stat(path).st_size
        if size != index["data"]["size"]:
            raise ValueError(f"{path}: {size} bytes, {index['data']['size']} recorded")
        self._map: mmap.mmap | None = None
        if size:
            with open(path, "rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            raw = np.frombuffer(self._map, dtype=np.uint8)
        else:
            raw = np.zeros(0, dtype=np.uint8)
        # the seal: XXH3-128 (an older index: sha256) of the index and columns.bin as written, so a
        # column file or an index edited, damaged or copied from another run is never read
        # (plan.jsonl's own fingerprint only tells that the index belongs to this plan)
        recorded = index["seal"]
        if type(recorded) is str and recorded.startswith(SEAL_PREFIX):
            seal, recorded = _new_hash(), recorded[len(SEAL_PREFIX):]
        else:  # an index written by an older version: a bare sha256
            seal = hashlib.sha256()
        seal.update(_sealed_text(index))
        seal.update(raw)
        self.release()  # hashing mapped every page: only what is read from here on stays mapped
        if seal.hexdigest() != recorded:
            raise ValueError(f"{directory}: the columns are not the ones written with their index")
        for name, spec in index["columns"].items():
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(d) for d in spec["shape"])
            count = int(np.prod(shape)) if shape else 1
            start = int(spec["offset"])
            if dtype.hasobject or start < 0 or start + count * dtype.itemsize > size:
                raise ValueError(f"column {name}: outside {path}")
            self._arrays[name] = raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)
        n = self.rows
        for name in ("task", "config", "dataset", "label", "unit", "profile", "index", "box_ratio", "id_rank"):
            if len(self._arrays[name]) != n:
                raise ValueError(f"column {name}: {len(self._arrays[name])} rows, {n} expected")
        for name in ("id", "prompt_hash", "truth", "line") + (("truth_full",) if "truth_full" in self._arrays else ()) \
                + (("key",) if "key.blob" in self._arrays else ()):
            offsets = self._arrays["line" if name == "line" else f"{name}.offsets"]
            if len(offsets) != n + 1:
                raise ValueError(f"column {name}: bad offsets")
        if "key.hex" in self._arrays and self._arrays["key.hex"].shape != (n, 16):
            raise ValueError("column key.hex: bad shape")

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def release(self) -> None:
        """Unmap the column pages this process has read (``MADV_DONTNEED``; the data stays in the
        page cache and is mapped again when read), so that columns read once -- a block of rows
        formatted, the keys joined -- stop counting in this process's memory. The arrays stay
        valid."""
        if self._map is not None and _DONTNEED is not None:
            try:
                self._map.madvise(_DONTNEED)
            except (OSError, ValueError):
                pass

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def texts(self, name: str, rows: np.ndarray) -> list[str]:
        """The text column ``name`` (id, prompt_hash, key) at ``rows`` as str."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return []
        if name == "key" and "key.hex" in self._arrays:
            h = np.asarray(self._arrays["key.hex"][rows]).tobytes().hex()
            return [h[i:i + 32] for i in range(0, len(h), 32)]
        blob, offsets = self._arrays[f"{name}.blob"], self._arrays[f"{name}.offsets"]
        starts, ends = offsets[rows], offsets[rows + 1]
        first, last = int(rows[0]), int(rows[-1])
        if last - first + 1 == len(rows) and np.all(np.diff(rows) == 1):  # a contiguous run: one slice
            base = int(starts[0])
            raw = np.asarray(blob[base:int(ends[-1])]).tobytes()
        else:
            lengths = ends - starts
            bounds = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum(lengths, out=bounds[1:])
            at = np.arange(int(bounds[-1]), dtype=np.int64) + np.repeat(starts - bounds[:-1], lengths)
            raw = np.asarray(blob[at]).tobytes()
            base = 0
            starts, ends = bounds[:-1], bounds[1:]
        cuts = zip((starts - base).tolist(), (ends - base).tolist())
        if raw.isascii():
            text = raw.decode("ascii")
            return [text[a:b] for a, b in cuts]
        return [raw[a:b].decode("utf-8") for a, b in cuts]

    def json_texts(self, name: str, rows: np.ndarray) -> list[str]:
        """The inside of ``json.dumps(text, ensure_ascii=False)`` (without its quotes) of the text
        column ``name`` (id, prompt_hash, key) at ``rows``, made from the UTF-8 bytes
        (:func:`.columnar.json_inner_texts`)."""
        from .columnar import json_inner_texts

        rows = np.asarray(rows, dtype=np.int64)
        if name == "key" and "key.hex" in self._arrays:
            return hex_texts(np.asarray(self._arrays["key.hex"][rows]))
        offsets = self._arrays[f"{name}.offsets"]
        return json_inner_texts(self._arrays[f"{name}.blob"], offsets[rows], offsets[rows + 1])

    def json_table(self, name: str) -> list[str]:
        """The JSON text of each value in the table of the coded column ``name`` ("" for a value
        UTF-8 cannot encode), made once per store."""
        from .columnar import _json_str

        made = self._json_tables.get(name)
        if made is None:
            made = []
            for value in self.tables[name]:
                try:
                    made.append(_json_str(value))
                except (TypeError, ValueError):  # lone surrogates (never in a store: no columns then)
                    made.append("")
            self._json_tables[name] = made
        return made

    def key_and_hash_texts(self, rows: np.ndarray, between: str) -> list[str] | None:
        """Each row's key, ``between``, then its prompt hash, as one text (the inside of their JSON
        strings: hex digits need no escape), when every key is stored as hex and the rows' prompt
        hashes all have one length and need no escape (what :func:`.store.prompt_hash` makes);
        else None. Made as one fixed-width ASCII buffer, split once."""
        if "key.hex" not in self._arrays or not between.isascii() or "\n" in between:
            return None
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return []
        offsets = self._arrays["prompt_hash.offsets"]
        run = _run_of(rows)
        starts = offsets[run if run is not None else rows]
        widths = offsets[run.start + 1:run.stop + 1] - starts if run is not None else offsets[rows + 1] - starts
        width = int(widths[0])
        if not (widths == width).all():
            return None
        blob = self._arrays["prompt_hash.blob"]
        if run is not None:  # one run of rows: one slice of the blob
            hashes = np.asarray(blob[int(starts[0]):int(starts[0]) + len(rows) * width]).reshape(len(rows), width)
        else:
            hashes = np.asarray(blob)[starts[:, None] + np.arange(width)]
        if not ((hashes >= 0x20) & (hashes < 0x7F) & (hashes != 0x22) & (hashes != 0x5C)).all():
            return None  # not plain printable ASCII: made field by field
        sep = np.frombuffer(between.encode("ascii"), dtype=np.uint8)
        out = np.empty((len(rows), 32 + len(sep) + width + 1), dtype=np.uint8)
        _hex_into(out[:, :32], np.asarray(self._arrays["key.hex"][run if run is not None else rows]))
        out[:, 32:32 + len(sep)] = sep
        out[:, 32 + len(sep):-1] = hashes
        out[:, -1] = 0x0A
        return out.tobytes()[:-1].decode("ascii").split("\n")

    def truths(self, rows: np.ndarray, full_precision: bool) -> tuple[np.ndarray, np.ndarray]:
        """(flat values, offsets) of the rows' true values, gathered in ``rows`` order."""
        name = "truth_full" if full_precision and "truth_full" in self._arrays else "truth"
        flat, offsets = self._arrays[name], self._arrays[f"{name}.offsets"]
        if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows) and bool(np.all(np.diff(rows) == 1)):
            first, last = int(offsets[rows[0]]), int(offsets[rows[-1] + 1])  # consecutive rows: one slice
            return np.array(flat[first:last], dtype=np.float64), np.asarray(offsets[rows[0]:rows[-1] + 2]) - first
        starts, ends = offsets[rows], offsets[rows + 1]
        lengths = ends - starts
        out_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_offsets[1:])
        if len(rows) and np.all(lengths == lengths[0]):
            k = int(lengths[0])
            if k == 0:
                return np.zeros(0, dtype=np.float64), out_offsets
            take = (starts[:, None] + np.arange(k)[None, :]).reshape(-1)
            return np.asarray(flat[take], dtype=np.float64), out_offsets
        take = np.repeat(starts - out_offsets[:-1], lengths) + np.arange(int(out_offsets[-1]))
        return np.asarray(flat[take], dtype=np.float64), out_offsets

    def line(self, plan_path: Path, row: int) -> bytes:
        """The bytes of plan line ``row`` (without its newline)."""
        offsets = self._arrays["line"]
        start, end = int(offsets[row]), int(offsets[row + 1])
        with open(plan_path, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start).rstrip(b"\n")


def open_store(run_dir: Path) -> PlanStore | None:
    """The run's plan columns, or None when missing, unreadable, of another version or stale
    (plan.jsonl's size or mtime is not the recorded one)."""
    run_dir = Path(run_dir)
    directory = run_dir / STORE_DIR
    try:
        index = json.loads((directory / INDEX).read_text(encoding="utf-8"))
        if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
            return None
        stat = os.stat(run_dir / "plan.jsonl")
        plan = index["plan"]
        if plan["size"] != stat.st_size or plan["mtime_ns"] != stat.st_mtime_ns:
            return None
        return PlanStore(directory, index)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def plan_sha256(run_dir: Path) -> str:
    return plan_fingerprint(run_dir, "sha256")


def plan_fingerprint(run_dir: Path, name: str = PLAN_HASH) -> str:
    """plan.jsonl's fingerprint ``name`` (what the index records; ``sha256`` for an older index)."""
    h = _new_hash() if name == PLAN_HASH else hashlib.sha256()
    with open(Path(run_dir) / "plan.jsonl", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
