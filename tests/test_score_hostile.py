"""Hostile run directories scored by the columnar score step give exactly what the validated
object path gives (the same bytes, the same error text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvision_eval.columnar import read_plan
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
