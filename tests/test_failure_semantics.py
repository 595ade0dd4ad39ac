"""Failure semantics a CI can trust: preflight, exit codes, one run per directory, one `error:`
line per mistake, lmms-eval habits. Every run here is the real CLI (subprocess or main())."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def cli(*args: str, env: dict | None = None, timeout: int = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "medvision_eval.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def error_lines(out: subprocess.CompletedProcess) -> list[str]:
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if line.startswith("error:")]


def one_error(out: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert out.returncode == code, out.stdout + out.stderr
    lines = error_lines(out)
    assert len(lines) == 1, out.stdout + out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ preflight
def test_unloadable_preset_stops_before_any_sample_with_the_loading_error(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    t0 = time.perf_counter()
    out = cli("--tasks", "tl_size", "--model", "medgemma-27b", "--output", str(tmp_path / "mg"), env=env, timeout=120)
    seconds = time.perf_counter() - t0
    line = one_error(out, EXIT_UNAVAILABLE, "medgemma-27b", "google/medgemma-27b-it", "HF_HUB_OFFLINE=1")
    assert "Retrying" not in out.stdout + out.stderr
    assert not (tmp_path / "mg" / "responses.jsonl").exists()  # no sample was sent
    print(f"preflight failure after {seconds:.1f} s: {line}")


def test_vllm_preset_with_backend_hf_gets_as_far_as_loading_weights(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    out = cli("--tasks", "tl_size", "--model", "qwen2.5-vl-7b", "--model-args", "backend=hf",
              "--output", str(tmp_path / "q"), env=env, timeout=120)
    one_error(out, EXIT_UNAVAILABLE, "could not load Qwen/Qwen2.5-VL-7B-Instruct")
    assert "vllm" not in out.stdout.split("error:")[-1].lower()


def test_loading_is_never_retried_per_batch(monkeypatch):
    import huggingface_hub
    from tiny_vlms import make_request

    from medvision_eval.models.errors import ModelUnavailableError
    from medvision_eval.models.hf import HFAdapter

    attempts = []

    def unreachable(*a, **kw):
        attempts.append(a)
        raise OSError("hub unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    adapter = HFAdapter(pretrained="some-org/some-vlm", geometry="qwen2_5_vl")
    with pytest.raises(ModelUnavailableError, match="could not load some-org/some-vlm: OSError: hub unreachable"):
        adapter.preflight()
    for _ in range(3):  # later batches fail at once with the same error, nothing is tried again
        with pytest.raises(ModelUnavailableError, match="failed to load earlier"):
            adapter.generate([make_request()])
    assert len(attempts) == 1


# ------------------------------------------------------------------------------ exit codes
def test_all_samples_failing_exits_1_and_results_are_strict_json(demo_root, tmp_path):
    run = tmp_path / "p"
    out = cli("--tasks", "detection,tl_size,ad_measure", "--model", "prior", "--model-args", "error_rate=1.0",
              "--data", str(demo_root), "--output", str(run), "--quiet")
    one_error(out, EXIT_FAILED, "have no answer", "--max-error-rate 0", "rerun the same command")
    results = strict_json((run / "results.json").read_text())
    assert results["counts"]["answered"] == 0
    assert results["null_reasons"] and all(r.startswith("NaN: ") for r in results["null_reasons"].values())
    for path in run.iterdir():
        if path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                strict_json(line)
        elif path.suffix == ".json":
            strict_json(path.read_text())
    report = cli("report", str(run), "--format", "json")
    assert report.returncode == 0, report.stderr
    strict_json(report.stdout)


def test_max_error_rate_decides_between_0_and_1(demo_root, tmp_path):
    args = ["--tasks", "tl_size", "--model", "prior", "--model-args", "error_rate=0.3", "--data", str(demo_root),
            "--output", str(tmp_path / "p"), "--quiet"]
    failed = cli(*args)
    one_error(failed, EXIT_FAILED, "--max-error-rate 0")
    within = cli(*args, "--max-error-rate", "0.9")
    assert within.returncode == EXIT_OK and "within --max-error-rate 0.9" in within.stdout
    assert not error_lines(within)


def test_interrupt_exits_130_and_keeps_answers(demo_root, tmp_path):
    run = tmp_path / "slow"
    proc = subprocess.Popen([sys.executable, "-m", "medvision_eval.cli", "--tasks", "tl_size", "--model", "prior",
                             "--model-args", "delay_s=0.2,batch_size=1", "--data", str(demo_root), "--output", str(run),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "responses.jsonl").exists() and (run / "responses.jsonl").stat().st_size):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, stdout + stderr
    assert "interrupted" in stdout and (run / "responses.jsonl").read_text().strip()


# ------------------------------------------------------------------------------ one run per directory
def test_a_directory_holds_one_run(demo_root, tmp_path):
    run = tmp_path / "r"
    base = ["--tasks", "tl_size", "--data", str(demo_root), "--output", str(run), "--limit", "2", "--quiet"]
    assert cli(*base, "--model", "prior").returncode == EXIT_OK
    plan_before = (run / "plan.jsonl").read_text()
    for extra in (["--model", "random"], ["--model", "prior", "--model-args", "seed=3"],
                  ["--model", "prior", "--protocol", "corrected"],
                  ["--model", "prior", "--tasks", "tl_size,detection"]):
        args = list(base)
        if "--tasks" in extra:
            args[1] = extra[-1]
            extra = extra[:2]
        out = cli(*args, *extra)
        one_error(out, EXIT_USAGE, "already holds a different run", "new --output", "--overwrite")
    assert (run / "plan.jsonl").read_text() == plan_before  # untouched
    # the same run again resumes; a delay_s change is not a different run (a run knob, not the model)
    assert cli(*base, "--model", "prior", "--model-args", "delay_s=0").returncode == EXIT_OK
    out = cli(*base, "--model", "random", "--overwrite")
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    assert json.loads((run / "run.json").read_text())["config"]["model"] == "random"


def test_stale_per_task_files_are_removed(demo_root, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "samples_detection.jsonl").write_text('{"id": "stale"}\n')
    assert cli("--tasks", "tl_size", "--model", "prior", "--data", str(demo_root), "--output", str(run),
               "--limit", "2", "--quiet").returncode == EXIT_OK
    assert sorted(p.name for p in run.glob("samples_*.jsonl")) == ["samples_tl_size.jsonl"]


def test_a_concurrent_second_run_is_refused_and_nothing_is_sent_twice(demo_root, tmp_path):
    run = tmp_path / "r"
    calls = tmp_path / "calls.txt"
    args = ["--tasks", "tl_size", "--model", "prior", "--model-args", f"delay_s=0.05,batch_size=2,calls_log={calls}",
            "--data", str(demo_root), "--output", str(run), "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "medvision_eval.cli", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not calls.exists():
        time.sleep(0.1)
    second = cli(*args)
    stdout, stderr = first.communicate(timeout=300)
    one_error(second, EXIT_USAGE, "another medvision-eval run is using", "own --output")
    assert first.returncode == EXIT_OK, stdout + stderr
    sent = calls.read_text().splitlines()
    assert len(sent) == len(set(sent))  # every sample asked exactly once


# ------------------------------------------------------------------------------ one error line per mistake
@pytest.mark.parametrize(("args", "code", "needles"), [
    (["--limit", "0"], EXIT_USAGE, ["--limit 0", "at least 1", "fraction"]),
    (["--limit", "-1"], EXIT_USAGE, ["--limit -1"]),
    (["--batch-size", "0"], EXIT_USAGE, ["--batch-size 0", "at least 1"]),
    (["--batch-size", "-5"], EXIT_USAGE, ["--batch-size -5"]),
    (["--model-args", "seed"], EXIT_USAGE, ["'seed' is not key=value", "seed=VALUE"]),
    (["--verbosity", "DEBUG"], EXIT_USAGE, ["--verbosity is an lmms-eval flag", "--quiet"]),
    (["--include_path", "x"], EXIT_USAGE, ["--include_path", "entry point"]),
    (["--use_cache", "x"], EXIT_USAGE, ["--use_cache", "same --output"]),
    (["--device", "cuda:0"], EXIT_USAGE, ["--device", "--model-args device="]),
])
def test_argument_mistakes_are_one_error_line(tmp_path, args, code, needles):
    out = cli("--tasks", "tl_size", "--model", "prior", "--output", str(tmp_path / "r"), *args, timeout=120)
    one_error(out, code, *needles)
    assert not (tmp_path / "r" / "responses.jsonl").exists()


def test_output_naming_a_file(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    one_error(cli("--tasks", "tl_size", "--model", "prior", "--output", str(target)), EXIT_USAGE,
              "is a file, not a directory")
    assert target.read_text() == "keep me"


def test_hf_with_a_missing_folder(tmp_path):
    t0 = time.perf_counter()
    out = cli("--tasks", "tl_size", "--model", "hf", "--model-args", "pretrained=/nonexistent/model",
              "--output", str(tmp_path / "r"), timeout=120)
    one_error(out, EXIT_USAGE, "pretrained=/nonexistent/model: no such folder")
    print(f"hf missing folder refused after {time.perf_counter() - t0:.1f} s")


def test_openai_against_a_closed_port_fails_before_any_sample(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = cli("--tasks", "tl_size", "--model", "openai", "--model-args", f"model=m,base_url=http://127.0.0.1:{port}/v1",
              "--output", str(tmp_path / "r"), timeout=120)
    one_error(out, EXIT_UNAVAILABLE, f"cannot connect to http://127.0.0.1:{port}/v1", "No sample was sent")
    assert not (tmp_path / "r" / "responses.jsonl").exists()


def test_gemini_without_a_key_says_so_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    out = subprocess.run([sys.executable, "-m", "medvision_eval.cli", "--tasks", "tl_size", "--model", "gemini-2.5-flash",
                          "--output", str(tmp_path / "r")], capture_output=True, text=True, timeout=120, env=env)
    line = one_error(out, EXIT_USAGE, "no Gemini API key", "GEMINI_API_KEY or GOOGLE_API_KEY")
    assert line.count("API key") == 1 and "rerun" not in line and "resume" not in line
    assert not (tmp_path / "r" / "responses.jsonl").exists()


def test_disk_full_is_one_error_line(demo_root, tmp_path, monkeypatch, capsys):
    from medvision_eval import store
    from medvision_eval.cli import main

    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(store.ResponseLog, "append", full)
    code = main(["--tasks", "tl_size", "--model", "prior", "--data", str(demo_root), "--output", str(tmp_path / "r"),
                 "--limit", "2", "--quiet"])
    out = capsys.readouterr()
    assert code == EXIT_USAGE
    lines = [x for x in out.out.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "disk full writing" in lines[0] and "responses.jsonl" in lines[0], out.out


# ------------------------------------------------------------------------------ lmms-eval habits
def test_lmms_eval_habits(demo_root, tmp_path):
    run = tmp_path / "r"
    out = cli("--tasks", "tl_size", "--model", "prior", "--data", str(demo_root), "--output", str(run),
              "--log_samples", "--predict_only", "--limit", "0.1", "--quiet")
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    assert "--log_samples is always on" in out.stdout and "--predict_only: not scored" in out.stdout
    assert not (run / "results.json").exists() and (run / "responses.jsonl").exists()
    plan = [json.loads(x) for x in (run / "plan.jsonl").read_text().splitlines()]
    from medvision_eval.data import MedVisionData

    data = MedVisionData(demo_root)
    import math

    expected = sum(math.ceil(0.1 * len(data.samples(c))) for c in data.catalogue.configs("tl_size", None))
    assert len(plan) == expected


def test_gen_kwargs_and_show_config(tmp_path):
    out = cli("--tasks", "tl_size", "--model", "openai", "--model-args", "model=m",
              "--gen_kwargs", "max_new_tokens=77,temperature=0.2,do_sample=true", "--show_config",
              "--output", str(tmp_path / "r"), timeout=120)
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    shown = strict_json(out.stdout)
    assert shown["generation"]["max_new_tokens"] == 77 and shown["generation"]["temperature"] == 0.2
    assert shown["config"]["model"] == "openai" and not (tmp_path / "r").exists()
    bad = cli("--tasks", "tl_size", "--model", "openai", "--model-args", "model=m", "--gen_kwargs", "num_beams=4",
              "--output", str(tmp_path / "r"))
    one_error(bad, EXIT_USAGE, "'num_beams' is not a generation setting")


def test_an_endpoint_that_keeps_failing_mid_run_exits_3(demo_root, tmp_path):
    from loopback import LoopbackServer, QuietHandler

    class Broken(QuietHandler):
        def do_POST(self):
            self.read_body()
            self.reply(503, b'{"error": "overloaded"}')

    server = LoopbackServer(Broken, "/v1")
    try:
        out = cli("--tasks", "tl_size", "--model", "openai", "--model-args",
                  f"model=m,base_url={server.url},max_retries=0,failure_threshold=3,concurrency=1",
                  "--data", str(demo_root), "--output", str(tmp_path / "r"), "--quiet", timeout=120)
    finally:
        server.close()
    one_error(out, EXIT_UNAVAILABLE, "model unavailable", "3 in a row", "HTTP 503")


@pytest.mark.parametrize("content, why", [
    (b"\xef\xbb\xbf" + b'{"configs": []}', "Unexpected UTF-8 BOM"),
    (b'{"configs": [', "Expecting value"),
    (b'{"other": []}', "no 'configs' key"),
    (b'{"configs": 3}', "expected a list of configs"),
    (b'{"configs": [{"name": 5}]}', "config field"),
    (b"\xff\xfe{}", "codec can't decode"),
])
def test_a_bad_catalogue_file_is_one_error_naming_it(demo_root, tmp_path, content, why):
    import shutil

    data = Path(shutil.copytree(demo_root, tmp_path / "data"))
    (data / "catalogue.json").write_bytes(content)
    out = cli("--tasks", "detection", "--model", "prior", "--data", str(data), "--output", str(tmp_path / "run"))
    one_error(out, EXIT_USAGE, f"{data / 'catalogue.json'}: not a valid catalogue file", why, "fix it or remove it")
    assert not (tmp_path / "run" / "responses.jsonl").exists()


def test_a_plan_file_label_of_the_wrong_type_is_one_error_naming_the_plan_file(demo_root, tmp_path):
    import gzip
    import shutil

    data = Path(shutil.copytree(demo_root, tmp_path / "data"))
    plan = data / "Datasets" / "DemoAbdomenCT" / "benchmark_plan_detection_v1.0.0.json.gz"
    content = json.loads(gzip.decompress(plan.read_bytes()))
    tasks = content["tasks"]
    for info in tasks:
        info["labels_map"] = {k: 17 for k in info.get("labels_map", {})}  # ids, not names
    plan.write_bytes(gzip.compress(json.dumps(content).encode()))
    out = cli("--tasks", "detection", "--model", "prior", "--data", str(data), "--output", str(tmp_path / "run"))
    one_error(out, EXIT_USAGE, f"{plan}: sample DemoAbdomenCT_", ": label is 17: Input should be a valid string",
              "fix the plan file")
