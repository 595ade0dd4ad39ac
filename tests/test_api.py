"""The Python API, `python -m medvision_eval`, model-argument parsing and the truth channel,
as a notebook user, a CLI user and a third-party adapter author meet them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import medvision_eval as mv
from medvision_eval.cli import parse_model_args
from medvision_eval.config import RunConfig
from medvision_eval.hookspecs import ModelEntry, hookimpl
from medvision_eval.models.base import ModelAdapter
from medvision_eval.plugins import Registry
from medvision_eval.runner import Runner
from medvision_eval.schema import Response

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def metric_values(results) -> dict:
    return {t: {k: iv.value for k, iv in r.metrics.items()} for t, r in results.tasks.items()}


def test_evaluate_returns_the_cli_metrics_and_prints_nothing(demo_root, tmp_path, capsys):
    results = mv.evaluate(model="prior", tasks=["tl_size", "ad_measure"], data=demo_root, output=tmp_path / "api")
    assert capsys.readouterr() == ("", "")
    assert isinstance(results, mv.RunResults) and set(results.tasks) == {"tl_size", "ad_measure"}
    out = run([sys.executable, "-m", "medvision_eval", "--tasks", "tl_size,ad_measure", "--model", "prior",
               "--data", str(demo_root), "--output", str(tmp_path / "cli"), "--quiet"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert metric_values(results) == metric_values(mv.load_results(tmp_path / "cli"))
    again = mv.score(tmp_path / "api")  # re-score: same numbers, no model
    assert metric_values(again) == metric_values(results)


def test_api_errors_are_exceptions_not_exits(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a medvision-eval run directory"):
        mv.score(tmp_path)
    with pytest.raises(ValueError, match="unknown protocol"):
        mv.evaluate(model="prior", tasks="tl_size", protocol="v9", output=tmp_path / "x")


def test_readme_api_example_runs(demo_root, tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- api-example -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip()
    assert block.startswith('python -c "import medvision_eval as mv;'), block
    out = run(["bash", "-c", block], cwd=tmp_path, env_extra={"MEDVISION_DATA_DIR": str(demo_root)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "task='tl_size'" in out.stdout and "all/MAE" in out.stdout


def test_import_is_cheap_and_the_api_loads_on_first_use():
    code = ("import sys, medvision_eval as mv\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('medvision_eval.') or m in ('pydantic', 'numpy'))\n"
            "assert loaded == [], loaded\n"
            "assert callable(mv.evaluate) and 'medvision_eval.api' in sys.modules\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_python_dash_m_is_the_cli(tmp_path):
    out = run([sys.executable, "-m", "medvision_eval", "--version"], cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("medvision-eval ")


def test_model_args_accept_json_values_and_repeated_M():
    assert parse_model_args('extra_body={"a":1,"b":2}') == {"extra_body": {"a": 1, "b": 2}}
    assert parse_model_args("pretrained=/m/x,dtype=bfloat16,stop=[\"a\",\"b\"]") == {
        "pretrained": "/m/x", "dtype": "bfloat16", "stop": ["a", "b"]}
    assert parse_model_args(None, ["a=1", "b=x"]) == {"a": "1", "b": "x"}
    assert parse_model_args("a=1,b=2", ["b=3,4"]) == {"a": "1", "b": "3,4"}  # -M wins, commas kept
    with pytest.raises(ValueError, match="-M: 'nokey' is not key=value"):
        parse_model_args(None, ["nokey"])


def test_bad_model_arg_value_is_one_error_line(tmp_path):
    out = run([sys.executable, "-m", "medvision_eval", "--tasks", "tl_size", "--model", "oracle",
               "--model-args", 'noise=0.1,extra_body={"a":1', "--output", str(tmp_path / "r")], cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model-args: extra_body:") and "not valid JSON" in lines[0]


class RecordingAdapter(ModelAdapter):
    """A third-party adapter that keeps everything it is given."""

    backend = "test"
    seen: list = []
    contexts: list = []

    def prepare(self, context):
        RecordingAdapter.contexts.append(context)

    def generate(self, requests):
        RecordingAdapter.seen.extend(requests)
        return [Response(text="1, 2, 3, 4") for _ in requests]


class RecordingPlugin:
    @hookimpl
    def medvision_eval_models(self):
        return [ModelEntry(name="recording", target=f"{__name__}:RecordingAdapter", backend="test")]


def test_third_party_adapter_requests_carry_no_target_values(demo_root, tmp_path):
    from medvision_eval.data import MedVisionData

    RecordingAdapter.seen, RecordingAdapter.contexts = [], []
    registry = Registry.discover(extra_plugins=(RecordingPlugin(),))
    config = RunConfig(tasks=["detection", "tl_size", "ad_measure", "tl_area"], model="recording", limit=4,
                       output=str(tmp_path / "rec"), protocol="corrected")
    runner = Runner(config, registry=registry, data=MedVisionData(demo_root))
    runner.execute()
    (context,) = RecordingAdapter.contexts
    assert context.truth is None  # not declared: no truth channel
    assert RecordingAdapter.seen
    from medvision_eval.factory import build_task
    from medvision_eval.store import load_plan

    tasks = runner.tasks()
    truths = {(e.task, e.sample.id): tasks[e.task].true_values(e.sample) for e in load_plan(tmp_path / "rec")}
    for request in RecordingAdapter.seen:
        assert not hasattr(request, "sample") and "truth" not in request.answer.model_dump()
        dumped = request.model_dump_json()
        for value in truths[(request.task, request.sample_id)]:
            if value != int(value):  # integers could be image sizes; any fractional target must not appear
                for text in (repr(value), f"{value:.3f}", f"{value:.2f}"):
                    assert text not in dumped, (request.task, request.sample_id, text)


def test_adapters_that_declare_truth_get_it(demo_root, tmp_path):
    results = mv.evaluate(model="oracle", tasks=["tl_size"], data=demo_root, output=tmp_path / "o", limit=5)
    assert results.tasks["tl_size"].metrics["all/MAE"].value < 1e-3
