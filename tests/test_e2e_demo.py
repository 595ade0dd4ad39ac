"""End to end on the bundled demo data, through the installed CLI, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TASKS = "detection,tl_size,ad_measure"


@pytest.fixture
def demo_dir(demo_root) -> Path:
    """The demo data directory, built once per test session (``data_fixtures.demo_root``)."""
    return demo_root


def cli(*args: str, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "medvision_eval.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def metrics(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {t: {m: v["value"] for m, v in r["metrics"].items()} for t, r in results["tasks"].items()}


def sample_lines(run_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for path in sorted(run_dir.glob("samples_*.jsonl")):
        out[path.stem.removeprefix("samples_")] = [json.loads(line) for line in path.read_text().splitlines()]
    return out


def calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_prior_run_completes_prints_table_and_writes_outputs(demo_dir, tmp_path):
    out = cli("--tasks", TASKS, "--model", "prior", "--output", str(tmp_path / "prior"), "--data", str(demo_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "95% CI" in out.stdout and "detection" in out.stdout and "tl_size" in out.stdout
    results = json.loads((tmp_path / "prior" / "results.json").read_text())
    assert results["schema_version"] == "2.0"
    assert results["protocol"]["name"] == "paper"
    assert set(results["task_fingerprints"]) == {"detection", "tl_size", "ad_measure"}
    assert results["environment"]["packages"]["medvision-eval"]
    assert results["model"]["backend"] == "baseline" and results["model"]["batch_size"] == 64
    assert results["counts"] == {"planned": 167, "answered": 167, "errors": 0, "no_response": 0}
    for task, rows in sample_lines(tmp_path / "prior").items():
        assert rows, task
        assert len({r["id"] for r in rows}) == len(rows)
        assert all({"id", "prompt_hash", "response", "status", "values", "target", "metrics", "error"} <= r.keys() for r in rows)


def test_oracle_is_perfect_and_random_is_near_zero(demo_dir, tmp_path):
    out = cli("--tasks", TASKS, "--model", "oracle", "--output", str(tmp_path / "oracle"), "--data", str(demo_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    m = metrics(tmp_path / "oracle")
    assert m["detection"]["all/IoU"] == pytest.approx(1.0, abs=1e-3)
    assert m["detection"]["all/F1"] == pytest.approx(1.0, abs=1e-3)
    assert m["tl_size"]["all/MAE"] == pytest.approx(0.0, abs=1e-3)
    assert m["ad_measure"]["all/MAE"] == pytest.approx(0.0, abs=1e-3)
    out = cli("--tasks", "detection", "--model", "random", "--output", str(tmp_path / "random"), "--data", str(demo_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    # Random boxes overlap big structures by chance (the EPI brain fills 42 % of its slice), so
    # the pooled IoU is small but not zero; on structures under 5 % of the image it is ~0.
    assert metrics(tmp_path / "random")["detection"]["all/IoU"] < 0.15
    rows = sample_lines(tmp_path / "random")["detection"]
    plan = {json.loads(line)["sample"]["id"]: json.loads(line)["sample"] for line in (tmp_path / "random" / "plan.jsonl").read_text().splitlines()}
    small = [r["metrics"]["IoU"] for r in rows if plan[r["id"]]["extra"]["box_area_ratio"] < 0.05]
    assert len(small) >= 20 and sum(small) / len(small) < 0.05


def test_sigkill_mid_run_then_resume_matches_uninterrupted(demo_dir, tmp_path):
    base = ["--tasks", TASKS, "--model", "prior", "--data", str(demo_dir)]
    clean = cli(*base, "--output", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    expected = metrics(tmp_path / "clean")
    n_total = sum(len(v) for v in sample_lines(tmp_path / "clean").values())

    run_dir = tmp_path / "killed"
    log1 = tmp_path / "calls1.txt"
    args = [*base, "--output", str(run_dir), "--quiet", "--model-args", f"delay_s=0.01,calls_log={log1}"]
    proc = subprocess.Popen([sys.executable, "-m", "medvision_eval.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    responses = run_dir / "responses.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if responses.exists() and len(responses.read_bytes().splitlines()) >= n_total // 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = len(responses.read_bytes().splitlines())
    assert 0 < done_before < n_total, "the kill must land mid-run"
    assert not (run_dir / "results.json").exists()

    log2 = tmp_path / "calls2.txt"
    resumed = cli(*base, "--output", str(run_dir), "--model-args", f"delay_s=0.01,calls_log={log2}")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    second = calls(log2)
    answered_first = {json.loads(line)["sample_id"] for line in responses.read_text().splitlines()[:done_before]}
    assert not answered_first & set(second), "a sample answered before the kill was sent again"
    assert len(answered_first) + len(second) == n_total
    assert metrics(run_dir) == expected
    for task, rows in sample_lines(run_dir).items():
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) == len(sample_lines(tmp_path / "clean")[task])

    log3 = tmp_path / "calls3.txt"
    again = cli(*base, "--output", str(run_dir), "--model-args", f"delay_s=0.01,calls_log={log3}")
    assert again.returncode == 0
    assert calls(log3) == [], "a finished run must make zero model calls"
    assert metrics(run_dir) == expected


def test_failures_are_recorded_and_only_they_are_retried(demo_dir, tmp_path):
    run_dir = tmp_path / "flaky"
    base = ["--tasks", TASKS, "--model", "oracle", "--data", str(demo_dir), "--output", str(run_dir)]
    first = cli(*base, "--model-args", "error_rate=0.3")
    assert first.returncode == 1, first.stdout + first.stderr  # failures beyond --max-error-rate 0
    results = json.loads((run_dir / "results.json").read_text())
    failed = {r["id"] for rows in sample_lines(run_dir).values() for r in rows if r["status"] == "error"}
    assert failed and results["counts"]["errors"] == len(failed)
    assert "rerun the same command" in first.stdout

    log = tmp_path / "retry.txt"
    second = cli(*base, "--model-args", f"calls_log={log}")
    assert second.returncode == 0, second.stdout + second.stderr
    assert set(calls(log)) == failed and len(calls(log)) == len(failed)
    assert json.loads((run_dir / "results.json").read_text())["counts"]["errors"] == 0


def test_score_reproduces_results_from_stored_responses(demo_dir, tmp_path):
    run_dir = tmp_path / "oracle-noisy"
    out = cli("--tasks", TASKS, "--model", "oracle", "--model-args", "noise=0.1", "--data", str(demo_dir), "--output", str(run_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    before = json.loads((run_dir / "results.json").read_text())
    samples_before = sample_lines(run_dir)
    (run_dir / "results.json").unlink()
    for p in run_dir.glob("samples_*.jsonl"):
        p.unlink()
    scored = cli("score", str(run_dir))
    assert scored.returncode == 0, scored.stdout + scored.stderr
    after = json.loads((run_dir / "results.json").read_text())
    assert after["tasks"] == before["tasks"]
    assert sample_lines(run_dir) == samples_before


def test_report_and_compare_read_run_directories(demo_dir, tmp_path):
    for model, args in (("oracle", "noise=0.2"), ("prior", "seed=0")):
        out = cli("--tasks", "tl_size", "--model", model, "--model-args", args, "--data", str(demo_dir),
                  "--output", str(tmp_path / model), "--quiet")
        assert out.returncode == 0, out.stdout + out.stderr
    md = cli("report", str(tmp_path / "oracle"), str(tmp_path / "prior"), "--format", "markdown", "--metrics", "MAE,SR")
    assert md.returncode == 0, md.stderr
    lines = md.stdout.strip().splitlines()
    assert lines[0] == "| run | model | protocol | tl_size:all/MAE | tl_size:all/SR |"
    assert lines[2].split(" | ")[1:3] == ["oracle", "paper"] and lines[3].split(" | ")[1] == "prior"
    oracle_mae = json.loads((tmp_path / "oracle" / "results.json").read_text())["tasks"]["tl_size"]["metrics"]["all/MAE"]["value"]
    assert f"{oracle_mae:.4f}" in lines[2]
    csv_out = tmp_path / "board.csv"
    assert cli("report", str(tmp_path / "oracle"), str(tmp_path / "prior"), "--format", "csv", "--out", str(csv_out)).returncode == 0
    assert csv_out.read_text().splitlines()[0].startswith("run,model,protocol,tl_size:all/MAE")

    cmp = cli("compare", str(tmp_path / "oracle"), str(tmp_path / "prior"), "--json")
    assert cmp.returncode == 0, cmp.stderr
    result = json.loads(cmp.stdout)
    (task,) = result["tasks"]
    assert task["task"] == "tl_size" and task["n_shared"] == task["n_a"] == task["n_b"] > 0
    mae = next(m for m in task["metrics"] if m["metric"] == "MAE")
    prior_mae = json.loads((tmp_path / "prior" / "results.json").read_text())["tasks"]["tl_size"]["metrics"]["all/MAE"]["value"]
    assert mae["a"]["value"] == pytest.approx(oracle_mae) and mae["b"]["value"] == pytest.approx(prior_mae)
    assert mae["diff"]["value"] == pytest.approx(oracle_mae - prior_mae)
    assert mae["diff"]["low"] <= mae["diff"]["value"] <= mae["diff"]["high"]


def test_bad_volume_is_a_sample_error_naming_the_file_and_the_run_goes_on(kits_root, tmp_path):
    """An official-layout directory with a truncated volume, through the CLI; then the file is fixed."""
    path = kits_root / "Datasets/KiTS23/Images/c2_0000.nii.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    run_dir = tmp_path / "run"
    log1, log2 = tmp_path / "calls1.txt", tmp_path / "calls2.txt"
    base = ["--tasks", "detection:KiTS23", "--model", "oracle", "--data", str(kits_root), "--output", str(run_dir)]
    out = cli(*base, "--model-args", f"calls_log={log1}")
    assert out.returncode == 1, out.stdout + out.stderr  # one sample without an answer: exit 1
    assert "data problems" in out.stdout and "c2_0000.nii.gz" in (run_dir / "data_problems.txt").read_text()
    rows = {r["id"]: r for r in sample_lines(run_dir)["detection"]}
    bad = [r for r in rows.values() if r["status"] == "error"]
    assert len(bad) == 1 and "c2_0000.nii.gz: cannot decode voxel data" in bad[0]["error"]
    assert sum(r["status"] == "ok" for r in rows.values()) == len(rows) - 1 == len(calls(log1))

    path.write_bytes(good)  # the user replaces the broken file and reruns the same command
    again = cli(*base, "--model-args", f"calls_log={log2}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert calls(log2) == [bad[0]["id"]]
    assert all(r["status"] == "ok" for r in sample_lines(run_dir)["detection"])


def test_corrected_protocol_runs_and_records_the_targets_it_scored_against(demo_dir, tmp_path):
    out = cli("--tasks", TASKS, "--model", "oracle", "--protocol", "corrected", "--data", str(demo_dir),
              "--output", str(tmp_path / "corr"), "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr
    results = json.loads((tmp_path / "corr" / "results.json").read_text())
    assert results["protocol"]["name"] == "corrected" and results["protocol"]["full_precision_targets"]
    rows = sample_lines(tmp_path / "corr")
    assert all(r["status"] == "ok" and r["response"].startswith("<answer>") for t in rows.values() for r in t)
    plan = {json.loads(line)["sample"]["id"]: json.loads(line)["sample"]
            for line in (tmp_path / "corr" / "plan.jsonl").read_text().splitlines()}
    for r in rows["tl_size"]:
        assert r["target"] == plan[r["id"]]["extra"]["plan_values"]  # full precision, not float16
        assert r["metrics"]["MAE"] < 1e-3  # the oracle answers with 3 decimals
