"""The inputs digest of a run directory without importing the score step.

:func:`inputs_digest` is what ``results.json`` records as ``inputs_digest``: a sha256 over this
package's version and the bytes of everything scoring reads (``run.json``, ``plan.jsonl``, every
response file, every ``judged_<task>.jsonl``). ``scoring.inputs_digest`` computes the same value
(a test keeps them equal); this module exists so a finished rerun (:mod:`.manifest`) can check
``results.json`` without loading the scoring code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import __version__
from .judge import JUDGED_PREFIX
from .store import PLAN, RUN_CONFIG, response_files


def inputs_digest(run_dir: Path) -> str:
    """Digest of everything scoring reads: run.json, plan.jsonl, every response and judged file."""
    return digests(run_dir)[0]


def digests(run_dir: Path) -> tuple[str, str]:
    """:func:`inputs_digest` and the sha256 of plan.jsonl alone (what the plan columns record),
    from one read of each file."""
    run_dir = Path(run_dir)
    h = hashlib.sha256(__version__.encode())
    plan = hashlib.sha256()
    judged = sorted(run_dir.glob(f"{JUDGED_PREFIX}*.jsonl"))
    for path in [run_dir / RUN_CONFIG, run_dir / PLAN, *response_files(run_dir), *judged]:
        h.update(path.name.encode())
        also = plan.update if path.name == PLAN and path.parent == run_dir else None
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
                if also is not None:
                    also(block)
    return h.hexdigest(), plan.hexdigest()
