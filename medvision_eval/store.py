"""The run directory: an append-only response log that survives crashes, and atomic outputs.

Layout of ``RUN_DIR``::

    run.json                 resolved configuration of the latest invocation
    plan.jsonl               the samples this run covers, one per line (task, cache key, sample)
    plan.columns/            the plan's scoring fields as NumPy columns (medvision_eval.planstore)
    responses.jsonl          every model answer, appended and flushed the moment it arrives
    responses.rank<N>.jsonl  the same, written by rank N of a data-parallel launch
    samples_<task>.jsonl     written by the score step: one line per planned sample
    results.json             written by the score step

A response line is valid JSON or it is the torn tail of a write interrupted by a kill; the
torn tail is cut off before the next append, so nothing complete is ever lost or duplicated.
Failed calls are logged too (for the record) but never count as cached answers.

Every file written here is strict JSON (RFC 8259, readable by any parser): a non-finite number
is written as ``null`` and the row (or document) gets ``"null_reasons": {JSON pointer: reason}``
saying what it was and why; reading a plan or response file restores the value. Any text a
model returns is storable: lone UTF-16 surrogates (not encodable as UTF-8) are stored as U+FFFD
with their code points in the record (``ResponseRecord.surrogates``), so the exact text is
recoverable (:meth:`ResponseRecord.original_text`). Known secrets are masked in everything
written (:mod:`medvision_eval.secrets`). Temporary files of atomic writes that a SIGKILL left
behind are removed when the next run opens the directory (:func:`clean_temp_files`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel, Field, model_validator

from . import secrets
from .schema import Response, Sample, stable_hash

RESPONSES = "responses.jsonl"
PLAN = "plan.jsonl"
RUN_CONFIG = "run.json"
RESULTS = "results.json"
NULL_REASONS = "null_reasons"  # JSON pointer -> why a value is null (it was NaN or infinite)
TEMP_PATTERN = ".*.tmp"  # atomic_write_text's temporary files: ".<name>.<random>.tmp"

_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_FINITE_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
DEFAULT_NAN_REASON = "undefined (nothing finite to compute it from, e.g. no parsed answer)"
DEFAULT_INF_REASON = "overflow (the value is infinite)"


def split_surrogates(text: str) -> tuple[str, list[list[int]]]:
    """``text`` with lone surrogates replaced by U+FFFD, and ``[[position, code point], ...]``."""
    found = [[m.start(), ord(m.group())] for m in _SURROGATE.finditer(text)]
    if not found:
        return text, []
    return _SURROGATE.sub("\ufffd", text), found


def join_surrogates(text: str, found: list[list[int]]) -> str:
    """Undo :func:`split_surrogates`."""
    chars = list(text)
    for position, code in found:
        chars[position] = chr(code)
    return "".join(chars)


def _pointer(path: str, key: object) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _strict_value(obj: Any, path: str, reasons: dict[str, str], why: dict[str, str]) -> Any:
    if isinstance(obj, float) or (type(obj).__module__ == "numpy" and hasattr(obj, "dtype") and getattr(obj, "ndim", 1) == 0):
        try:
            value = float(obj)
        except (TypeError, ValueError):
            return obj
        if math.isfinite(value):
            return value if isinstance(obj, float) else obj.item()
        word = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        detail = why.get(path) or (DEFAULT_NAN_REASON if word == "NaN" else DEFAULT_INF_REASON)
        reasons[path] = f"{word}: {detail}"
        return None
    if isinstance(obj, str):
        if _SURROGATE.search(obj):
            clean, found = split_surrogates(obj)
            reasons[path] = "text: lone UTF-16 surrogates replaced by U+FFFD at " + json.dumps(found)
            return clean
        return obj
    if isinstance(obj, dict):
        return {k: _strict_value(v, _pointer(path, k), reasons, why) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_value(v, _pointer(path, i), reasons, why) for i, v in enumerate(obj)]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy arrays
        return _strict_value(obj.tolist(), path, reasons, why)
    return obj


def strict_jsonable(obj: Any, why: dict[str, str] | None = None) -> Any:
    """``obj`` with every non-finite float replaced by None and (for a dict) ``null_reasons``
    added: JSON pointer -> "NaN: <reason>" / "Infinity: <reason>". ``why`` gives reasons by pointer."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="python")
    reasons: dict[str, str] = {}
    clean = _strict_value(obj, "", reasons, why or {})
    if reasons:
        if not isinstance(clean, dict):
            clean = {"value": clean}
            reasons = {"/value" + k: v for k, v in reasons.items()}
        clean[NULL_REASONS] = {**clean.get(NULL_REASONS, {}), **reasons}
    return clean


def strict_dumps(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (see :func:`strict_jsonable`)."""
    if indent is None and type(obj) in _DIRECT_JSON:
        raw = _direct_json(obj)
        if raw is not None:
            return raw
    if isinstance(obj, BaseModel):
        # A model's own JSON writes NaN as a silent null; dumping to Python first keeps it visible.
        data = obj.model_dump(mode="python")
        try:
            raw = pydantic_core.to_json(data, indent=indent, inf_nan_mode="constants").decode("utf-8")
        except (pydantic_core.PydanticSerializationError, UnicodeError, ValueError):
            raw = None
        if raw is not None and "NaN" not in raw and "Infinity" not in raw:
            return raw
        return json.dumps(strict_jsonable(data), indent=indent, allow_nan=False, ensure_ascii=False)
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
        return text
    except (ValueError, UnicodeError):
        return json.dumps(strict_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def _direct_json(obj: BaseModel) -> str | None:
    """The compact JSON of a model from its own serializer, skipping the Python dump in between;
    None when the text could differ from the general path's (a value it cannot serialize, or a
    ``null``/``NaN``/``Infinity`` anywhere in it: the model serializer writes a non-finite float as
    ``null``, so any such line takes the general path, which records it in ``null_reasons``)."""
    try:
        raw = type(obj).__pydantic_serializer__.to_json(obj).decode("utf-8")
    except (pydantic_core.PydanticSerializationError, UnicodeError, ValueError):
        return None
    if "null" in raw or "NaN" in raw or "Infinity" in raw:
        return None
    return raw


def restore_non_finite(obj: Any) -> Any:
    """Put back the NaN/inf values that :func:`strict_jsonable` wrote as null (internal files)."""
    if not isinstance(obj, dict) or NULL_REASONS not in obj:
        return obj
    reasons = obj.pop(NULL_REASONS)
    for pointer, reason in reasons.items():
        word = str(reason).split(":", 1)[0]
        if word not in _NON_FINITE_WORDS:
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        node: Any = obj
        try:
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node[part]
            last = parts[-1]
            if isinstance(node, list):
                node[int(last)] = _NON_FINITE_WORDS[word]
            else:
                node[last] = _NON_FINITE_WORDS[word]
        except (KeyError, IndexError, ValueError, TypeError):
            continue
    return obj


def load_model_line(cls: type[BaseModel], line: str) -> Any:
    """One JSONL line as ``cls``: the fast pydantic parser, else json (surrogate escapes, nulls)."""
    if NULL_REASONS not in line:
        try:
            return cls.model_validate_json(line)
        except ValueError:
            pass
    return cls.model_validate(restore_non_finite(json.loads(line)))


class ResponseRecord(BaseModel):
    """One line of ``responses.jsonl``."""

    key: str  # cache key
    task: str
    sample_id: str
    prompt_hash: str
    response: Response
    time: float = Field(default_factory=time.time)
    # Lone UTF-16 surrogates of the answer/error (a real server can send "\ud800"), which UTF-8
    # cannot encode: the stored text holds U+FFFD there; field -> [[position, code point], ...].
    surrogates: dict[str, list[list[int]]] | None = None

    @model_validator(mode="after")
    def _storable(self) -> "ResponseRecord":
        found: dict[str, list[list[int]]] = dict(self.surrogates or {})
        update: dict[str, str] = {}
        for name in ("text", "error"):
            value = getattr(self.response, name)
            if value is not None and _SURROGATE.search(value):
                update[name], found[name] = split_surrogates(value)
        if update:
            self.response = self.response.model_copy(update=update)
            self.surrogates = found
        return self

    @property
    def completed(self) -> bool:
        return self.response.ok

    def original_text(self, field: str = "text") -> str | None:
        """The answer (or error) exactly as the model returned it, lone surrogates included."""
        value = getattr(self.response, field)
        found = (self.surrogates or {}).get(field)
        return join_surrogates(value, found) if value is not None and found else value


class PlanEntry(BaseModel):
    """One line of ``plan.jsonl``: a sample the run must answer, with its cache key."""

    task: str
    key: str
    prompt_hash: str
    order: int = 0  # position in the unsharded plan, so merged shards keep the run's order
    sample: Sample
    # The exact messages sent (text, and image parts by reference); prompt_hash is their stable_hash.
    # Stored so that debugging and 'medvision-eval view' need no re-planning. None in older plans.
    prompt: list[dict[str, Any]] | None = None


# Models whose own serializer writes what strict_dumps' general path writes, byte for byte, when
# no value is non-finite (their fields: str, int, float, tuples, models, JSON-like Any values).
_DIRECT_JSON: set[type[BaseModel]] = {PlanEntry}


def cache_key(
    model_identity: dict[str, Any],
    task_fingerprint: str,
    sample_id: str,
    prompt_hash: str,
    generation: dict[str, Any],
) -> str:
    """Identity of one answer. Two models, prompts, tasks or decoding settings never share it."""
    return stable_hash(
        {
            "model": model_identity,
            "task": task_fingerprint,
            "sample": sample_id,
            "prompt": prompt_hash,
            "generation": generation,
        },
        n=32,
    )


def cache_key_function(
    model_identity: dict[str, Any], task_fingerprint: str, generation: dict[str, Any]
) -> Callable[[str, str], str]:
    """``cache_key`` with the run-constant parts serialised once: ``key(sample_id, prompt_hash)``.

    Builds the same canonical JSON text (keys sorted, compact) that ``stable_hash`` hashes, so the
    keys are identical; planning calls it once per sample.
    """

    def dump(obj: Any) -> str:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)

    head = '{"generation":' + dump(generation) + ',"model":' + dump(model_identity) + ',"prompt":'
    tail = ',"task":' + dump(task_fingerprint) + "}"
    quote = json.encoder.encode_basestring_ascii  # what json.dumps does with a str, without its set-up
    hashed_head = hashlib.sha256(head.encode())  # the hash state after the run-constant head

    def key(sample_id: str, prompt_hash: str) -> str:
        if type(sample_id) is str and type(prompt_hash) is str:
            rest = quote(prompt_hash) + ',"sample":' + quote(sample_id) + tail
        else:
            rest = dump(prompt_hash) + ',"sample":' + dump(sample_id) + tail
        digest = hashed_head.copy()
        digest.update(rest.encode())
        return digest.hexdigest()[:32]

    return key


def _storable_bytes(text: str) -> bytes:
    """UTF-8 of ``text`` with known secrets masked and lone surrogates as U+FFFD."""
    text = secrets.mask(text)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # only lone surrogates cannot be encoded
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def atomic_write_pieces(path: Path, pieces: Iterable[bytes]) -> None:
    """Write the bytes of ``pieces`` to ``path`` atomically (see :func:`atomic_write_text`)."""
    _atomic_write(path, pieces)


# A large file is flushed to disk in the background as it is written: after every FLUSH_EVERY
# bytes a helper thread starts an fdatasync of what has been written so far, while the writer goes
# on producing the rest, so the final fsync (which makes the file durable before its rename) finds
# little left to write. A small file never starts the thread.
FLUSH_EVERY = 32 << 20


class _BackgroundFlush:
    """fdatasync of one open file on a helper thread, on request; errors surface in :meth:`finish`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: BaseException | None = None
        self._wanted = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="medvision-eval-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop:
                return
            try:
                os.fdatasync(self.fd) if hasattr(os, "fdatasync") else os.fsync(self.fd)
            except BaseException as exc:  # reported by finish(); no more flushing
                self.error = exc
                return

    def request(self) -> None:
        """Flush what is written now (if a flush is running, one more follows it)."""
        self._wanted.set()

    def finish(self) -> None:
        """Stop the thread (after a flush in progress ends); raise the error a flush met."""
        self._stop = True
        self._wanted.set()
        self._thread.join()
        if self.error is not None:
            raise self.error


def _write_flushing(fh: Any, pieces: Iterable[bytes]) -> None:
    """Write ``pieces`` to ``fh`` (a binary file), flushed into the OS; past :data:`FLUSH_EVERY`
    bytes a :class:`_BackgroundFlush` writes them on to disk meanwhile. The helper is stopped
    before this returns or raises (a flush error is raised here)."""
    flusher: _BackgroundFlush | None = None
    try:
        unflushed = 0
        for piece in pieces:
            if unflushed + len(piece) < FLUSH_EVERY:
                fh.write(piece)
                unflushed += len(piece)
                continue
            view = memoryview(piece)  # a large piece in parts, so its start is on disk before its end
            while len(view):
                part = view[:FLUSH_EVERY - unflushed]
                fh.write(part)
                unflushed += len(part)
                view = view[len(part):]
                if unflushed >= FLUSH_EVERY:
                    fh.flush()  # into the OS, so the helper's fdatasync covers it
                    if flusher is None:
                        flusher = _BackgroundFlush(fh.fileno())
                    flusher.request()
                    unflushed = 0
        fh.flush()
    except BaseException:
        if flusher is not None:  # the write failed: stop the helper quietly, report the failure
            try:
                flusher.finish()
            except BaseException:
                pass
        raise
    if flusher is not None:
        flusher.finish()


def _atomic_write(path: Path, pieces: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
        with os.fdopen(fd, "wb") as fh:
            _write_flushing(fh, pieces)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a torn one.
    Known secrets are masked; lone surrogates (not UTF-8) become U+FFFD."""
    _atomic_write(path, [_storable_bytes(text)])


LINES_PER_PIECE = 4096


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """:func:`atomic_write_text` of ``"".join(lines)`` (each line ending in a newline), written a few
    thousand lines at a time so the whole text is never in memory. Masking a piece that ends at a
    line boundary masks what masking the whole text would, as no secret spans a newline (a secret
    that does makes this join everything first)."""
    if secret_lines():
        atomic_write_text(path, "".join(lines))
        return
    _atomic_write(path, storable_pieces(lines))


def secret_lines() -> bool:
    """Whether a known secret spans a newline (then text must be masked whole, not line by line)."""
    return any("\n" in secret for secret in secrets.known())


def storable_pieces(lines: Iterable[str]) -> Iterator[bytes]:
    """The UTF-8 of ``lines`` (masked, U+FFFD for lone surrogates), a few thousand lines a piece."""
    it = iter(lines)
    while batch := list(islice(it, LINES_PER_PIECE)):
        yield _storable_bytes("".join(batch))


def write_byte_lines(path: Path, pieces: Iterable[bytes]) -> None:
    """:func:`write_lines` of text that is already UTF-8: ``pieces`` are bytes, each ending at a
    line end (``b"\\n"``). Known secrets are masked in the bytes (the same result as masking the
    text: UTF-8 matches only at character boundaries), without decoding or joining the pieces;
    the file is written atomically like every other (background flush, fsync, rename)."""
    if secret_lines():
        atomic_write_text(path, b"".join(pieces).decode("utf-8"))
        return
    _atomic_write(path, _masked_bytes(pieces))


def _masked_bytes(pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        for secret in secrets.known():
            encoded = secret.encode("utf-8", "surrogatepass")
            if encoded in piece:
                piece = piece.replace(encoded, secrets.MASK.encode())
        yield piece


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict[str, Any]]) -> None:
    """Strict JSON, one row a line (non-finite -> null + ``null_reasons``), written atomically."""
    atomic_write_text(path, "".join(strict_dumps(row) + "\n" for row in rows))


def clean_temp_files(directory: Path) -> list[Path]:
    """Remove temporary files of interrupted atomic writes (a SIGKILL between write and rename)."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for tmp in directory.glob(TEMP_PATTERN):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def iter_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    """Complete lines of a JSONL file with their line numbers; a torn final line is skipped."""
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the last element is b"" when the file ends with a newline, else torn
    for number, raw in enumerate(complete, start=1):
        if raw.strip():
            yield number, raw.decode("utf-8")


class ResponseLog:
    """Append-only, flushed, crash-safe log of responses for one process of a run."""

    def __init__(self, run_dir: Path, *, rank: int = 0, fsync_every: int = 64) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / (RESPONSES if rank == 0 else f"responses.rank{rank}.jsonl")
        self.fsync_every = fsync_every
        self._fh = None
        self._since_sync = 0

    def _open(self):
        if self._fh is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            repair_torn_tail(self.path)
            self._fh = open(self.path, "a", encoding="utf-8", errors="replace")
        return self._fh

    def append(self, record: ResponseRecord) -> None:
        fh = self._open()
        fh.write(secrets.mask(strict_dumps(record)) + "\n")
        fh.flush()  # in the OS now: a killed process loses nothing written
        self._since_sync += 1
        if self._since_sync >= self.fsync_every:
            os.fsync(fh.fileno())  # on disk: survives power loss too
            self._since_sync = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResponseLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_torn_tail(path: Path) -> None:
    """Cut a partial last line (left by a kill mid-write) so the next append starts clean."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # scan back to the last newline
        block = 4096
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                fh.truncate(start + idx + 1)
                return
            pos = start
        fh.truncate(0)


def response_files(run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    files = [run_dir / RESPONSES] if (run_dir / RESPONSES).exists() else []
    files += sorted(run_dir.glob("responses.rank*.jsonl"))
    return files


def load_responses(run_dir: Path) -> dict[str, ResponseRecord]:
    """Latest record per cache key across all response files; completed answers win over errors."""
    best: dict[str, ResponseRecord] = {}
    for path in response_files(run_dir):
        for number, line in iter_jsonl(path):
            try:
                record = load_model_line(ResponseRecord, line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a valid response record: {exc}") from exc
            old = best.get(record.key)
            if old is None or record.completed or not old.completed:
                best[record.key] = record
    return best


def write_plan(run_dir: Path, entries: Iterable[PlanEntry]) -> None:
    """Write ``plan.jsonl`` atomically, and the plan's scoring columns next to it
    (:mod:`medvision_eval.planstore`); entries are consumed one at a time."""
    from .planstore import write_plan as write_with_columns

    write_with_columns(Path(run_dir), entries)


def load_plan(run_dir: Path) -> list[PlanEntry]:
    path = Path(run_dir) / PLAN
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a medvision-eval run directory")
    entries = []
    for number, line in iter_jsonl(path):
        try:
            entries.append(load_model_line(PlanEntry, line))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not a valid plan entry: {exc}") from exc
    return entries


def write_json(path: Path, obj: Any, *, why: dict[str, str] | None = None) -> None:
    """Strict JSON document (non-finite -> null + ``null_reasons``; ``why``: reasons by pointer)."""
    if why:
        text = json.dumps(strict_jsonable(obj, why), indent=2, allow_nan=False, ensure_ascii=False)
    else:
        text = strict_dumps(obj, indent=2)
    atomic_write_text(Path(path), text + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
