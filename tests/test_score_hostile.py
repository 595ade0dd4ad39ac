"""Hostile run directories scored by the columnar score step give exactly what the validated
object path gives (the same bytes, the same error text)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from medvision_eval import scoring
from medvision_eval.columnar import read_inputs, read_plan
from medvision_eval.scoring import score_run
from medvision_eval.store import load_plan

DEMO_RUN = Path(__file__).resolve().parents[1] / "leaderboard" / "runs" / "prior"


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_bad_field_on_a_profiles_first_line_is_the_models_error_text(tmp_path):
    """The first line of a profile is validated into a Sample: a field the fast path does not
    check (image_size) that the model rejects gives load_plan's exact message."""
    rows = [json.loads(line) for line in (DEMO_RUN / "plan.jsonl").read_text(encoding="utf-8").splitlines()[:5]]
    rows[0]["sample"]["image_size"] = "abc"
    _write(tmp_path / "plan.jsonl", rows)
    with pytest.raises(ValueError) as slow:
        load_plan(tmp_path)
    with pytest.raises(ValueError) as fast:
        read_plan(tmp_path, lambda name: True, False)
    assert "sample.image_size\n  Input should be a valid tuple" in str(slow.value)
    assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value)


@pytest.mark.parametrize("where", [0, -1])  # -1: in the part a forked reader reads
@pytest.mark.parametrize("parallel", [False, True])
def test_an_index_beyond_int64_is_scored_and_written_exactly(tmp_path, monkeypatch, where, parallel):
    run = tmp_path / "run"
    shutil.copytree(DEMO_RUN, run)
    rows = [json.loads(line) for line in (run / "plan.jsonl").read_text(encoding="utf-8").splitlines()]
    rows[where]["sample"]["index"] = 2**64 - 1  # valid JSON, an int the model accepts
    rows[1]["sample"]["index"] = -(2**63)
    _write(run / "plan.jsonl", rows)
    columns, _, _ = read_inputs(run, lambda name: True, False, parallel=parallel)
    got = [i for cols in columns.values() for i in cols.indexes]
    assert sorted(got) == sorted(e.sample.index for e in load_plan(run))
    if parallel:
        monkeypatch.setattr(scoring, "PARALLEL_BYTES", 0)
        monkeypatch.setattr(scoring, "PARALLEL_ROWS", 1)
    score_run(run)
    written = {}
    for path in run.glob("samples_*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            written[row["id"]] = (row["index"], line)
    index, line = written[rows[where]["sample"]["id"]]
    assert index == 2**64 - 1 and '"index": 18446744073709551615, ' in line
    assert written[rows[1]["sample"]["id"]][0] == -(2**63)


def test_a_failed_parallel_score_leaves_no_child_process_behind(tmp_path, monkeypatch):
    """A plan error found by this process while forked helpers (the digest, the answers reader)
    run: the helpers are stopped and reaped, not left blocked or as zombies of a long-lived caller."""
    run = tmp_path / "run"
    shutil.copytree(DEMO_RUN, run)
    lines = (run / "plan.jsonl").read_text(encoding="utf-8").splitlines()
    lines[0] = '{"task": "detection", "key": "k", "prompt_hash": "p", "sample": {"id": 1}}'
    (run / "plan.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    forked: list[int] = []
    fork = os.fork

    def recording_fork() -> int:
        pid = fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)
    monkeypatch.setattr(scoring, "PARALLEL_BYTES", 0)
    with pytest.raises(ValueError, match="sample"):
        score_run(run)
    assert len(forked) == 2
    for pid in forked:
        with pytest.raises(ChildProcessError):  # already reaped
            os.waitpid(pid, os.WNOHANG)
