"""Bad files are per-sample errors naming the file and the field: the run goes on, and a rerun
after the fix sends only the samples that failed."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvision_eval.data import MedVisionData, SampleDataError
from medvision_eval.data.volumes import read_header

TASKS = "detection,tl_size,ad_measure"


def _read(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _write(path: Path, obj) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(obj, fh)


def set_pixdim(path: Path, index: int, value: float) -> None:
    """Write ``pixdim[index]`` into the stored header as is (nibabel would 'fix' 0 and negatives)."""
    img = nib.load(str(path))
    header = img.header.copy()
    data = np.asanyarray(img.dataobj)
    header["pixdim"][index] = value
    with gzip.open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4 + np.asarray(data, dtype=header.get_data_dtype()).tobytes(order="F"))


def zero_affine(path: Path) -> None:
    img = nib.load(str(path))
    header = img.header.copy()
    data = np.asanyarray(img.dataobj)
    header["qform_code"], header["sform_code"] = 0, 1
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row][:] = 0
    with gzip.open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4 + np.asarray(data, dtype=header.get_data_dtype()).tobytes(order="F"))


@pytest.mark.parametrize(("value", "word"), [(float("nan"), "NaN"), (0.0, "zero"), (-0.8, "negative")])
def test_bad_spacing_is_an_error_naming_file_and_field(tmp_path, value, word):
    from data_fixtures import SHAPE, save_nifti

    path = tmp_path / "v.nii.gz"
    save_nifti(path, np.zeros(SHAPE, np.float32))
    set_pixdim(path, 2, value)
    with pytest.raises(SampleDataError, match=rf"v\.nii\.gz: header field pixdim\[2\] \(voxel spacing, mm\) is {word}"):
        read_header(path)


def test_zero_affine_is_an_error_naming_file_and_field(tmp_path):
    from data_fixtures import SHAPE, save_nifti

    path = tmp_path / "v.nii.gz"
    save_nifti(path, np.zeros(SHAPE, np.float32))
    zero_affine(path)
    with pytest.raises(SampleDataError, match=r"v\.nii\.gz: header affine \(sform/qform\) is all zero"):
        read_header(path)


def cli(*args: str) -> int:
    from medvision_eval.cli import main

    return main([*args, "--quiet"])


def test_bad_files_fail_only_their_samples_and_a_rerun_after_the_fix_sends_only_those(demo_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    backup = tmp_path / "backup"
    shutil.copytree(data, backup)
    ds = data / "Datasets"
    ct_plan = _read(next((ds / "DemoAbdomenCT").glob("benchmark_plan_detection_*.json.gz")))
    ct_image = ct_plan["tasks"][0]["test_cases"][0]["image_file"]
    epi_plan = _read(next((ds / "DemoBrainEPI").glob("benchmark_plan_detection_*.json.gz")))
    epi_image = epi_plan["tasks"][0]["test_cases"][0]["image_file"]
    ceph_plan_path = ds / "DemoCeph" / "benchmark_plan_biometry_v1.0.0.json.gz"
    ceph_plan = _read(ceph_plan_path)
    cases = ceph_plan["tasks"][0]["test_cases"]
    lm_number, lm_list, no_index = cases[0], cases[1], cases[2]

    set_pixdim(ds / "DemoAbdomenCT" / ct_image, 1, float("nan"))  # 1. NaN spacing
    zero_affine(ds / "DemoBrainEPI" / epi_image)  # 2. all-zero affine
    lm = _read(ds / "DemoCeph" / lm_number["landmark_file"])  # 3. a non-numeric landmark value
    first = lm["slice_landmarks_x"][0]["landmarks"]
    name = sorted(first)[0]
    first[name][1] = "twelve"
    _write(ds / "DemoCeph" / lm_number["landmark_file"], lm)
    _write(ds / "DemoCeph" / lm_list["landmark_file"], [lm])  # 4. top level is a list
    del no_index["slice_profiles_x"][0]["slice_idx"]  # 5. a plan entry without its slice index
    _write(ceph_plan_path, ceph_plan)

    out = tmp_path / "run"
    calls = tmp_path / "calls.txt"
    cli("--tasks", TASKS, "--model", "prior", "--model-args", f"calls_log={calls}", "--data", str(data),
        "--output", str(out))
    console = capsys.readouterr().out
    assert "Traceback" not in console
    problems = (out / "data_problems.txt").read_text()
    assert f"{ct_image.split('/')[-1]}: header field pixdim[1] (voxel spacing, mm) is NaN" in problems
    assert f"{epi_image.split('/')[-1]}: header affine (sform/qform) is all zero" in problems
    assert f"{lm_number['landmark_file']}: slice_landmarks_x[0].landmarks.{name}[1] = 'twelve' is not a finite number" in problems
    assert f"{lm_list['landmark_file']}: top level is a list" in problems
    assert f"case {no_index['case_ID']!r} slice_profiles_x[0].slice_idx is missing" in problems

    rows = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in out.glob("samples_*.jsonl")}
    failed = {r["id"] for rs in rows.values() for r in rs if r["status"] == "error"}
    answered = {r["id"] for rs in rows.values() for r in rs if r["status"] != "error"}
    assert failed and answered
    for r in (r for rs in rows.values() for r in rs if r["status"] == "error"):
        assert r["error"].startswith("data: ") and (".nii.gz" in r["error"] or ".json.gz" in r["error"])
    assert any(no_index["case_ID"] in i for i in failed) and any(lm_list["case_ID"] in i for i in failed)
    assert any(lm_number["case_ID"] in i for i in failed)
    sent_first = calls.read_text().splitlines()
    assert len(sent_first) == len(answered) and not set(sent_first) & failed

    results = (out / "results.json").read_text()
    json.loads(results, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    # fix every file, rerun the same command: only the failed samples are sent
    shutil.rmtree(data)
    shutil.copytree(backup, data)
    calls.unlink()
    cli("--tasks", TASKS, "--model", "prior", "--model-args", f"calls_log={calls}", "--data", str(data),
        "--output", str(out))
    sent_again = calls.read_text().splitlines()
    assert len(sent_again) == len(failed)
    assert not set(sent_again) & answered
    rows = [json.loads(x) for p in out.glob("samples_*.jsonl") for x in p.read_text().splitlines()]
    assert all(r["status"] != "error" for r in rows)
    assert not (out / "data_problems.txt").exists() or "error" not in (out / "data_problems.txt").read_text()


def test_reader_reports_landmark_structure_without_raising(demo_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    plan = _read(data / "Datasets/DemoCeph/benchmark_plan_biometry_v1.0.0.json.gz")
    case = plan["tasks"][0]["test_cases"][0]
    _write(data / "Datasets/DemoCeph" / case["landmark_file"], {"slice_landmarks_x": [{"landmarks": {"P1": [0, None, 1]}}]})
    reader = MedVisionData(data)
    config = next(c for c in reader.catalogue.all() if c.dataset == "DemoCeph")
    samples = reader.samples(config)
    bad = [s for s in samples if f"/{case['case_ID']}/" in s.id]
    with pytest.raises(SampleDataError, match=r"slice_landmarks_x\[0\]\.landmarks\.P1\[1\] = None is not a finite number"):
        reader.image(bad[0])
