"""Start-up: the first demo run and its finished rerun side by side, and where the rerun's imports go.

    python benchmarks/bench_startup.py [--repeat 5] [--top 12]

Runs ``medvision-eval --tasks detection,tl_size,ad_measure --model prior`` into a fresh output
directory (the first run: plan, predict, score; timed), then the same command ``--repeat`` times:
each rerun finds the run finished, scored and its inputs unchanged (``run.json``'s plan manifest),
so it plans nothing, sends nothing and scores nothing - its wall time is Python start-up, imports
and the checks. Prints the first run and the median/best rerun next to ``python -c pass`` and
``medvision-eval --help`` measured the same way (goal: rerun <= 1 s), whether the reruns left
``plan.jsonl`` and ``results.json`` untouched (the fast path), then reruns once under
``python -X importtime`` and lists the modules with the largest cumulative import time.

Child processes run with bytecode caching on (``PYTHONDONTWRITEBYTECODE`` removed), as an
installed package runs: ``pip install`` compiles ``.pyc`` files, a source checkout writes them on
first use. The first run warms them, so every timed rerun reads compiled modules.
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
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(args: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True, env=ENV)
        out.append(time.perf_counter() - t0)
    return out


def import_top(args: list[str], top: int) -> tuple[float, list[tuple[float, str]]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], check=True, capture_output=True, text=True,
                          env=ENV)
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


def stamps(run_dir: Path) -> dict[str, int]:
    return {name: (run_dir / name).stat().st_mtime_ns for name in ("plan.jsonl", "run.json", "results.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "prior"
        run = ["-m", "medvision_eval.cli", *CMD, "--output", str(run_dir)]
        subprocess.run([sys.executable, "-m", "medvision_eval.cli", "--help"], check=True, capture_output=True,
                       env=ENV)  # the demo data and bytecode exist before anything is timed
        first = wall(run, 1)[0]
        before = stamps(run_dir)
        python = wall(["-c", "pass"], args.repeat)
        helps = wall(["-m", "medvision_eval.cli", "--help"], args.repeat)
        reruns = wall(run, args.repeat)
        untouched = stamps(run_dir) == before
        print(f"{'first demo run (plan, predict, score; 167 samples)':<52} {first:6.2f}s")
        for label, times in (("python -c pass", python), ("medvision-eval --help", helps),
                             ("finished demo rerun", reruns)):
            print(f"{label:<52} median {statistics.median(times):5.2f}s  best {min(times):5.2f}s")
        median = statistics.median(reruns)
        print(f"finished rerun / first run: {median / first:.1%};  plan.jsonl, run.json, results.json untouched by "
              f"the reruns (plan reused, nothing re-scored): {'yes' if untouched else 'NO'}")
        print(f"goal: finished demo rerun <= 1 s: {'met' if median <= 1.0 else 'MISSED'} "
              f"(median {median:.2f}s at load {os.getloadavg()[0]:.2f})")
        total, top = import_top(run, args.top)
        print(f"\nimports of the rerun (python -X importtime): {total:.2f}s in top-level imports; largest cumulative:")
        for seconds, name in top:
            print(f"  {seconds:6.3f}s  {name}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
