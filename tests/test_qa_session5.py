"""QA session 5: hostile answer files scored through the plan columns (serial, and with every
parallel threshold forced small: forked answer readers, two writers, blocks of a few rows) give
the bytes the plan.jsonl path gives."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from medvision_eval import scoring, storescore
from medvision_eval.cli import main
from medvision_eval.planstore import open_store
from medvision_eval.scoring import score_run


def _outputs(run: Path) -> dict[str, bytes]:
    out = {p.name: p.read_bytes() for p in sorted(run.glob("samples_*.jsonl"))}
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    for key in ("created", "inputs_digest", "environment"):
        results.pop(key, None)
    results.get("config", {}).pop("output", None)
    out["results.json"] = json.dumps(results, indent=2, allow_nan=True).encode()
    return out


def _hostile_lines(records: list[dict]) -> list[str]:
    """Every record once or twice, written as ASCII JSON and then damaged in one of ten ways."""
    lines = []
    for i, rec in enumerate(records):
        s = json.dumps(rec, ensure_ascii=True)
        k = i % 10
        if k == 0:  # a lone surrogate in the text
            s = s.replace('"text": "', '"text": "\\udc80 ', 1)
        elif k == 1:  # an error holding a lone surrogate
            s = s.replace('"error": null', '"error": "bad \\ud800 err"', 1)
        elif k == 2:  # a token count beyond int64, and a lone surrogate
            s = s.replace('"prompt_tokens": null', '"prompt_tokens": 99999999999999999999999', 1)
            s = s.replace('"text": "', '"text": "\\ud800', 1)
        elif k == 3:  # the int64 minimum (the null sentinel's value)
            s = s.replace('"completion_tokens": null', '"completion_tokens": -9223372036854775808', 1)
        elif k == 4:  # control characters, U+2028, quotes, backslashes
            s = s.replace('"text": "', '"text": "\\u0000\\u001f\\u2028\\"\\\\ \\u00fc ', 1)
        elif k == 5:  # an infinite latency
            s = s.replace('"latency_s": ', '"latency_s": 1e400, "x": ', 1)
        elif k == 6:  # answered, then failed: the completed answer wins
            lines.append(s.replace('"text": "', '"text": "first ', 1))
            s = re.sub(r'"text": "[^"]*"', '"text": null', s.replace('"error": null', '"error": "later"', 1), count=1)
        elif k == 7:  # a key that is no cache key (upper case): matches nothing
            lines.append(s)
            s = s.replace(rec["key"], rec["key"].upper(), 1).replace('"text": "', '"text": "WRONG ', 1)
        elif k == 8:  # odd numbers in the answer
            s = re.sub(r'"text": "[^"]*"', '"text": "-0.0, 1e-5, 5e-324, 1e16"', s, count=1)
        lines.append(s)
    return lines


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_hostile_answers_score_the_same_through_the_columns_and_plan_jsonl(demo_root, tmp_path, monkeypatch, ending):
    run = tmp_path / "run"
    argv = ["--tasks", "detection,tl_size,ad_measure", "--model", "random", "--data", str(demo_root), "--output",
            str(run), "--quiet"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (run / "responses.jsonl").read_text(encoding="utf-8").splitlines()]
    text = ending.join(_hostile_lines(records)) + ending
    (run / "responses.jsonl").write_bytes(text[:-len(ending)].encode())  # no line end after the last line
    fallback = tmp_path / "fallback"
    shutil.copytree(run, fallback)
    shutil.rmtree(fallback / "plan.columns")
    assert open_store(run) is not None and open_store(fallback) is None
    score_run(fallback)
    expected = _outputs(fallback)
    assert b"\\ufffd" in expected["samples_detection.jsonl"] or "\ufffd".encode() in expected["samples_detection.jsonl"]
    for forced in (False, True):
        if forced:
            for module, name, value in ((storescore, "PARALLEL_ROWS", 10), (storescore, "PARALLEL_ANSWER_BYTES", 100),
                                        (storescore, "BLOCK_ROWS", 7), (scoring, "PARALLEL_BYTES", 100),
                                        (scoring, "PARALLEL_ROWS", 10)):
                monkeypatch.setattr(module, name, value)
        copy = tmp_path / f"columns-{forced}"
        shutil.copytree(run, copy)
        score_run(copy)
        assert _outputs(copy) == expected


def _row_by_row(matrix: np.ndarray, joints: list[str], opening: str, closing: str) -> list[str]:
    out = []
    for row in matrix.tolist():
        texts = [repr(v) if v - v == 0 else "null" for v in row]
        out.append(opening + "".join(t + j for t, j in zip(texts, joints)) + texts[-1] + closing)
    return out


@pytest.mark.parametrize("distinct", [1, 9, 10, 11, 29, 30])
@pytest.mark.parametrize("brackets", [("", ""), ("[", "}")])
def test_float_joined_with_ten_or_more_distinct_joints_keeps_every_row(distinct, brackets):
    # Each distinct joint was marked by the byte 1 + its position: the tenth got 0x0A, the byte
    # that separates the rows, so with 10 to 30 distinct joints (a task with 8+ metrics) the rows
    # ran into one another (3 rows -> 1 text of 3 rows' numbers, the other rows missing).
    from medvision_eval.columnar import float_joined

    k = distinct + 1
    joints = [f', "m{j % distinct}": ' for j in range(k - 1)]
    matrix = np.arange(3 * k, dtype=np.float64).reshape(3, k) + 0.5
    matrix[1, 0] = float("nan")
    matrix[2, -1] = -0.0
    matrix[0, -1] = 1e-5
    got, inf = float_joined(matrix, joints, *brackets)
    assert got == _row_by_row(matrix, joints, *brackets)
    assert not inf.any()
