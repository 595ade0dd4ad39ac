"""The speed-ups change no number: the demo's samples files and results.json are the same bytes
(modulo timestamps) however the run is executed (batch size, volume cache size, prefetch) and
when the stored answers are scored again (``benchmarks/check_identical.py`` is the check)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from check_identical import compare_runs, rescore_and_compare  # noqa: E402

TASKS = "detection,tl_size,ad_measure"


def run(demo_root: Path, out: Path, *args: str, env_extra: dict | None = None) -> None:
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "medvision_eval.cli", "--tasks", TASKS, "--data", str(demo_root), "--output", str(out),
         "--quiet", *args],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_demo_outputs_identical_across_execution_settings_and_rescoring(demo_root, tmp_path):
    run(demo_root, tmp_path / "a", "--model", "random", "--batch-size", "3")
    # room for the volume in use only: a different decoding schedule (evictions, re-decodes)
    run(demo_root, tmp_path / "b", "--model", "random", "--batch-size", "3",
        env_extra={"MEDVISION_VOLUME_CACHE_MB": "0"})
    assert compare_runs(tmp_path / "a", tmp_path / "b") == []
    assert rescore_and_compare(tmp_path / "a") == []


def test_check_identical_reports_a_changed_number(demo_root, tmp_path):
    run(demo_root, tmp_path / "a", "--model", "prior")
    run(demo_root, tmp_path / "b", "--model", "prior")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "check_identical.py"
    same = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True,
                          text=True)
    assert same.returncode == 0 and "identical (modulo timestamps)" in same.stdout
    path = tmp_path / "b" / "samples_tl_size.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"status": "ok"', '"status": "missing"', 1)
    path.write_text("\n".join(lines) + "\n")
    problems = compare_runs(tmp_path / "a", tmp_path / "b")
    assert len(problems) == 1 and problems[0].startswith("samples_tl_size.jsonl: differs at line 1")
    differ = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True,
                            text=True)
    assert differ.returncode == 1 and "DIFFERENT" in differ.stdout and "samples_tl_size.jsonl" in differ.stdout


def test_bad_cache_size_is_one_error_line(demo_root, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "medvision_eval.cli", "--tasks", "detection", "--model", "prior", "--data",
         str(demo_root), "--output", str(tmp_path / "x"), "--quiet"],
        capture_output=True, text=True, env=dict(os.environ, MEDVISION_VOLUME_CACHE_MB="lots"), timeout=600,
    )
    assert proc.returncode == 2
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "MEDVISION_VOLUME_CACHE_MB='lots'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cache_key_function_gives_the_same_keys_as_cache_key():
    from medvision_eval.store import cache_key, cache_key_function

    identity = {"adapter": "hf", "pretrained": "/m/ü", "args": {"b": [1, 2.5, None], "a": True}}
    generation = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": None}
    key_of = cache_key_function(identity, "f1ng3rprint", generation)
    for sid, ph in [("Cfg/test/case_001/A12/3", "0123abcd"), ('odd "id"\\', "x"), ("ünï", "h#2")]:
        assert key_of(sid, ph) == cache_key(identity, "f1ng3rprint", sid, ph, generation)
