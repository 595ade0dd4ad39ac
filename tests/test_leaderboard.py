"""Leaderboard, terminal report and per-run page: what a user and a leaderboard's CI rely on."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from medvision_eval.cli import main

REPO = Path(__file__).resolve().parents[1]
TASKS = "detection,tl_size,ad_measure"


def cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().out


@pytest.fixture(scope="module")
def baseline_runs(tmp_path_factory) -> Path:
    """prior, random and oracle on the bundled demo data (first 5 samples per config)."""
    root = tmp_path_factory.mktemp("runs")
    for model in ("prior", "random", "oracle"):
        assert main(["--tasks", TASKS, "--model", model, "--limit", "5", "--output", str(root / model), "--quiet"]) == 0
    return root


@pytest.fixture
def board_copy(tmp_path) -> Path:
    """The committed leaderboard (inputs and outputs) in a scratch repository root."""
    shutil.copytree(REPO / "leaderboard", tmp_path / "leaderboard")
    shutil.copyfile(REPO / "LEADERBOARD.md", tmp_path / "LEADERBOARD.md")
    return tmp_path


# -- terminal report ---------------------------------------------------------------------------

def test_report_of_three_runs_fits_120_columns(baseline_runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    runs = [str(baseline_runs / m) for m in ("prior", "random", "oracle")]
    rc, out = cli(capsys, "report", *runs)
    assert rc == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert "…" not in out
    for heading in ("Detection (Table 2 layout)", "Tumour/lesion size (Table 3 layout)", "Angle/distance (Table 4 layout)"):
        assert heading in out
    for model in ("prior", "random", "oracle"):
        row = next(line for line in lines if line.strip().startswith(model))
        assert " paper " in row  # protocol per row
    oracle_tl = [line for line in lines if line.strip().startswith("oracle") and "100.0" in line]
    assert oracle_tl, "the oracle scores 100 % on the rates"
    assert "runs comparable: protocol paper" in out


def test_report_warns_when_runs_are_not_comparable(baseline_runs, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "120")
    other = tmp_path / "corrected"
    assert main(["--tasks", "tl_size", "--model", "prior", "--limit", "3", "--protocol", "corrected",
                 "--output", str(other), "--quiet"]) == 0
    rc, out = cli(capsys, "report", str(baseline_runs / "prior"), str(other))
    assert rc == 0
    assert "warning: these runs are not comparable" in out
    assert "protocol differs (corrected, paper)" in out and "limit differs (3, 5)" in out


def test_report_metrics_use_one_vocabulary(baseline_runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    runs = [str(baseline_runs / m) for m in ("prior", "random")]
    rc, out = cli(capsys, "report", *runs, "--metrics", "IoU,F1,MAE,MRE")
    assert rc == 0
    assert "Detection (Table 2 layout)" in out  # the help's own example keeps detection
    header = next(line for line in out.splitlines() if line.strip().startswith("model") and "F1" in line)
    assert "IoU" in header and " R " not in header
    rc, out = cli(capsys, "report", *runs, "--metrics", "nonsense")
    assert rc == 2
    assert "unknown metric(s) 'nonsense'" in out
    assert "known: Recall, Precision, F1, IoU, SR, IoU>=0.5, MAE, MRE, MRE<0.1" in out


def test_compare_uses_the_metric_vocabulary(baseline_runs, capsys):
    rc, out = cli(capsys, "compare", str(baseline_runs / "oracle"), str(baseline_runs / "random"), "--json")
    assert rc == 0
    names = {m["metric"] for t in json.loads(out)["tasks"] for m in t["metrics"]}
    assert {"IoU", "F1", "SR", "IoU>=0.5", "MAE", "MRE"} <= names and "success" not in names


# -- leaderboard ---------------------------------------------------------------------------------

def test_committed_leaderboard_is_what_its_inputs_produce(board_copy, capsys):
    rc, out = cli(capsys, "leaderboard", "--dir", str(board_copy / "leaderboard"), "--check")
    assert rc == 0, out
    assert "leaderboard up to date: 5 runs" in out


def test_deleting_a_run_makes_check_fail_until_rebuilt(board_copy, capsys):
    directory = board_copy / "leaderboard"
    shutil.rmtree(directory / "runs" / "random")
    rc, out = cli(capsys, "leaderboard", "--dir", str(directory), "--check")
    assert rc == 1
    assert "LEADERBOARD.md: differs from what the inputs produce" in out
    assert "run 'medvision-eval leaderboard'" in out
    rc, out = cli(capsys, "leaderboard", "--dir", str(directory))
    assert rc == 0 and "4 runs in 1 comparability groups" in out
    rc, out = cli(capsys, "leaderboard", "--dir", str(directory), "--check")
    assert rc == 0, out
    text = (board_copy / "LEADERBOARD.md").read_text()
    assert "`prior`" in text and "`random`" not in text


def test_build_is_byte_stable(board_copy, capsys):
    directory = board_copy / "leaderboard"
    before = {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and "runs" not in p.parts}
    assert cli(capsys, "leaderboard", "--dir", str(directory))[0] == 0
    after = {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and "runs" not in p.parts}
    assert before == after
    svg = (directory / "plots" / "group1-bars.svg").read_text()
    assert "<dc:date>" not in svg and "medvision-eval" in svg


def test_runs_with_missing_answers_or_foreign_fingerprint_are_rejected(board_copy, capsys):
    directory = board_copy / "leaderboard"
    runs = directory / "runs"
    # answers missing: the last answer line removed
    shutil.copytree(runs / "prior", runs / "prior-truncated")
    lines = (runs / "prior-truncated" / "responses.jsonl").read_text().splitlines(keepends=True)
    (runs / "prior-truncated" / "responses.jsonl").write_text("".join(lines[:-1]))
    # fingerprint: the answers were produced under another generation setting than run.json says
    shutil.copytree(runs / "oracle", runs / "oracle-tampered")
    record = json.loads((runs / "oracle-tampered" / "run.json").read_text())
    record["generation"]["max_new_tokens"] = 7
    (runs / "oracle-tampered" / "run.json").write_text(json.dumps(record))
    rc, out = cli(capsys, "leaderboard", "--dir", str(directory))
    out = " ".join(out.split())
    assert rc == 2
    assert re.search(r"prior-truncated rejected: answers missing: 1 of \d+ planned samples have no stored answer", out)
    assert "oracle-tampered rejected: fingerprint mismatch" in out
    page = (directory / "index.html").read_text()
    assert "Rejected runs" in page and "prior-truncated" in page and "fingerprint mismatch" in page
    assert "5 runs in 1 comparability groups, 2 rejected" in out


@pytest.mark.parametrize("source", ["paper-v1.json", "paper-revised.json"])
def test_committed_markdown_holds_every_reported_row_and_the_demo_rows(source):
    text = (REPO / "LEADERBOARD.md").read_text()
    reported = json.loads((REPO / "leaderboard" / "reported" / source).read_text())
    assert "arXiv:2511.18676v1" in text
    sections = re.split(r"^## ", text, flags=re.M)
    by_family = {"table2": "Detection", "table3": "Tumour/lesion", "table4": "Angle/distance"}
    for key, prefix in by_family.items():
        section = next(s for s in sections if s.startswith(prefix))
        block = section.split(f"### Reported — {reported['tables'][key]['title']}")[1].split("###")[0]
        for row in reported["tables"][key]["rows"]:
            values = row.get("values") or [v for s in reported["tables"][key]["sets"] for v in row[s]]
            line = f"| {row['model']} | reported | " + " | ".join(str(v) for v in values) + " |"
            assert line in block.splitlines(), f"{row['model']} missing from {prefix} ({source})"
        for model in ("prior", "random", "oracle"):
            assert re.search(rf"^\| \d \| {model}\*? \| `{model}` \| \d+ \|", section, flags=re.M), (model, prefix)
    # a reported number appears exactly as the paper prints it
    assert "| Qwen2.5-VL (32B, SFT 1M) | reported | 82.1 | 83.4 | 81.2 | 74.6 | 100 | 82.8 |" in text


def test_ci_runs_the_leaderboard_check():
    script = (REPO / ".ci" / "run").read_text()
    assert "medvision-eval leaderboard --check" in script
    assert "apt-get install -y chromium" in script


def test_view_writes_a_static_page_with_the_prompt_and_answer(baseline_runs, capsys):
    rc, out = cli(capsys, "view", str(baseline_runs / "prior"))
    assert rc == 0 and "view/index.html" in out
    page = (baseline_runs / "prior" / "view" / "index.html").read_text()
    plan = [json.loads(x) for x in (baseline_runs / "prior" / "plan.jsonl").read_text().splitlines()]
    first = plan[0]["prompt"][0]["content"][0]["text"]
    assert first.splitlines()[0] in page  # the prompt text as stored per sample
    assert len(list((baseline_runs / "prior" / "view" / "img").glob("*.png"))) == len(plan)


def test_data_identity_names_the_demo_data_and_its_copies():
    from medvision_eval.summary import comparability, data_identity

    assert data_identity("/root/.cache/medvision-eval/demo-1") == "demo-1"
    assert data_identity("/tmp/x/data", {"Datasets/DemoCeph/plan.json.gz": "a", "catalogue.json": "b"}) == "demo"
    assert data_identity("/data/MedVision", {"Datasets/KiTS23/plan.json.gz": "a"}) == "MedVision"
    key = comparability({"protocol": {"name": "paper"}, "selection": {"limit": 1000, "data_root": "/d/MedVision"},
                         "environment": {"packages": {"medvision-eval": "0.1.0"}}})
    assert key == {"protocol": "paper", "data": "MedVision", "limit": "1000", "harness": "0.1.0"}
