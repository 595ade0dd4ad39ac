"""Start-up: a finished demo rerun as a user runs it, and where its import time goes.

    python benchmarks/bench_startup.py [--repeat 5] [--top 12]

Runs ``medvision-eval --tasks detection,tl_size,ad_measure --model prior`` once into a fresh
output directory (the first run, not timed), then the same command ``--repeat`` times: each
rerun finds every answer stored and ``results.json`` current, so it sends nothing and scores
nothing - its wall time is Python start-up, imports, planning and the checks. Prints the median
and best rerun wall time (goal <= 1 s) next to ``python -c pass`` and ``medvision-eval --help``
measured the same way, then reruns once under ``python -X importtime`` and lists the modules with
the largest cumulative import time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CMD = ["--tasks", "detection,tl_size,ad_measure", "--model", "prior", "--quiet"]


def wall(args: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def import_top(args: list[str], top: int) -> tuple[float, list[tuple[float, str]]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], check=True, capture_output=True, text=True)
    rows: list[tuple[float, str, int]] = []
    for line in proc.stderr.splitlines():  # "import time:  self_us |  cumulative_us |   <indent>name"
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((int(parts[1]) / 1e6, name.strip(), depth))
    total = sum(c for c, _, d in rows if d == min(r[2] for r in rows))  # top-level imports
    return total, [(c, n) for c, n, _ in sorted(rows, key=lambda r: -r[0])[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        run = ["-m", "medvision_eval.cli", *CMD, "--output", str(Path(tmp) / "prior")]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *run], check=True, capture_output=True)
        first = time.perf_counter() - t0
        python = wall(["-c", "pass"], args.repeat)
        helps = wall(["-m", "medvision_eval.cli", "--help"], args.repeat)
        reruns = wall(run, args.repeat)
        print(f"first demo run (predict + score, 167 samples)  {first:6.2f}s")
        for label, times in (("python -c pass", python), ("medvision-eval --help", helps),
                             ("finished demo rerun", reruns)):
            print(f"{label:<45} median {statistics.median(times):5.2f}s  best {min(times):5.2f}s")
        print(f"finished rerun / first run: {statistics.median(reruns) / first:.1%};  goal: rerun <= 1 s: "
              f"{'met' if statistics.median(reruns) <= 1.0 else 'MISSED'}")
        total, top = import_top(run, args.top)
        print(f"\nimports of the rerun (python -X importtime): {total:.2f}s in top-level imports; largest cumulative:")
        for seconds, name in top:
            print(f"  {seconds:6.3f}s  {name}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
