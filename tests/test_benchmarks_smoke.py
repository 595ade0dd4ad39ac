"""The README's benchmark commands run (at toy sizes) and print the lines the README quotes.

No timing is asserted here: figures depend on the machine and its load; the benchmarks print them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(name: str, *args: str, tmp_path: Path, timeout: int = 900) -> str:
    env = dict(os.environ, MEDVISION_BENCH_CACHE=str(tmp_path / "bench-cache"))
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_bench_scoring_runs_both_paths_side_by_side(tmp_path):
    out = bench("bench_scoring.py", "--sizes", "300", tmp_path=tmp_path)
    assert "cores: " in out and "load average" in out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("300 samples"))
    assert "ours" in lines[at] and "fallback (no plan columns)" in lines[at + 1]
    assert "official v1 path" in lines[at + 2] and "speed-up" in lines[at + 2] and "memory" in lines[at + 2]
    assert "targets: wall" in lines[at + 3] and "the 10 s budget" in lines[at + 3] and "x official" in lines[at + 3]
    cache = tmp_path / "bench-cache" / "scoring"
    assert (cache / "detection-store-300" / "plan.columns" / "index.json").exists()  # written as the package does
    assert (cache / "detection-store-300" / "results.json").exists()
    assert (cache / "detection-store-300-jsonl" / "results.json").exists()
    assert not (cache / "detection-store-300-jsonl" / "plan.columns").exists()
    # the official path not timed this time: its recorded figure, labelled, for all three targets
    again = bench("bench_scoring.py", "--sizes", "300", "--official-max", "0", tmp_path=tmp_path).splitlines()
    recorded = next(line for line in again if "official v1 path as recorded" in line)
    verdict = again[again.index(recorded) + 1]
    assert "targets: wall" in verdict and "speed-up" in verdict and "memory" in verdict and "load" in recorded


def test_bench_harness_overhead_section_runs(tmp_path):
    out = bench("bench_harness.py", "--volumes", "1", "--slices", "12", "--only", "a", tmp_path=tmp_path)
    assert "(a) harness overhead" in out and "samples/s" in out


def test_bench_startup_lists_imports(tmp_path):
    out = bench("bench_startup.py", "--repeat", "1", "--top", "3", tmp_path=tmp_path)
    assert "finished demo rerun" in out and "python -X importtime" in out
    after = out.split("largest cumulative:", 1)[1].splitlines()[1:4]
    assert len(after) == 3 and all(line.strip().split()[0].endswith("s") for line in after)


def test_bench_kernels_compares_old_and_new_side_by_side(tmp_path):
    out = bench("bench_kernels.py", "--size", "300", "--repeat", "1", tmp_path=tmp_path)
    assert "cores: " in out and "load" in out
    assert "parse_last_k_many, 32,768 answers a call: new" in out and "speed-up" in out
    assert "results identical to the old code: yes" in out
    assert "scan_answers" in out and "their answers identical: yes" in out
    assert "write_lines" in out and "the same bytes as the original: yes" in out
