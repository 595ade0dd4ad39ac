"""Prove a speed-up changed no number: compare two run directories file by file.

    python benchmarks/check_identical.py RUN_A RUN_B          # two runs of the same command
    python benchmarks/check_identical.py --rescore RUN_DIR     # re-score a copy with this code

Compared: ``plan.jsonl`` byte for byte; ``responses.jsonl`` as the set of answers per cache key
(arrival order, ``time`` and ``latency_s`` are wall-clock facts and differ between runs);
every ``samples_<task>.jsonl`` and ``results.json`` byte for byte after removing only the
timestamps (``latency_s`` per sample, ``created``), the environment block (git revision, host),
the output path and ``inputs_digest`` (a hash over the response files, which hold arrival times).
``--rescore`` copies RUN_DIR, scores the copy with the code on the path, and compares the
copy's outputs with the original's (written by whatever version scored it first).
Exit status 0 when identical, 1 with the first difference per file otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

LATENCY = re.compile(rb'"latency_s": ?(?:-?[0-9.eE+-]+|null|NaN)')


def _samples_bytes(path: Path) -> bytes:
    return LATENCY.sub(b'"latency_s": _', path.read_bytes())


def _results_bytes(path: Path) -> bytes:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("created", "inputs_digest", "environment"):
        data.pop(key, None)
    if isinstance(data.get("config"), dict):
        data["config"].pop("output", None)  # where the run was written
    # the original text layout is kept (indent 2), so any change of formatting shows as well
    return json.dumps(data, indent=2, allow_nan=True).encode()


def _responses(path: Path) -> dict[str, tuple]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            resp = rec.get("response", {})
            out[rec["key"]] = (rec.get("task"), rec.get("sample_id"), rec.get("prompt_hash"),
                               resp.get("text"), resp.get("error"))
    return out


def _first_diff(a: bytes, b: bytes) -> str:
    la, lb = a.split(b"\n"), b.split(b"\n")
    for i, (x, y) in enumerate(zip(la, lb), start=1):
        if x != y:
            at = next((j for j, (c, d) in enumerate(zip(x, y)) if c != d), min(len(x), len(y)))
            return f"line {i}, byte {at}: {x[max(0, at - 60):at + 60]!r} vs {y[max(0, at - 60):at + 60]!r}"
    return f"{len(la)} vs {len(lb)} lines"


def compare_runs(a: Path, b: Path, *, responses: bool = True) -> list[str]:
    """Differences between two run directories (empty list: identical modulo timestamps)."""
    a, b = Path(a), Path(b)
    problems: list[str] = []
    names = sorted({p.name for p in a.glob("samples_*.jsonl")} | {p.name for p in b.glob("samples_*.jsonl")})
    checks = [("plan.jsonl", lambda p: p.read_bytes())] + [(n, _samples_bytes) for n in names]
    checks.append(("results.json", _results_bytes))
    for name, read in checks:
        pa, pb = a / name, b / name
        if not pa.exists() or not pb.exists():
            problems.append(f"{name}: missing in {a if not pa.exists() else b}")
            continue
        xa, xb = read(pa), read(pb)
        if xa != xb:
            problems.append(f"{name}: differs at {_first_diff(xa, xb)}")
    if responses and (a / "responses.jsonl").exists():
        ra, rb = _responses(a / "responses.jsonl"), _responses(b / "responses.jsonl")
        if ra != rb:
            diff = sorted(k for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k))
            problems.append(f"responses.jsonl: {len(diff)} answers differ, e.g. key {diff[0]}")
    return problems


def rescore_and_compare(run_dir: Path) -> list[str]:
    from medvision_eval.scoring import score_run

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run_dir, copy)
        score_run(copy)
        return compare_runs(Path(run_dir), copy, responses=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--rescore", action="store_true", help="re-score a copy of each RUN_DIR and compare")
    args = parser.parse_args()
    if args.rescore:
        results = [(str(r), rescore_and_compare(r)) for r in args.runs]
    elif len(args.runs) == 2:
        results = [(f"{args.runs[0]} vs {args.runs[1]}", compare_runs(*args.runs))]
    else:
        parser.error("give two run directories, or --rescore RUN_DIR...")
    bad = False
    for label, problems in results:
        print(f"{label}: {'identical (modulo timestamps)' if not problems else 'DIFFERENT'}")
        for p in problems:
            print(f"  {p}")
        bad |= bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
