"""A finished rerun recognises itself from run.json's plan manifest: it reports the stored results
without planning, sending or scoring; any change to what planning consumed plans again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import medvision_eval.manifest as manifest_mod
import medvision_eval.runner as runner_mod
from medvision_eval.cli import main

TASKS = "detection,tl_size,ad_measure"


@pytest.fixture
def data(demo_root, tmp_path) -> Path:
    """A private copy of the demo data directory (tests change its files)."""
    return Path(shutil.copytree(demo_root, tmp_path / "data"))


@pytest.fixture
def plans(monkeypatch) -> list[int]:
    """Counts the planner's calls (one per invocation that plans)."""
    calls: list[int] = []
    real = runner_mod.build_plan

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_mod, "build_plan", counting)
    return calls


def run(data: Path, out: Path, *extra: str, tasks: str = TASKS) -> int:
    return main(["--tasks", tasks, "--model", "prior", "--data", str(data), "--output", str(out), "--quiet", *extra])


def stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir()) if p.is_file()}


def test_manifest_names_every_file_planning_read(data, tmp_path):
    assert run(data, tmp_path / "r") == 0
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    manifest = record["plan_manifest"]
    files = manifest["files"]
    assert manifest["data_root"] == str(data.resolve()) and len(manifest["key"]) == 64
    assert "catalogue.json" in files
    assert "Datasets/DemoAbdomenCT/benchmark_plan_detection_v1.0.0.json.gz" in files
    assert any(name.startswith("Datasets/DemoAbdomenCT/Images/") for name in files)  # image headers
    assert any(name.startswith("Datasets/DemoAbdomenCT/Masks/") for name in files)  # mask headers
    assert any(name.startswith("Datasets/DemoCeph/Landmarks/") for name in files)  # landmark files
    for name, state in files.items():
        st = (data / name).stat()
        assert state == [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def test_finished_rerun_reports_stored_results_without_planning(data, tmp_path, plans, capsys):
    out = tmp_path / "r"
    assert run(data, out) == 0 and len(plans) == 1
    before = stamps(out)
    results = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert run(data, out) == 0
    printed = capsys.readouterr().out
    assert len(plans) == 1  # not planned again
    assert "predicted: 0 sent, 167 already answered, 0 errors" in printed
    assert "all/IoU" in printed and "wrote " in printed
    assert stamps(out) == before  # nothing rewritten: plan, run.json, results, samples files
    assert (out / "results.json").read_bytes() == results


def test_finished_rerun_keeps_exit_code_and_data_problems(data, tmp_path, plans, capsys):
    out = tmp_path / "r"
    landmark = sorted((data / "Datasets" / "DemoCeph" / "Landmarks").glob("*.json.gz"))[0]
    landmark.unlink()  # a warning only: A/D targets come from the plan file
    assert run(data, out, tasks="ad_measure") == 0
    first = capsys.readouterr().out
    assert "data problems" in first and landmark.name in first
    assert run(data, out, tasks="ad_measure") == 0
    again = capsys.readouterr().out
    assert len(plans) == 1
    assert "data problems" in again and landmark.name in again


@pytest.mark.parametrize("change", ["touch plan file", "rewrite volume, same bytes and mtime", "add catalogue entry",
                                   "remove landmark file"])
def test_changed_data_file_plans_again(data, tmp_path, plans, change):
    out = tmp_path / "r"
    assert run(data, out) == 0
    plan_file = data / "Datasets" / "DemoAbdomenCT" / "benchmark_plan_detection_v1.0.0.json.gz"
    if change == "touch plan file":  # same size, new mtime
        st = plan_file.stat()
        os.utime(plan_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    elif change == "rewrite volume, same bytes and mtime":  # only ctime tells
        volume = sorted((data / "Datasets" / "DemoAbdomenCT" / "Images").glob("*.nii.gz"))[0]
        st = volume.stat()
        payload = volume.read_bytes()
        volume.unlink()
        volume.write_bytes(payload)
        os.utime(volume, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert volume.stat().st_mtime_ns == st.st_mtime_ns and volume.stat().st_size == st.st_size
    elif change == "add catalogue entry":
        catalogue = data / "catalogue.json"
        catalogue.write_text(catalogue.read_text() + " ")
    else:
        sorted((data / "Datasets" / "DemoCeph" / "Landmarks").glob("*.json.gz"))[0].unlink()
    assert run(data, out) == 0
    assert len(plans) == 2  # planned again
    assert run(data, out) == 0
    assert len(plans) == 2  # and the new manifest makes the next rerun fast again


def test_changed_selection_or_version_plans_again(data, tmp_path, plans, monkeypatch, capsys):
    out = tmp_path / "r"
    assert run(data, out) == 0
    assert run(data, out, "--limit", "2") == 0  # another selection: planned, fewer samples scored
    assert len(plans) == 2
    assert json.loads((out / "results.json").read_text())["counts"]["planned"] < 167
    assert run(data, out) == 0
    assert len(plans) == 3 and json.loads((out / "results.json").read_text())["counts"]["planned"] == 167
    assert run(data, out, "--seed", "1") == 0  # seed shapes the bootstrap: re-scored, not reused
    assert len(plans) == 4
    monkeypatch.setenv("MedVision_DISABLE_SAMPLE_FILTERING", "true")  # the data layer's selection
    assert run(data, out) == 0
    assert len(plans) == 5
    monkeypatch.delenv("MedVision_DISABLE_SAMPLE_FILTERING")
    assert run(data, out) == 0
    assert len(plans) == 6
    monkeypatch.setattr(manifest_mod, "__version__", "999.0")  # another harness version
    assert run(data, out) == 0
    assert len(plans) == 7


def test_run_directory_without_manifest_plans_once_then_is_fast(data, tmp_path, plans):
    out = tmp_path / "r"
    assert run(data, out) == 0
    record = json.loads((out / "run.json").read_text())
    del record["plan_manifest"]  # as written by a version before manifests
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    assert run(data, out) == 0
    assert len(plans) == 2
    assert "plan_manifest" in json.loads((out / "run.json").read_text())
    assert run(data, out) == 0
    assert len(plans) == 2


def test_missing_answer_or_changed_results_is_not_finished(data, tmp_path, plans, capsys):
    out = tmp_path / "r"
    assert run(data, out) == 0
    lines = (out / "responses.jsonl").read_text().splitlines(keepends=True)
    (out / "responses.jsonl").write_text("".join(lines[:-1]))
    capsys.readouterr()
    assert run(data, out) == 0
    assert len(plans) == 2 and "predicted: 1 sent, 166 already answered" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    results["inputs_digest"] = "0" * 64  # results.json not scored from these inputs
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    assert run(data, out) == 0
    assert len(plans) == 3


def test_failed_samples_are_retried_not_reported_as_finished(data, tmp_path, plans, capsys):
    out = tmp_path / "r"
    code = main(["--tasks", "tl_size", "--model", "prior", "--model-args", "error_rate=0.3", "--data", str(data),
                 "--output", str(out), "--quiet"])
    assert code == 1
    assert main(["--tasks", "tl_size", "--model", "prior", "--model-args", "error_rate=0.3", "--data", str(data),
                 "--output", str(out), "--quiet"]) in (0, 1)
    assert len(plans) == 2  # failures left: planned and retried


def test_code_state_changes_with_any_file_of_a_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "data.json").write_text("{}")
    first = manifest_mod._tree_state(pkg)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")
    assert manifest_mod._tree_state(pkg) == first  # bytecode caches do not count
    (pkg / "sub" / "data.json").write_text("{} ")
    second = manifest_mod._tree_state(pkg)
    assert second != first
    (pkg / "new.py").write_text("")
    assert manifest_mod._tree_state(pkg) != second


def test_inputs_digest_covers_every_file_scoring_reads(data, tmp_path):
    from medvision_eval import rundigest, scoring

    assert scoring.inputs_digest is rundigest.inputs_digest  # one implementation for results.json and reruns
    out = tmp_path / "r"
    assert run(data, out, tasks="tl_size") == 0
    seen = {rundigest.inputs_digest(out)}
    (out / "responses.rank1.jsonl").write_text((out / "responses.jsonl").read_text()[:200])
    seen.add(rundigest.inputs_digest(out))
    (out / "judged_tl_size.jsonl").write_text("{}\n")
    seen.add(rundigest.inputs_digest(out))
    (out / "judged_tl_size.jsonl").write_text("{} \n")
    seen.add(rundigest.inputs_digest(out))
    (out / "plan.jsonl").write_bytes((out / "plan.jsonl").read_bytes() + b"\n")
    seen.add(rundigest.inputs_digest(out))
    assert len(seen) == 5  # each added or changed input file gives a new digest
    (out / "samples_tl_size.jsonl").write_text("")  # an output, not an input
    assert rundigest.inputs_digest(out) in seen


def test_api_evaluate_returns_stored_results_of_a_finished_run(data, tmp_path, plans):
    import medvision_eval as mv

    out = tmp_path / "api"
    first = mv.evaluate("prior", "tl_size", data=data, output=out)
    stamp = (out / "results.json").stat().st_mtime_ns
    again = mv.evaluate("prior", "tl_size", data=data, output=out)
    assert len(plans) == 1 and (out / "results.json").stat().st_mtime_ns == stamp
    assert again.metric("tl_size", "all/MAE") == first.metric("tl_size", "all/MAE")
    assert again.counts == first.counts
