"""The store accepts any text a model returns and every file it writes is strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import orjson
import pytest

from medvision_eval.schema import Response
from medvision_eval.store import (
    ResponseLog,
    ResponseRecord,
    clean_temp_files,
    load_responses,
    read_json,
    strict_dumps,
    write_json,
    write_jsonl,
)


def strict_load(text: str):
    """A strict JSON reader: NaN/Infinity are errors, as in every non-Python parser."""

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def assert_strict_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines() if path.suffix == ".jsonl" else [text]
    for line in lines:
        strict_load(line)
        orjson.loads(line)  # RFC 8259 parser: rejects NaN, Infinity and lone surrogate escapes


ANSWERS = {
    "lone surrogate": "0.1, 0.2, 0.3, 0.4\ud800",
    "low surrogate first": "\udfff\ud800 12.5, 3",
    "control characters": "".join(chr(c) for c in range(32)) + "\x7f 1, 2",
    "one megabyte": "<answer>" * (1 << 17),
    "nul and newline": "a\x00b\nc\r\n<answer>1</answer>",
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_any_answer_is_stored_and_recovered_exactly(tmp_path, name):
    text = ANSWERS[name]
    with ResponseLog(tmp_path) as log:
        log.append(ResponseRecord(key="k1", task="tl_size", sample_id="s1", prompt_hash="p",
                                  response=Response(text=text)))
        log.append(ResponseRecord(key="k2", task="tl_size", sample_id="s2", prompt_hash="p",
                                  response=Response(error="server said: " + text)))
    assert_strict_file(tmp_path / "responses.jsonl")
    loaded = load_responses(tmp_path)
    assert loaded["k1"].original_text() == text
    assert loaded["k2"].original_text("error") == "server said: " + text
    # what parsers and writers see is valid Unicode (UTF-8 encodable)
    loaded["k1"].response.text.encode("utf-8")
    assert loaded["k1"].completed and not loaded["k2"].completed


def test_non_finite_values_are_null_with_a_reason(tmp_path):
    write_json(tmp_path / "r.json", {"metrics": {"MAE": {"value": math.nan, "low": -math.inf}}, "n": 3})
    data = strict_load((tmp_path / "r.json").read_text())
    assert data["metrics"]["MAE"] == {"value": None, "low": None}
    assert data["null_reasons"]["/metrics/MAE/value"].startswith("NaN: ")
    assert data["null_reasons"]["/metrics/MAE/low"].startswith("-Infinity: ")
    write_jsonl(tmp_path / "rows.jsonl", [{"id": "a", "x": math.inf}, {"id": "b", "x": 1.5}])
    rows = [strict_load(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert rows[0]["x"] is None and rows[0]["null_reasons"] == {"/x": "Infinity: overflow (the value is infinite)"}
    assert rows[1] == {"id": "b", "x": 1.5}
    assert strict_load(strict_dumps([math.nan])) == {"value": [None], "null_reasons": {"/value/0": "NaN: "
                                                     "undefined (nothing finite to compute it from, e.g. no parsed answer)"}}


def test_plan_with_a_nan_target_round_trips(tmp_path):
    from medvision_eval.schema import ImageRef, Sample, Target
    from medvision_eval.store import PlanEntry, load_plan, write_plan

    sample = Sample(id="s", task="tl_size", config="c", dataset="d", index=0,
                    image=ImageRef(path="p.nii.gz", slice_axis=2, slice_index=0), image_size=(4, 4),
                    pixel_spacing=(1.0, 1.0), label="l",
                    target=Target(values=(math.nan, 2.0), unit="mm", names=("major", "minor")))
    write_plan(tmp_path, [PlanEntry(task="tl_size", key="k", prompt_hash="p", sample=sample)])
    assert_strict_file(tmp_path / "plan.jsonl")
    (entry,) = load_plan(tmp_path)
    assert math.isnan(entry.sample.target.values[0]) and entry.sample.target.values[1] == 2.0


def test_temp_files_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / ".results.json.k2j3h.tmp").write_text("{\"half")
    (tmp_path / ".plan.jsonl.x9.tmp").write_text("")
    (tmp_path / "results.json").write_text("{}")
    removed = clean_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".plan.jsonl.x9.tmp", ".results.json.k2j3h.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    assert read_json(tmp_path / "results.json") == {}


def test_known_secrets_never_reach_a_written_file(tmp_path, monkeypatch):
    key = "sk-test-" + "Zq7x" * 8
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", key)
    write_json(tmp_path / "a.json", {"error": f"bad key {key}"})
    with ResponseLog(tmp_path) as log:
        log.append(ResponseRecord(key="k", task="t", sample_id="s", prompt_hash="p",
                                  response=Response(error=f"401: invalid key {key} for project")))
    for path in tmp_path.iterdir():
        assert key[:6] not in path.read_text(), path


def test_a_run_removes_temp_files_a_killed_run_left(demo_root, tmp_path):
    from medvision_eval.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = run_dir / ".results.json.ab12cd.tmp"
    stale.write_text('{"tasks": {"detec')
    assert main(["--tasks", "tl_size", "--model", "prior", "--data", str(demo_root), "--output", str(run_dir),
                 "--limit", "2", "--quiet"]) == 0
    assert not stale.exists() and not list(run_dir.glob(".*.tmp"))
    assert_strict_file(run_dir / "results.json")
