"""The typed results contract: results.json validates as RunResults, its schema file is current,
metric names follow one vocabulary, and the run records what decided which samples ran."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from medvision_eval import metric_names
from medvision_eval.results import RunResults, json_schema, load_results, load_run_record

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "results.schema.json"


def test_results_schema_file_matches_the_model():
    on_disk = json.loads(SCHEMA_FILE.read_text())
    assert on_disk == json_schema(), (
        "docs/results.schema.json is out of date: run "
        "'python -m medvision_eval.results > docs/results.schema.json' and commit it"
    )


@pytest.fixture(scope="module")
def prior_run(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "medvision_eval.cli", "--tasks", "detection,tl_size,ad_measure", "--model", "prior",
         "--data", str(demo_root), "--output", str(out), "--limit", "5", "--quiet"],
        capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "MedVision_PLANNER_VERSION": "1.0.0"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_results_json_is_strict_json_and_validates(prior_run):
    text = (prior_run / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c} in results.json"))
    results = load_results(prior_run)
    assert isinstance(results, RunResults) and results.schema_version == "2.0"
    assert set(results.tasks) == {"detection", "tl_size", "ad_measure"}
    assert results.counts.planned == results.counts.answered > 0


def test_every_metric_name_is_in_the_vocabulary(prior_run):
    results = load_results(prior_run)
    for task in results.tasks.values():
        assert "all/SR" in task.metrics, task.task
        for key in task.metrics:
            scope, name = metric_names.split(key)
            assert metric_names.family(name), f"{task.task}: {key!r} is not in metric_names.METRICS"
    for path in prior_run.glob("samples_*.jsonl"):
        row = json.loads(path.read_text().splitlines()[0])
        for name in row["metrics"]:
            assert metric_names.family(name), f"{path.name}: per-sample metric {name!r} not in the vocabulary"
    # the same name means the same thing everywhere: IoU>=0.5 in detection headline, SR per sample
    assert "all/IoU>=0.5" in results.tasks["detection"].metrics
    assert "SR" in json.loads((prior_run / "samples_tl_size.jsonl").read_text().splitlines()[0])["metrics"]


def test_vocabulary_maps_paper_headings_and_old_names():
    assert metric_names.canonical("IoU>0.5") == "IoU>=0.5"
    assert metric_names.canonical("success") == "SR"
    assert metric_names.canonical("SR_all") == "SR_cov"
    assert metric_names.split("T/L/IoU") == ("T/L", "IoU")
    assert metric_names.split("MAE") == ("all", "MAE")
    assert metric_names.matches("all/MAE", "MAE") and not metric_names.matches("Demo/MAE", "MAE")


def test_selection_records_what_decided_the_samples(prior_run, demo_root):
    results = load_results(prior_run)
    sel = results.selection
    assert sel.limit == 5 and sel.protocol == "paper" and sel.shard is None and sel.sample_filtering
    assert sel.data_root == str(Path(demo_root).resolve())
    assert sel.env == {"MedVision_PLANNER_VERSION": "1.0.0"}
    assert any(name.endswith("benchmark_plan_detection_v1.0.0.json.gz") for name in sel.data_files)
    assert all(len(digest) == 16 for digest in sel.data_files.values())
    assert load_run_record(prior_run).selection == sel


def test_disabled_sample_filtering_is_recorded(demo_root, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "medvision_eval.cli", "--tasks", "tl_size", "--model", "prior", "--data", str(demo_root),
         "--output", str(out), "--limit", "2", "--quiet"],
        capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "MedVision_DISABLE_SAMPLE_FILTERING": "true"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sel = load_results(out).selection
    assert sel.sample_filtering is False and sel.env["MedVision_DISABLE_SAMPLE_FILTERING"] == "true"


def test_bad_results_file_is_one_message_naming_file_and_field(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": "2.0", "created": "x"}))
    with pytest.raises(ValueError, match=r"results.json: field scored_with"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": "1.0"}))
    with pytest.raises(ValueError, match="re-score the run"):
        load_results(tmp_path)


def test_git_revision_only_for_this_projects_own_checkout(tmp_path):
    from medvision_eval.environment import git_revision

    foreign = tmp_path / "someone-elses-repo"
    pkg = foreign / "site" / "medvision_eval"
    pkg.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(foreign)], check=True)
    assert git_revision(pkg) is None  # installed inside another repository: not ours
    own = tmp_path / "checkout"
    (own / "medvision_eval").mkdir(parents=True)
    (own / "pyproject.toml").write_text('[project]\nname = "medvision-eval"\n')
    subprocess.run(["git", "init", "-q", str(own)], check=True)
    subprocess.run(["git", "-C", str(own), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(own), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], check=True)
    rev = git_revision(own / "medvision_eval")
    assert rev and len(rev.split("-")[0]) == 40 and math.isfinite(len(rev))
