from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvision_eval.data import MedVisionData
from medvision_eval.data import annotate as A
from medvision_eval.data.catalogue import BenchmarkConfig, write_catalogue_file
from medvision_eval.data.planner import build_plan
from medvision_eval.data.planfile import read_json, write_json


def ellipse_mask(shape, spacing, centre, semi, angle_deg):
    r, c = np.mgrid[0:shape[0], 0:shape[1]]
    y, x = r * spacing[0] - centre[0], c * spacing[1] - centre[1]
    t = math.radians(angle_deg)
    u = y * math.cos(t) + x * math.sin(t)
    v = -y * math.sin(t) + x * math.cos(t)
    return (u / semi[0]) ** 2 + (v / semi[1]) ** 2 <= 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3), (2.0, 0.5)])
@pytest.mark.parametrize("angle", [0.0, 25.0, 90.0, 137.0])
def test_moment_fit_recovers_rotated_ellipses(spacing, angle):
    semi = (30.0, 14.0)
    mask = ellipse_mask((220, 220), spacing, (110.0 * spacing[0], 110.0 * spacing[1]), semi, angle)
    fits = A.fit_slice(mask, spacing, 2, 0, (*spacing, 1.0))
    assert len(fits) == 1
    major, minor = fits[0]["major"], fits[0]["minor"]
    tol = lambda true: max(0.02 * true, max(spacing))  # noqa: E731
    assert abs(major - 2 * semi[0]) <= tol(2 * semi[0])
    assert abs(minor - 2 * semi[1]) <= tol(2 * semi[1])
    lm = fits[0]["landmarks"]
    # end points of the major axis are about one major length apart in mm
    d12 = A.distance(lm["P1"], lm["P2"], (*spacing, 1.0))
    assert abs(d12 - 2 * semi[0]) <= 2 * max(spacing) + 0.02 * 2 * semi[0]


def test_v1_emulation_reproduces_its_quirks():
    # axis-aligned, isotropic: v1 agrees with the truth to a voxel
    iso = ellipse_mask((120, 120), (1.0, 1.0), (60.0, 60.0), (30.0, 14.0), 0.0)
    (fit,) = A.fit_slice(iso, (1.0, 1.0), 2, 0, (1.0, 1.0, 1.0), mode="v1")
    assert abs(fit["major"] - 60.0) <= 1.0 and abs(fit["minor"] - 28.0) <= 2.0
    assert all(isinstance(v, int) for v in fit["landmarks"]["P1"])  # rounded voxel indices
    # rotated by 30 degrees: the all_within gate discards it (fixed in annotation v1.4.0)
    rot = ellipse_mask((120, 120), (1.0, 1.0), (60.0, 60.0), (30.0, 14.0), 30.0)
    assert A.fit_slice(rot, (1.0, 1.0), 2, 0, (1.0, 1.0, 1.0), mode="v1") == []
    assert len(A.fit_slice(rot, (1.0, 1.0), 2, 0, (1.0, 1.0, 1.0))) == 1
    # small clusters (< 200 px) are skipped in both modes
    small = ellipse_mask((60, 60), (1.0, 1.0), (30.0, 30.0), (6.0, 5.0), 0.0)
    assert A.fit_slice(small, (1.0, 1.0), 2, 0, (1, 1, 1)) == []


def test_direct_fit_matches_an_exact_ellipse():
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    a, b, ang = 20.0, 8.0, math.radians(35)
    x = 50 + a * np.cos(t) * math.cos(ang) - b * np.sin(t) * math.sin(ang)
    y = 40 + a * np.cos(t) * math.sin(ang) + b * np.sin(t) * math.cos(ang)
    (cx, cy), (w, h), angle = A.fit_ellipse_direct(np.stack([x, y], 1))
    assert (cx, cy) == pytest.approx((50, 40), abs=1e-6)
    assert (w, h) == pytest.approx((16.0, 40.0), abs=1e-6)
    assert angle == pytest.approx(125.0, abs=1e-6)  # direction of the minor (width) axis


def test_boxes_and_relative_target():
    m = np.zeros((20, 30), bool)
    m[2:8, 3:13] = True
    m[12:15, 20:25] = True
    boxes = A.boxes_2d(m, (0.5, 2.0))
    assert [b["min_coords"] for b in boxes] == [[2, 3], [12, 20]]
    assert boxes[0]["max_coords"] == [7, 12] and boxes[0]["dimensions"] == [6, 10] and boxes[0]["sizes"] == [3.0, 20.0]
    assert not A.keep_box(boxes) and not A.keep_box(boxes[1:]) and A.keep_box([{"dimensions": [10, 10]}])
    assert A.relative_box([2, 3], [7, 12], 20, 30) == pytest.approx((3 / 30, 13 / 20, 12 / 30, 18 / 20))


def test_landmark_distance_and_angle_exact():
    vs = (0.5, 1.5, 2.0)
    p1, p2 = (1, 2, 3), (4, 6, 3)
    assert A.distance(p1, p2, vs) == pytest.approx(math.hypot(1.5, 6.0), abs=1e-9)
    # lines along x (mm) and at 60 deg in the x/y mm plane; the second line reversed -> acute 60
    q1, q2 = (0, 0, 0), (2, 0, 0)
    q3, q4 = (2, 0, 0), (2 - math.cos(math.radians(60)) / 0.5, -math.sin(math.radians(60)) / 1.5, 0)
    assert A.acute_angle(q1, q2, q3, q4, vs) == pytest.approx(60.0, abs=1e-6)
    assert A.acute_angle(q1, q2, q1, q2, vs) == pytest.approx(0.0, abs=1e-6)
    assert A.points_inside({"a": [0, 0, 0], "b": [10, 0, 0]}, (10, 5, 5)) == ["b"]


def test_ellipsoid_with_non_ras_affine_end_to_end(tmp_path: Path):
    """Rotated ellipsoid, anisotropic voxels, stored LPS: plan -> reader -> targets match the analytic sections."""
    from medvision_eval.data.demo import _ellipsoid, _rotation_z, _save

    ds = tmp_path / "Datasets" / "Phantom"
    shape, zooms = (90, 80, 30), (0.7, 0.9, 2.0)
    semi, rot, centre = (18.0, 11.0, 16.0), _rotation_z(40.0), np.array([31.5, 36.0, 30.0])
    for i in range(4):
        mask = _ellipsoid(shape, zooms, centre, semi, rot).astype(np.uint16) * 3
        _save(ds / "Images" / f"p{i}_0000.nii.gz", mask.astype(np.float32) * 100, zooms, ("L", "P", "S"))
        _save(ds / "Masks" / f"p{i}.nii.gz", mask, zooms, ("L", "P", "S"), dtype=np.uint16)
    assert nib.aff2axcodes(nib.load(str(ds / "Masks/p0.nii.gz")).affine) == ("L", "P", "S")
    task = {"image_modality": "CT", "image_description": "phantom", "image_folder": "Images", "mask_folder": "Masks",
            "image_suffix": "_0000.nii.gz", "mask_suffix": ".nii.gz", "labels_map": {"3": "lesion"}, "target_label": 3,
            "landmark_folder": "Landmarks-Label3"}
    build_plan(ds, "tl_size", [task])
    cfgs = [BenchmarkConfig(name=f"Phantom_TumorLesionSize_Task01_{p}", task="tl_size", dataset="Phantom", task_id=1,
                            plane=p, slice_axis={"Sagittal": 0, "Coronal": 1, "Axial": 2}[p], modality="CT",
                            labels={3: "lesion"}) for p in ("Axial", "Coronal", "Sagittal")]
    write_catalogue_file(tmp_path / "catalogue.json", cfgs)
    data = MedVisionData(tmp_path)
    checked = 0
    for cfg in cfgs:
        for s in data.samples(cfg, "test") + data.samples(cfg, "train"):
            axis, idx = cfg.slice_axis, s.image.slice_index
            true = A.ellipsoid_section(semi, rot, centre, axis, idx * zooms[axis])
            a, b = [i for i in range(3) if i != axis]
            vox = max(zooms[a], zooms[b])
            assert abs(s.target.values[0] - true[0]) <= max(0.02 * true[0], vox), (cfg.name, idx)
            assert abs(s.target.values[1] - true[1]) <= max(0.02 * true[1], vox), (cfg.name, idx)
            checked += 1
    assert checked > 40
    # the landmark files are in the official layout and consumed by nothing else: check one
    lm = read_json(ds / "Landmarks-Label3" / "p0.json.gz")
    assert set(lm) == {"slice_landmarks_x", "slice_landmarks_y", "slice_landmarks_z"}
    first = lm["slice_landmarks_z"][0]
    assert set(first["landmarks"][0]) == {"P1", "P2", "P3", "P4", "ROI_pixels_count"}
    assert first["landmarks"][0]["P1"][2] == first["slice_idx"]


def test_planner_landmarks_give_exact_metrics(tmp_path: Path):
    from medvision_eval.data.demo import _save

    ds = tmp_path / "Datasets" / "Lm"
    zooms = (1.0, 0.4, 0.7)
    pts = {"P1": [0, 10, 20], "P2": [0, 50, 80], "P3": [0, 30, 5], "P4": [0, 90, 40]}
    _save(ds / "Images" / "a.nii.gz", np.random.default_rng(0).normal(size=(1, 100, 100)), zooms, ("R", "A", "S"))
    write_json(ds / "Landmarks" / "a.json.gz", {"slice_landmarks_x": [{"slice_idx": 0, "landmarks": pts}],
                                                "slice_landmarks_y": [], "slice_landmarks_z": []})
    task = {"image_folder": "Images", "landmark_folder": "Landmarks", "image_suffix": ".nii.gz",
            "landmarks_map": {k: k.lower() for k in pts},
            "lines_map": {"L-1-2": {"name": "d", "element_keys": ["P1", "P2"], "element_map_name": "landmarks_map"},
                          "L-3-4": {"name": "", "element_keys": ["P3", "P4"], "element_map_name": "landmarks_map"}},
            "angles_map": {"A": {"name": "", "element_keys": ["L-1-2", "L-3-4"], "element_map_name": "lines_map"}},
            "biometrics_map": [{"metric_type": "distance", "metric_map_name": "lines_map", "metric_key": "L-1-2", "slice_dim": 0},
                               {"metric_type": "angle", "metric_map_name": "angles_map", "metric_key": "A", "slice_dim": 0}]}
    plan = read_json(build_plan(ds, "ad_measure", [task], split_ratio=0.0))
    (case,) = plan["tasks"][0]["test_cases"]
    dist, ang = [p["slice_profile"][0]["metric_value"] for p in case["slice_profiles_x"]]
    v1 = np.array([40 * 0.4, 60 * 0.7])
    v2 = np.array([60 * 0.4, 35 * 0.7])
    assert dist == pytest.approx(float(np.linalg.norm(v1)), abs=1e-6)
    true_angle = math.degrees(math.acos(abs(v1 @ v2) / np.linalg.norm(v1) / np.linalg.norm(v2)))
    assert ang == pytest.approx(true_angle, abs=1e-6)
