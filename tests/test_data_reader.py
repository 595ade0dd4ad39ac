from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_fixtures import SHAPE, ZOOMS, save_nifti
from medvision_eval.data import MedVisionData, SampleDataError
from medvision_eval.data.errors import DataNotFoundError
from medvision_eval.data.planfile import read_json, split_files, write_json
from medvision_eval.protocol import get_protocol

KITS = "KiTS23_BoxSize_Task01_Axial"


def test_reader_yields_filtered_samples_in_official_order(kits_root):
    data = MedVisionData(kits_root)
    samples = data.samples(data.catalogue.get(KITS))
    # c0 slice1 label1, c0 slice2 label3, c1 slice4 label2, c2 slice0 label1 (multi-box and 9-px boxes dropped)
    assert [(s.image.path, s.image.slice_index, s.label_id) for s in samples] == [
        ("Datasets/KiTS23/Images/c0_0000.nii.gz", 1, 1), ("Datasets/KiTS23/Images/c0_0000.nii.gz", 2, 3),
        ("Datasets/KiTS23/Images/c1_0000.nii.gz", 4, 2), ("Datasets/KiTS23/Images/c2_0000.nii.gz", 0, 1)]
    assert [s.index for s in samples] == [0, 1, 2, 3]
    assert len({s.id for s in samples}) == 4
    s = samples[0]
    # axial slice of a (40, 30, 6) volume: 40 rows (height) x 30 columns (width); spacing (width, height)
    assert s.image_size == (30, 40)
    assert s.pixel_spacing == pytest.approx((ZOOMS[1], ZOOMS[0]))
    # box rows 5..24, cols 4..20 -> x1=4/30, y1=(40-24)/40, x2=20/30, y2=(40-5)/40
    assert s.target.values == pytest.approx((4 / 30, 16 / 40, 20 / 30, 35 / 40))
    assert s.target.unit == "relative" and s.target.names == ("x1", "y1", "x2", "y2")
    assert (s.label, s.modality, s.plane, s.dataset, s.split) == ("kidney", "CT", "A", "KiTS23", "test")
    assert s.image_description == "abdominal computed tomography (CT) scan"
    assert s.extra["box_area_ratio"] == pytest.approx(20 * 17 / (40 * 30))
    assert samples[1].target.values == pytest.approx((0.0, 1 / 40, 29 / 30, 1.0))
    train = data.samples(data.catalogue.get(KITS), split="train")
    assert [(t.image.path.split("/")[-1], t.split) for t in train] == [("c3_0000.nii.gz", "train")]
    assert data.problems == []


def test_image_is_v1_minmax_of_the_untransposed_slice(kits_root):
    data = MedVisionData(kits_root)
    s = data.samples(KITS)[0]
    vol = nib.load(str(kits_root / s.image.path)).get_fdata().astype("float32")
    sl = vol[:, :, s.image.slice_index]
    expected = ((sl - sl.min()) / (sl.max() - sl.min()) * 255).astype(np.uint8)
    img = get_protocol("paper").render_image(data, s)
    assert img.mode == "RGB" and img.size == (30, 40)
    arr = np.asarray(img)
    assert np.array_equal(arr[..., 0], expected) and np.array_equal(arr[..., 2], expected)
    windowed = np.asarray(get_protocol("corrected").render_image(data, s))[..., 0]
    assert windowed.shape == (40, 30) and not np.array_equal(windowed, expected)


def test_volume_decoded_once_per_run(kits_root):
    data = MedVisionData(kits_root, cache_bytes=0)  # room for the volume in use only
    samples = data.samples(KITS)
    results = list(data.images(samples * 3))  # grouped by volume
    assert len(results) == 12 and all(not isinstance(img, Exception) for _, img in results)
    assert data.decodes == 3  # three test volumes, each decoded once
    roomy = MedVisionData(kits_root, cache_bytes=1 << 30)
    for s in samples * 3:
        roomy.image(s)
    assert roomy.decodes == 3


def test_split_rule_is_python_random_seed_1024():
    names = [f"case_{i:03d}.nii.gz" for i in range(20)]
    expected = list(names)
    random.seed(1024)
    random.shuffle(expected)
    train, test = split_files(names)
    assert train == expected[:14] and test == expected[14:]
    state = random.getstate()
    split_files(names)
    assert random.getstate() == state  # global RNG untouched


def test_demo_reader_counts_and_ids(demo_root):
    data = MedVisionData(demo_root)
    counts = {c.name: len(data.samples(c)) for t in ("detection", "tl_size", "ad_measure") for c in data.catalogue.configs(t)}
    assert all(n > 0 for n in counts.values()), counts
    assert sum(counts.values()) < 400
    ad = data.samples("DemoCeph_BiometricsFromLandmarks_Angle_Task01_Sagittal")
    assert {s.extra["metric_type"] for s in ad} == {"angle"} and ad[0].target.unit == "degree"
    assert ad[0].extra["p1"] == "nasion" and ad[0].extra["metric_name"] == ""
    tl = data.samples("DemoAbdomenCT_TumorLesionSize_Task01_Coronal")
    assert tl[0].label == "liver tumor" and tl[0].target.unit == "mm"
    assert tl[0].pixel_spacing == pytest.approx((3.0, 0.9))  # coronal: width = z spacing, height = x spacing
    assert all(t.target.values[0] >= t.target.values[1] for t in tl)
    assert data.problems == []


# ------------------------------------------------------------------------------ bad input
def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _assert_others_run(data, samples, bad_path_fragment):
    ok = [s for s in samples if bad_path_fragment not in s.image.path]
    assert ok
    for s in ok:
        assert data.image(s).size == s.image_size


def test_missing_image_file(kits_root):
    (kits_root / "Datasets/KiTS23/Images/c1_0000.nii.gz").unlink()
    data = MedVisionData(kits_root)
    samples = data.samples(KITS)
    assert len(samples) == 4  # index positions stay as in the official order
    assert any("c1_0000.nii.gz: file not found" in p for p in data.problems)
    bad = [s for s in samples if "c1_" in s.image.path]
    with pytest.raises(SampleDataError, match=r"c1_0000\.nii\.gz: file not found"):
        data.image(bad[0])
    _assert_others_run(data, samples, "c1_")


def test_truncated_gzip(kits_root):
    path = kits_root / "Datasets/KiTS23/Images/c2_0000.nii.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    data = MedVisionData(kits_root)
    samples = data.samples(KITS)
    bad = [s for s in samples if "c2_" in s.image.path]
    with pytest.raises(SampleDataError, match=r"c2_0000\.nii\.gz: cannot decode voxel data \(truncated or corrupt gzip"):
        data.image(bad[0])
    _assert_others_run(data, samples, "c2_")


def test_header_mismatch_is_a_warning(kits_root):
    save_nifti(kits_root / "Datasets/KiTS23/Masks/c0.nii.gz", np.zeros((40, 30, 5), np.uint16), zooms=(0.8, 0.6, 3.0))
    data = MedVisionData(kits_root)
    samples = data.samples(KITS)
    msg = [p for p in data.problems if "header mismatch" in p]
    assert len(msg) == 1 and "c0_0000.nii.gz" in msg[0] and "Masks/c0.nii.gz" in msg[0]
    assert "shape (40, 30, 6) vs (40, 30, 5)" in msg[0] and "voxel size" in msg[0]
    _assert_others_run(data, samples, "nothing-is-bad")


def test_nan_and_constant_slices(kits_root):
    vol = np.random.default_rng(1).normal(0, 1, SHAPE).astype(np.float32)
    vol[:, :, 1] = np.nan  # every voxel of c0 slice 1
    vol[:, :, 2] = 7.0  # constant slice
    save_nifti(kits_root / "Datasets/KiTS23/Images/c0_0000.nii.gz", vol)
    vol1 = np.random.default_rng(2).normal(0, 1, SHAPE).astype(np.float32)
    vol1[0, 0, 4] = np.nan  # one NaN voxel
    save_nifti(kits_root / "Datasets/KiTS23/Images/c1_0000.nii.gz", vol1)
    data = MedVisionData(kits_root)
    s0, s1, s2, s3 = data.samples(KITS)
    with pytest.raises(SampleDataError, match=r"c0_0000\.nii\.gz slice 2:1: every voxel is NaN"):
        data.image(s0)
    assert np.asarray(data.image(s1)).max() == 0
    assert any("c0_0000.nii.gz slice 2:2: constant slice (value 7.0)" in p for p in data.problems)
    assert np.asarray(data.image(s2)).max() == 0  # paper: one NaN makes v1's min/max NaN -> black
    assert np.asarray(data.image(s2, "window")).max() > 0  # corrected: NaN shown as the minimum
    assert any("c1_0000.nii.gz slice 2:4: 1 NaN voxels" in p for p in data.problems)
    assert data.image(s3).size == (30, 40)


def test_4d_volume(kits_root):
    save_nifti(kits_root / "Datasets/KiTS23/Images/c2_0000.nii.gz", np.zeros((*SHAPE, 3), np.float32))
    data = MedVisionData(kits_root)
    samples = data.samples(KITS)
    assert any("c2_0000.nii.gz: 4D volume of shape (40, 30, 6, 3) is not supported" in p for p in data.problems)
    with pytest.raises(SampleDataError, match="4D volume"):
        data.image(samples[-1])
    _assert_others_run(data, samples, "c2_")


def test_path_escaping_the_root(kits_root):
    plan_path = kits_root / "Datasets/KiTS23/benchmark_plan_detection_v1.0.0.json.gz"
    plan = read_json(plan_path)
    outside = kits_root.parent / "outside.nii.gz"
    save_nifti(outside, np.zeros(SHAPE, np.float32))
    plan["tasks"][0]["test_cases"][1]["image_file"] = "../../../outside.nii.gz"
    plan["tasks"][0]["test_cases"][2]["image_file"] = str(outside)
    write_json(plan_path, plan)
    data = MedVisionData(kits_root)
    samples = data.samples(KITS)
    assert sum("path escapes the data root" in p for p in data.problems) == 2
    with pytest.raises(SampleDataError, match=r"\.\./\.\./\.\./outside\.nii\.gz: path escapes the data root"):
        data.image(samples[2])
    with pytest.raises(SampleDataError, match="outside.nii.gz: path escapes the data root"):
        data.image(samples[3])
    assert data.image(samples[0]).size == (30, 40)


def test_absolute_paths_from_another_machine_are_rebased(kits_root):
    plan_path = kits_root / "Datasets/KiTS23/benchmark_plan_detection_v1.0.0.json.gz"
    plan = read_json(plan_path)
    plan["tasks"][0]["test_cases"][0]["image_file"] = "/home/someone/Data/Datasets/KiTS23/Images/c0_0000.nii.gz"
    write_json(plan_path, plan)
    data = MedVisionData(kits_root)
    s = data.samples(KITS)[0]
    assert s.image.path == "Datasets/KiTS23/Images/c0_0000.nii.gz" and data.image(s).size == (30, 40)


def test_landmarks_outside_the_volume(demo_root, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(demo_root, root)
    cfg = "DemoCeph_BiometricsFromLandmarks_Distance_Task01_Sagittal"
    data = MedVisionData(root)
    first = data.samples(cfg)[0]
    case = Path(first.image.path).name.replace(".nii.gz", "")
    lm_path = root / "Datasets/DemoCeph/Landmarks" / f"{case}.json.gz"
    lm = read_json(lm_path)
    lm["slice_landmarks_x"][0]["landmarks"]["P3"] = [0, 500, 10]
    write_json(lm_path, lm)
    data = MedVisionData(root)
    samples = data.samples(cfg)
    assert any(f"{case}.json.gz: landmarks P3 lie outside the volume of shape (1, 150, 120)" in p for p in data.problems)
    bad = [s for s in samples if case in s.image.path]
    with pytest.raises(SampleDataError, match="landmarks P3 lie outside the volume"):
        data.image(bad[0])
    _assert_others_run(data, samples, case)


def test_missing_dataset_and_plan_messages(kits_root, monkeypatch):
    data = MedVisionData(kits_root)
    with pytest.raises(DataNotFoundError, match="dataset folder .*Datasets/AMOS22 is missing.*AMOS22_BoxSize_Task01_Axial_Test"):
        data.samples("AMOS22_BoxSize_Task01_Axial")
    with pytest.raises(DataNotFoundError, match="SKM-TEA is not redistributable"):
        data.samples("SKM-TEA_BoxSize_Task01_Axial")
    monkeypatch.setenv("MEDVISION_PLANNER_VERSION", "1.4.0")
    with pytest.raises(DataNotFoundError, match=r"benchmark_plan_detection_v1\.4\.0\.json\.gz is missing \(found: benchmark_plan_detection_v1\.0\.0"):
        data.samples(KITS)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        MedVisionData(kits_root / "nope")
