"""Fixtures for the data-layer tests: small data directories in the official layout, built here."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvision_eval.data.planfile import write_json

ZOOMS = (0.8, 0.6, 2.5)
SHAPE = (40, 30, 6)  # RAS voxel axes: axial slices are 40 rows x 30 columns


def save_nifti(path: Path, data: np.ndarray, zooms=ZOOMS, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([*zooms, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data), aff), str(path))


def _info(shape=SHAPE, zooms=ZOOMS) -> dict:
    return {"voxel_size": list(zooms), "affine": np.diag([*zooms, 1.0]).tolist(), "orientation": ["R", "A", "S"],
            "array_size": list(shape)}


def box(r0, c0, r1, c1) -> dict:
    return {"min_coords": [r0, c0], "max_coords": [r1, c1], "center_coords": [(r0 + r1) // 2, (c0 + c1) // 2],
            "dimensions": [r1 - r0 + 1, c1 - c0 + 1], "sizes": [0, 0], "mask_image_ratio": 0.1}


def make_kits_dir(root: Path) -> Path:
    """A 'KiTS23' directory with a hand-written detection plan (3 test cases, 1 train case)."""
    ds = root / "Datasets" / "KiTS23"
    rng = np.random.default_rng(0)
    for case in ("c0", "c1", "c2", "c3"):
        save_nifti(ds / "Images" / f"{case}_0000.nii.gz", rng.normal(0, 1, SHAPE).astype(np.float32))
        save_nifti(ds / "Masks" / f"{case}.nii.gz", np.zeros(SHAPE, np.uint16))

    def case(cid, profiles):
        return {"case_ID": cid, "image_file": f"Images/{cid}_0000.nii.gz", "mask_file": f"Masks/{cid}.nii.gz",
                "image_file_info": _info(), "mask_file_info": _info(), "slice_profiles_x": [], "slice_profiles_y": [],
                "slice_profiles_z": profiles}

    test_cases = [
        case("c0", [
            {"slice_idx": 1, "slice_profile": [
                {"label": 1, "bboxes": [box(5, 4, 24, 20)]},  # kept
                {"label": 2, "bboxes": [box(2, 2, 12, 12), box(20, 20, 30, 29)]},  # two boxes: dropped
            ]},
            {"slice_idx": 2, "slice_profile": [
                {"label": 2, "bboxes": [box(10, 10, 18, 25)]},  # 9 rows: under 10 px, dropped
                {"label": 3, "bboxes": [box(0, 0, 39, 29)]},  # kept, full image
            ]},
        ]),
        case("c1", [{"slice_idx": 4, "slice_profile": [{"label": 2, "bboxes": [box(10, 11, 19, 20)]}]}]),  # 10x10 kept
        case("c2", [{"slice_idx": 0, "slice_profile": [{"label": 1, "bboxes": [box(3, 3, 15, 15)]}]}]),
    ]
    train_cases = [case("c3", [{"slice_idx": 3, "slice_profile": [{"label": 1, "bboxes": [box(1, 1, 20, 20)]}]}])]
    task = {"image_modality": "CT", "image_description": "abdominal computed tomography (CT) scan",
            "image_folder": "Images", "mask_folder": "Masks", "labels_map": {"1": "kidney", "2": "kidney tumor", "3": "kidney cyst"},
            "task_ID": "01", "test_cases": test_cases, "train_cases": train_cases}
    write_json(ds / "benchmark_plan_detection_v1.0.0.json.gz", {"dataset_info": {"dataset": "KiTS23"}, "tasks": [task]})
    return root


@pytest.fixture
def kits_root(tmp_path: Path) -> Path:
    return make_kits_dir(tmp_path)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    from medvision_eval.data.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo") / "data")


def ellipse(major: float, minor: float | None = None) -> list[dict]:
    """One fitted ellipse of a T/L plan entry (v1.0.0 layout); ``minor=None`` leaves the L-3-4 axis out."""
    axes = [("L-1-2", major)] + ([("L-3-4", minor)] if minor is not None else [])
    return [{"metric_type": "distance", "metric_map_name": "biometrics_map", "metric_key": k, "metric_value": v,
             "metric_unit": "mm", "slice_dim": 2} for k, v in axes]


def add_kits_tl_plan(root: Path) -> Path:
    """A T/L (biometry) plan next to the KiTS23 detection fixture, hand-written to pin the loader's rules.

    Official order and filters (``MedVision.py::_generate_examples``, Tumor-Lesion-Size): cases in plan
    order, entries of ``slice_profiles_z`` in plan order (not sorted), one sample per entry, dropped when
    ``n_total_clusters > 1`` (when present) else when more than one ellipse was measured.
    """
    ds = root / "Datasets" / "KiTS23"

    def case(cid, entries):
        return {"case_ID": cid, "image_file": f"Images/{cid}_0000.nii.gz", "mask_file": f"Masks/{cid}.nii.gz",
                "landmark_file": f"Landmarks/{cid}.json.gz", "image_file_info": _info(), "mask_file_info": _info(),
                "slice_profiles_x": [], "slice_profiles_y": [], "slice_profiles_z": entries}

    test_cases = [
        case("c0", [
            {"slice_idx": 3, "slice_profile": [ellipse(12.3456, 7.891)]},  # kept (index 0)
            {"slice_idx": 1, "slice_profile": [ellipse(20.0, 10.0), ellipse(8.0, 5.0)]},  # two ellipses: dropped
            {"slice_idx": 2, "slice_profile": [ellipse(20.0, 10.0), ellipse(9.0)]},  # incomplete 2nd repeats the 1st: dropped
        ]),
        case("c1", [
            {"slice_idx": 4, "n_total_clusters": 2, "slice_profile": [ellipse(30.0, 20.0)]},  # v1.1.0+: 2 clusters, dropped
            {"slice_idx": 5, "n_total_clusters": 1, "slice_profile": [ellipse(31.0, 21.0)]},  # kept (index 1)
            {"slice_idx": 0, "slice_profile": [ellipse(15.0, 16.0)]},  # kept (index 2), plan order kept
        ]),
        case("c2", [{"slice_idx": 2, "slice_profile": []}]),  # kept by the loader with an empty profile (index 3)
    ]
    task = {"image_modality": "CT", "image_description": "abdominal computed tomography (CT) scan",
            "image_folder": "Images", "mask_folder": "Masks", "landmark_folder": "Landmarks",
            "labels_map": {"1": "kidney", "2": "kidney tumor", "3": "kidney cyst"}, "target_label": 2,
            "biometrics_map": [{"metric_type": "distance", "metric_map_name": "biometrics_map", "metric_key": "L-1-2"}],
            "task_ID": "01", "test_cases": test_cases, "train_cases": []}
    write_json(ds / "benchmark_plan_biometry_v1.0.0.json.gz", {"dataset_info": {"dataset": "KiTS23"}, "tasks": [task]})
    return root


def make_landmark_ad_dir(root: Path, dataset: str = "Ceph-Biometrics-400") -> Path:
    """A landmark-family biometry plan (angles and distances, sagittal) for A/D order and metric-type split."""
    ds = root / "Datasets" / dataset
    rng = np.random.default_rng(3)
    for cid in ("p0", "p1"):
        save_nifti(ds / "Images" / f"{cid}.nii.gz", rng.normal(0, 1, SHAPE).astype(np.float32))

    def metric(mtype, key, value, idx):
        return {"slice_idx": idx, "slice_profile": [
            {"metric_type": mtype, "metric_map_name": "angles_map" if mtype == "angle" else "distances_map",
             "metric_key": key, "metric_value": value, "metric_unit": "degree" if mtype == "angle" else "mm",
             "slice_dim": 0}]}

    def case(cid, entries):
        return {"case_ID": cid, "image_file": f"Images/{cid}.nii.gz", "image_file_info": _info(),
                "slice_profiles_x": entries, "slice_profiles_y": [], "slice_profiles_z": []}

    test_cases = [
        case("p0", [metric("distance", "D1", 52.3456, 7), metric("angle", "A1", 0.123456, 7),
                    metric("distance", "D2", 11.1111, 9)]),
        case("p1", [metric("angle", "A1", 3.3333, 2), metric("distance", "D1", 48.0, 2)]),
    ]
    task = {"image_modality": "X-ray", "image_description": "cephalogram (head and neck X-ray)",
            "image_folder": "Images", "landmarks_map": {"P1": "sella", "P2": "nasion", "P3": "orbitale", "P4": "porion"},
            "lines_map": {"L1": {"element_keys": ["P1", "P2"], "element_map_name": "landmarks_map"},
                          "L2": {"element_keys": ["P3", "P4"], "element_map_name": "landmarks_map"}},
            "angles_map": {"A1": {"name": "", "element_keys": ["L1", "L2"], "element_map_name": "lines_map"}},
            "distances_map": {"D1": {"name": "", "element_keys": ["P1", "P2"], "element_map_name": "landmarks_map"},
                              "D2": {"name": "", "element_keys": ["P3", "P4"], "element_map_name": "landmarks_map"}},
            "task_ID": "01", "test_cases": test_cases, "train_cases": []}
    write_json(ds / "benchmark_plan_biometry_v1.0.0.json.gz", {"dataset_info": {"dataset": dataset}, "tasks": [task]})
    return root
