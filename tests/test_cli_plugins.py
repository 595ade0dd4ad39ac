"""The CLI and plugin discovery as a user meets them (subprocesses, installed entry points)."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medvision_eval.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_import_has_no_side_effects():
    code = (
        "import logging, sys, warnings\n"
        "import numpy, pydantic, pluggy  # third-party imports may set their own filters\n"
        "before = (list(logging.root.handlers), logging.root.level, list(warnings.filters))\n"
        "import medvision_eval, medvision_eval.schema, medvision_eval.plugins, medvision_eval.runner\n"
        "after = (list(logging.root.handlers), logging.root.level, list(warnings.filters))\n"
        "assert before == after, (before, after)\n"
        "heavy = [m for m in ('torch', 'transformers', 'openai', 'google.genai', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_list_tasks_and_models_show_providers_including_the_example_plugin():
    tasks = run_cli("list", "tasks")
    assert tasks.returncode == 0, tasks.stderr
    for name in ("detection", "tl_size", "ad_measure"):
        assert name in tasks.stdout
    assert "tl_area" in tasks.stdout and "medvision-eval-example" in tasks.stdout
    models = run_cli("list", "models")
    assert models.returncode == 0, models.stderr
    for name in ("random", "prior", "oracle", "midpoint"):
        assert name in models.stdout


def test_help_explains_every_run_flag_with_examples():
    out = run_cli("run", "--help")
    assert out.returncode == 0
    for flag in ("--tasks", "--model", "--model-args", "--limit", "--batch-size", "--output", "--data",
                 "--seed", "--protocol", "--shard", "--no-cache"):
        assert flag in out.stdout
    assert "examples:" in out.stdout and "medvision-eval --tasks" in out.stdout


def test_unknown_model_is_a_clear_error():
    out = run_cli("--tasks", "detection", "--model", "prio")
    assert out.returncode == 2
    assert "unknown model 'prio'" in out.stdout and "prior" in out.stdout


def test_bad_model_args_name_the_problem():
    out = run_cli("--tasks", "detection", "--model", "prior", "--model-args", "delay=1")
    assert out.returncode == 2
    assert "delay" in out.stdout and "delay_s" in out.stdout


def test_example_plugin_task_and_model_run_end_to_end(tmp_path):
    """The third-party package's task and model, found through its entry point, through the CLI."""
    import json

    from medvision_eval.data.demo import build_demo

    data = build_demo(tmp_path / "demo")

    def mae(model: str) -> float:
        out = run_cli("--tasks", "tl_area", "--model", model, "--data", str(data), "--output", str(tmp_path / model))
        assert out.returncode == 0, out.stdout + out.stderr
        results = json.loads((tmp_path / model / "results.json").read_text())
        return results["tasks"]["tl_area"]["metrics"]["all/MAE"]["value"]

    assert mae("oracle") < 0.01  # the plugin's own truth reaches the oracle (area, not diameters)
    assert mae("prior") < mae("midpoint")  # train-split means of the plugin's target beat a constant
