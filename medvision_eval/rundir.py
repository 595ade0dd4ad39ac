"""One run directory holds one run.

* :class:`RunDirLock` - a ``filelock`` on ``<dir>/.medvision-eval.lock`` held for the whole
  invocation: a second run on the same directory is refused at once with a clear message
  (two concurrent runs sent most requests twice).
* :func:`check_identity` - an invocation whose model, model arguments (the model's identity),
  generation settings, protocol or task set differs from the run already in the directory is
  refused, saying to use a new ``--output`` or pass ``--overwrite``; ``--overwrite`` clears the
  run's files first (:func:`clear_run`).
* :func:`remove_stale_outputs` - per-task files of tasks this run does not score are removed, so
  no later reader (report, compare) ever takes them for this run's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .store import PLAN, RESULTS, RUN_CONFIG, clean_temp_files, read_json

LOCK_NAME = ".medvision-eval.lock"
# What an --overwrite removes: everything a run writes, nothing else.
RUN_FILES = (RUN_CONFIG, PLAN, RESULTS, "responses.jsonl", "data_problems.txt")
RUN_GLOBS = ("responses.rank*.jsonl", "samples_*.jsonl", "data_problems.rank*.txt", ".done.rank*")


class RunDirError(Exception):
    """The run directory cannot be used for this invocation (exit code 2); says what to do."""


def check_output_path(output: Path) -> None:
    """``--output`` must be a directory (or not exist yet)."""
    if output.exists() and not output.is_dir():
        raise RunDirError(f"--output {output} is a file, not a directory; give a directory path "
                          "(it is created if missing), e.g. --output runs/my-run")
    parent = output.parent if not output.exists() else output
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise RunDirError(f"--output {output}: {parent} is a file, so the directory cannot be created")


class RunDirLock:
    """Exclusive lock of a run directory for one invocation (rank 0 of a launch takes it)."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = self.output / LOCK_NAME
        self._lock: Any = None

    def acquire(self) -> None:
        from filelock import FileLock, Timeout

        self.output.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirError(
                f"another medvision-eval run is using {self.output} right now (lock {self.path}); "
                "wait for it to finish, or give this run its own --output"
            ) from None
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def task_set(tasks: list[str]) -> list[str]:
    return sorted({t.strip() for t in tasks if t.strip()})


def run_identity(record: dict[str, Any]) -> dict[str, Any]:
    """What makes a run directory's answers one run's: comparable between run.json records."""
    config = record.get("config", {})
    protocol = record.get("protocol", {})
    return {
        "model": config.get("model"),
        "model identity (model arguments)": record.get("model_identity"),
        "generation settings": record.get("generation"),
        "protocol": protocol.get("name") if isinstance(protocol, dict) else protocol,
        "tasks": task_set(list(config.get("tasks", []))),
    }


def check_identity(output: Path, new_record: dict[str, Any]) -> None:
    """Refuse to mix two runs in one directory; no run.json yet means a fresh directory."""
    path = Path(output) / RUN_CONFIG
    if not path.exists():
        return
    try:
        old_record = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} is unreadable ({exc}); pass --overwrite to start a new run there, "
                          "or use a new --output") from None
    if old_record.get("merged_from"):
        raise RunDirError(f"{output} holds a merged run (medvision-eval merge); score or report it, "
                          "or use a new --output for a new run")
    old, new = run_identity(old_record), run_identity(new_record)
    differing = [name for name in new if old.get(name) != new.get(name)]
    if differing:
        details = "; ".join(_difference(name, old.get(name), new.get(name)) for name in differing)
        raise RunDirError(
            f"{output} already holds a different run ({details}). Use a new --output for this run, "
            "or pass --overwrite to replace the run in that directory"
        )


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _difference(name: str, old: Any, new: Any) -> str:
    """``name: a there, b now``; for nested settings only the keys that differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        a, b = _flat(old), _flat(new)
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return "; ".join(f"{name} {k}: {_short(a.get(k))} there, {_short(b.get(k))} now" for k in keys)
    return f"{name}: {_short(old)} there, {_short(new)} now"


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clear_run(output: Path) -> list[Path]:
    """``--overwrite``: remove the files a run wrote (and only those)."""
    output = Path(output)
    removed: list[Path] = []
    if not output.is_dir():
        return removed
    candidates = [output / name for name in RUN_FILES]
    for pattern in RUN_GLOBS:
        candidates += sorted(output.glob(pattern))
    for path in candidates:
        if path.is_file():
            path.unlink()
            removed.append(path)
    removed += clean_temp_files(output)
    return removed


def remove_stale_outputs(output: Path, tasks: list[str]) -> list[Path]:
    """Delete ``samples_<task>.jsonl`` of tasks not in this run (left by an older version or run)."""
    keep = {f"samples_{name}.jsonl" for name in task_set([t.partition(":")[0] for t in tasks])}
    removed = []
    for path in sorted(Path(output).glob("samples_*.jsonl")):
        if path.name not in keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def is_disk_full(exc: BaseException) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def writable(output: Path) -> None:
    """The directory can be written (checked before any model is loaded)."""
    output.mkdir(parents=True, exist_ok=True)
    if not os.access(output, os.W_OK | os.X_OK):
        raise RunDirError(f"--output {output} is not writable; choose another directory")
