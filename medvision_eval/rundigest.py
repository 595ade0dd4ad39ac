"""The inputs digest of a run directory without importing the score step.

:func:`inputs_digest` is what ``results.json`` records as ``inputs_digest``: a sha256 over this
package's version and the bytes of everything scoring reads (``run.json``, ``plan.jsonl``, every
response file, every ``judged_<task>.jsonl``). ``scoring.inputs_digest`` computes the same value
(a test keeps them equal); this module exists so a finished rerun (:mod:`.manifest`) can check
``results.json`` without loading the scoring code.

:func:`digests` also computes, in the same read of ``plan.jsonl``, the fingerprint the plan
columns' index recorded for it (:data:`PLAN_HASHES`: ``xxh3_128`` for an index written by this
version, ``sha256`` for an older one), so the score step can check that ``plan.columns/``
belongs to this ``plan.jsonl`` without hashing it a second time with sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .judge import JUDGED_PREFIX
from .store import PLAN, RUN_CONFIG, response_files

BLOCK = 1 << 20  # bytes read at a time (into one reused buffer)


def _xxh3_128() -> Any:
    import xxhash

    return xxhash.xxh3_128()


# the fingerprints a plan columns index may record of plan.jsonl, by their field name there
PLAN_HASHES: dict[str, Callable[[], Any]] = {"xxh3_128": _xxh3_128, "sha256": hashlib.sha256}


def inputs_digest(run_dir: Path) -> str:
    """Digest of everything scoring reads: run.json, plan.jsonl, every response and judged file."""
    return digests(run_dir, None)[0]


def digests(run_dir: Path, plan_hash: str | None = "sha256") -> tuple[str, str | None]:
    """:func:`inputs_digest` and plan.jsonl's own ``plan_hash`` (a :data:`PLAN_HASHES` name: what
    the plan columns record; None: not computed), from one read of each file."""
    run_dir = Path(run_dir)
    h = hashlib.sha256(__version__.encode())
    plan = PLAN_HASHES[plan_hash]() if plan_hash is not None else None
    judged = sorted(run_dir.glob(f"{JUDGED_PREFIX}*.jsonl"))
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    for path in [run_dir / RUN_CONFIG, run_dir / PLAN, *response_files(run_dir), *judged]:
        h.update(path.name.encode())
        also = plan.update if plan is not None and path.name == PLAN and path.parent == run_dir else None
        with open(path, "rb", buffering=0) as fh:
            while size := fh.readinto(buffer):
                piece = view[:size] if size < BLOCK else view
                h.update(piece)
                if also is not None:
                    also(piece)
    return h.hexdigest(), plan.hexdigest() if plan is not None else None
