"""The run directory: an append-only response log that survives crashes, and atomic outputs.

Layout of ``RUN_DIR``::

    run.json                 resolved configuration of the latest invocation
    plan.jsonl               the samples this run covers, one per line (task, cache key, sample)
    responses.jsonl          every model answer, appended and flushed the moment it arrives
    responses.rank<N>.jsonl  the same, written by rank N of a data-parallel launch
    samples_<task>.jsonl     written by the score step: one line per planned sample
    results.json             written by the score step

A response line is valid JSON or it is the torn tail of a write interrupted by a kill; the
torn tail is cut off before the next append, so nothing complete is ever lost or duplicated.
Failed calls are logged too (for the record) but never count as cached answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .schema import Response, Sample, stable_hash

RESPONSES = "responses.jsonl"
PLAN = "plan.jsonl"
RUN_CONFIG = "run.json"
RESULTS = "results.json"


class ResponseRecord(BaseModel):
    """One line of ``responses.jsonl``."""

    key: str  # cache key
    task: str
    sample_id: str
    prompt_hash: str
    response: Response
    time: float = Field(default_factory=time.time)

    @property
    def completed(self) -> bool:
        return self.response.ok


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

    def key(sample_id: str, prompt_hash: str) -> str:
        text = head + dump(prompt_hash) + ',"sample":' + dump(sample_id) + tail
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    return key


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict[str, Any]]) -> None:
    lines = []
    for row in rows:
        if isinstance(row, BaseModel):
            lines.append(row.model_dump_json())
        else:
            lines.append(json.dumps(row, allow_nan=True))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


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
            self._fh = open(self.path, "a", encoding="utf-8")
        return self._fh

    def append(self, record: ResponseRecord) -> None:
        fh = self._open()
        fh.write(record.model_dump_json() + "\n")
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
                record = ResponseRecord.model_validate_json(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a valid response record: {exc}") from exc
            old = best.get(record.key)
            if old is None or record.completed or not old.completed:
                best[record.key] = record
    return best


def write_plan(run_dir: Path, entries: Iterable[PlanEntry]) -> None:
    write_jsonl(Path(run_dir) / PLAN, entries)


def load_plan(run_dir: Path) -> list[PlanEntry]:
    path = Path(run_dir) / PLAN
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a medvision-eval run directory")
    return [PlanEntry.model_validate_json(line) for _, line in iter_jsonl(path)]


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=2, allow_nan=True) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
