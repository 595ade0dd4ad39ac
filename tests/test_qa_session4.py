"""QA session 4: hostile inputs for the plan-step rewrite (one-read NIfTI headers), the bulk
answer scan and the store write path, each checked against what the code before them did."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvision_eval.data.errors import SampleDataError
from medvision_eval.data.volumes import read_header


def _nifti_with(path: Path, **fields) -> Path:
    """A small valid NIfTI-1 (sform set) whose raw header fields are then overwritten as given."""
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.diag([0.8, 0.9, 2.5, 1.0]))
    nib.save(img, str(path))
    blob = bytearray(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes())
    header = np.ndarray((), dtype=nib.nifti1.header_dtype, buffer=blob)
    for key, value in fields.items():
        name, _, index = key.partition("__")
        if index:
            header[name][int(index)] = value
        else:
            header[name] = value
    path.write_bytes(gzip.compress(bytes(blob)) if path.name.endswith(".gz") else bytes(blob))
    return path


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_valid_slope_with_nan_intercept_is_the_nibabel_error_naming_the_file(tmp_path, name):
    # nib.load refuses scl_slope 2 with scl_inter NaN; the one-read header path took the file
    # (planned its samples, dropped the planning warning) where the code before it named it.
    path = _nifti_with(tmp_path / name, scl_slope=2.0, scl_inter=np.nan)
    with pytest.raises(SampleDataError) as err:
        read_header(path)
    assert str(path) in str(err.value) and "Valid slope but invalid intercept nan" in str(err.value)


def test_unorientable_affine_is_one_error_naming_the_file(tmp_path):
    # A 1e20 sform entry: nibabel cannot find the voxel axes. Was a traceback (OrientationError;
    # a bare "error: cannot convert float NaN to integer" before the plan-step rewrite).
    path = _nifti_with(tmp_path / "v.nii.gz", srow_x__2=1e20)
    with pytest.raises(SampleDataError) as err:
        read_header(path)
    assert str(path) in str(err.value) and "orientation" in str(err.value)


@pytest.mark.parametrize("body", [b"\n", b"\n\n  \n", b"{}\n", b"[]\n\n"])
@pytest.mark.parametrize("block", [None, 5, 64])
def test_scanned_answers_of_a_short_block_are_read_answers(tmp_path, monkeypatch, body, block):
    # A block of fewer than 40 bytes of complete lines (a blank responses.jsonl, a short bad
    # line, or the last block of a big file holding only its trailing blank line) crashed the
    # scan with numpy's "strides is incompatible with shape" instead of reading as read_answers.
    from medvision_eval import answerscan
    from medvision_eval.columnar import read_answers

    if block is not None:
        monkeypatch.setattr(answerscan, "BLOCK", block)
    (tmp_path / "responses.jsonl").write_bytes(body)
    try:
        expected = ("ok", read_answers(tmp_path))
    except ValueError as exc:
        expected = ("error", str(exc))
    try:
        got = ("ok", answerscan.read_answers_scanned(tmp_path))
    except ValueError as exc:
        got = ("error", str(exc))
    assert got == expected
    if expected[0] == "error":
        assert f"{tmp_path / 'responses.jsonl'}:1: not a valid response record" in got[1]


def test_scanned_answers_block_ending_in_a_blank_line(tmp_path, monkeypatch):
    from medvision_eval import answerscan
    from medvision_eval.columnar import read_answers

    line = ('{"key":"%s","task":"detection","sample_id":"S/1","prompt_hash":"ab","response":{"text":"1, 2",'
            '"error":null,"latency_s":0.5,"usage":{"prompt_tokens":null,"completion_tokens":null}},"time":1.0}\n')
    body = (line % ("0" * 32) + line % ("1" * 32)).encode()
    (tmp_path / "responses.jsonl").write_bytes(body + b"\n")
    monkeypatch.setattr(answerscan, "BLOCK", len(body))  # the second block is the blank line alone
    assert answerscan.read_answers_scanned(tmp_path) == read_answers(tmp_path)
    assert len(read_answers(tmp_path)) == 2


def _scored_outputs(run: Path) -> dict[str, bytes]:
    import re

    out = {}
    for path in sorted(run.glob("samples_*.jsonl")) + [run / "results.json"]:
        out[path.name] = re.sub(rb'"created": *"[^"]*"', b'"created": ""', path.read_bytes())
    return out


@pytest.mark.parametrize("damage", ["columns-zeroed", "columns-of-another-run", "index-tables-edited"])
def test_damaged_plan_columns_score_as_plan_jsonl(demo_root, tmp_path, damage):
    # index.json consistent with plan.jsonl (size, mtime, sha256) but columns.bin damaged, or
    # copied from another run of the same shape, or the index's value tables edited: the score
    # step read the columns anyway (an "error: Expecting value" exit 2, or every sample silently
    # "no response", or swapped labels). The index's seal now rejects them: plan.jsonl is read.
    import json
    import shutil

    from medvision_eval.cli import main
    from medvision_eval.planstore import open_store

    runs = {}
    for name, model in (("run", "oracle"), ("other", "prior")):
        runs[name] = tmp_path / name
        argv = ["--tasks", "detection,tl_size", "--model", model, "--data", str(demo_root), "--output", str(runs[name]),
                "--limit", "3", "--quiet"]
        assert main(argv) == 0
    run = runs["run"]
    assert open_store(run) is not None  # an untouched run is scored from its columns
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    shutil.rmtree(reference / "plan.columns")
    assert main(["score", str(reference)]) == 0
    columns = run / "plan.columns"
    if damage == "columns-zeroed":
        size = (columns / "columns.bin").stat().st_size
        (columns / "columns.bin").write_bytes(bytes(size))
    elif damage == "columns-of-another-run":
        other = runs["other"] / "plan.columns" / "columns.bin"
        assert other.stat().st_size == (columns / "columns.bin").stat().st_size
        shutil.copy(other, columns / "columns.bin")
    else:
        index = json.loads((columns / "index.json").read_text())
        table = next(name for name, values in index["tables"].items() if len(values) > 1)
        index["tables"][table] = index["tables"][table][::-1]
        (columns / "index.json").write_text(json.dumps(index))
    assert main(["score", str(run)]) == 0
    assert _scored_outputs(run) == _scored_outputs(reference)
    assert open_store(run) is None
