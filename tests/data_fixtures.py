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
