"""Demo data: a small MedVision data directory generated deterministically on first use.

It has the official layout (``Datasets/<name>/benchmark_plan_*.json.gz`` + NIfTI + landmark
files) so the demo exercises the real reader, plus a ``catalogue.json`` declaring its configs:

* ``DemoAbdomenCT`` - synthetic abdominal CT (body, liver, kidneys, spleen, liver tumour =
  rotated ellipsoid of known semi-axes), anisotropic voxels, stored in LPS and PIR orientation,
  Gaussian noise. Detection (axial) and tumour size (axial and coronal).
* ``DemoBrainEPI`` - nibabel's bundled real EPI brain scan (``example4d.nii.gz``, LAS, oblique),
  with a synthesized brain mask and an inserted lesion ellipsoid. Detection (axial).
* ``DemoCeph`` - synthetic cephalogram-like X-ray with landmark sets of known distances and
  angles, anisotropic pixels. Distance and angle configs (sagittal).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .location import DEMO_VERSION, DONE_MARKER, cache_base, default_data_dir  # noqa: F401  (re-exported)
from .catalogue import CATALOGUE_FILE, PLANES, BenchmarkConfig, write_catalogue_file
from .planfile import write_json
from .planner import build_plan

SEED = 20251118


# ------------------------------------------------------------------------- volume helpers
def _save(path: Path, data_ras: np.ndarray, zooms: tuple[float, float, float], codes: tuple[str, str, str],
          dtype=np.float32) -> None:
    """Save a RAS+ array so that on disk its axes follow ``codes`` (the reader reorients back)."""
    img = nib.Nifti1Image(np.asarray(data_ras, dtype=dtype), np.diag([*zooms, 1.0]))
    img.header.set_xyzt_units("mm")
    target = nib.orientations.axcodes2ornt(codes)
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), target)
    out = img.as_reoriented(transform)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(path))


def _rotation_z(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]])


def _ellipsoid(shape, zooms, centre_mm, semi_mm, rotation=None) -> np.ndarray:
    rot = np.eye(3) if rotation is None else rotation
    grids = np.meshgrid(*[np.arange(n) * z for n, z in zip(shape, zooms)], indexing="ij")
    d = np.stack([g - c for g, c in zip(grids, centre_mm)], axis=-1) @ rot  # body coordinates
    return ((d / np.asarray(semi_mm)) ** 2).sum(axis=-1) <= 1.0


# ------------------------------------------------------------------------------ datasets
def _abdomen(ds: Path, rng: np.random.Generator) -> list[dict[str, Any]]:
    shape, zooms = (88, 80, 20), (0.9, 1.0, 3.0)
    ext = np.array(shape) * np.array(zooms)
    truth = []
    for i in range(6):
        c = ext / 2 + rng.normal(0, 2.0, 3) * np.array([1, 1, 0])
        body = _ellipsoid(shape, zooms, c, (ext[0] * 0.46, ext[1] * 0.40, ext[2] * 3))
        liver = _ellipsoid(shape, zooms, c + [-10, 2, 0], (20 + rng.uniform(0, 3), 16, 30), _rotation_z(rng.uniform(-20, 20)))
        rk = _ellipsoid(shape, zooms, c + [-14, -20, -8], (5, 7, 14))
        lk = _ellipsoid(shape, zooms, c + [16, -20, -8], (5, 7, 14))
        spleen = _ellipsoid(shape, zooms, c + [22, 2, 6], (6, 9, 12))
        semi = (rng.uniform(12.0, 15.0), rng.uniform(9.0, 11.0), rng.uniform(16.0, 20.0))
        angle = float(rng.uniform(0, 180))
        t_centre = c + [-10, 2, 0] + rng.normal(0, 1.0, 3)
        tumour = _ellipsoid(shape, zooms, t_centre, semi, _rotation_z(angle))
        mask = np.zeros(shape, np.uint16)
        for lab, m in ((1, liver), (2, rk), (3, lk), (4, spleen), (5, tumour)):
            mask[m & body] = lab
        hu = np.where(body, 30.0, -1000.0)
        for lab, value in ((1, 60.0), (2, 160.0), (3, 160.0), (4, 50.0), (5, 15.0)):
            hu[mask == lab] = value
        hu += rng.normal(0, 12.0, shape)
        codes = ("L", "P", "S") if i % 2 == 0 else ("P", "I", "R")
        _save(ds / "Images" / f"abd_{i:03d}_0000.nii.gz", hu, zooms, codes)
        _save(ds / "Masks" / f"abd_{i:03d}.nii.gz", mask, zooms, codes, dtype=np.uint16)
        truth.append({"case": f"abd_{i:03d}", "tumour_semi_axes_mm": list(semi), "tumour_angle_deg": angle,
                      "tumour_centre_mm": list(map(float, t_centre)), "orientation": "".join(codes)})
    labels = {"1": "liver", "2": "right kidney", "3": "left kidney", "4": "spleen", "5": "liver tumor"}
    common = {"image_modality": "CT", "image_description": "synthetic abdominal computed tomography (CT) scan",
              "image_folder": "Images", "mask_folder": "Masks", "image_prefix": "", "image_suffix": "_0000.nii.gz",
              "mask_prefix": "", "mask_suffix": ".nii.gz", "labels_map": labels}
    build_plan(ds, "detection", [dict(common)], dataset_info={"dataset": "DemoAbdomenCT"})
    tl = dict(common, target_label=5, cluster_size_threshold=200, landmark_folder="Landmarks-Label5",
              landmark_prefix="", landmark_suffix=".json.gz")
    build_plan(ds, "tl_size", [tl], dataset_info={"dataset": "DemoAbdomenCT"})
    return truth


def _brain(ds: Path, rng: np.random.Generator) -> list[dict[str, Any]]:
    src = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    img = nib.load(str(src))
    data = np.asarray(img.dataobj, dtype=np.float32)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    truth = []
    for i, (t, shift) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        vol = data[..., t].copy()
        brain = vol > np.percentile(vol, 70)
        from scipy import ndimage

        lab, n = ndimage.label(brain)
        if n:
            brain = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        brain = ndimage.binary_fill_holes(brain)
        centre = np.array(ndimage.center_of_mass(brain)) * np.array(zooms) + np.array([12.0 if shift else -12.0, 6.0, 0.0])
        semi = (rng.uniform(9, 12), rng.uniform(7, 9), rng.uniform(6, 9))
        lesion = _ellipsoid(vol.shape, zooms, centre, semi, _rotation_z(rng.uniform(0, 180))) & brain
        vol[lesion] = vol[lesion] * 1.6 + 200.0
        mask = np.zeros(vol.shape, np.uint16)
        mask[brain] = 1
        mask[lesion] = 2
        name = f"epi_{i:03d}"
        for folder, arr, dt in (("Images", vol, np.float32), ("Masks", mask, np.uint16)):
            hdr = img.header.copy()
            hdr.set_data_dtype(dt)
            hdr.set_data_shape(arr.shape)
            out = nib.Nifti1Image(arr.astype(dt), img.affine, hdr)
            (ds / folder).mkdir(parents=True, exist_ok=True)
            nib.save(out, str(ds / folder / (f"{name}_0000.nii.gz" if folder == "Images" else f"{name}.nii.gz")))
        truth.append({"case": name, "source": "nibabel/tests/data/example4d.nii.gz", "time_point": t,
                      "lesion_semi_axes_mm": list(semi)})
    task = {"image_modality": "MRI", "image_description": "echo-planar brain magnetic resonance imaging (MRI) scan",
            "image_folder": "Images", "mask_folder": "Masks", "image_prefix": "", "image_suffix": "_0000.nii.gz",
            "mask_prefix": "", "mask_suffix": ".nii.gz", "labels_map": {"1": "brain", "2": "synthetic lesion"}}
    build_plan(ds, "detection", [task], dataset_info={"dataset": "DemoBrainEPI"})
    return truth


CEPH_LANDMARKS = {"P1": "sella", "P2": "nasion", "P3": "orbitale", "P4": "porion", "P5": "subspinale", "P6": "supramentale"}
CEPH_LINES = {
    "L-1-2": {"name": "", "element_keys": ["P1", "P2"], "element_map_name": "landmarks_map"},
    "L-3-4": {"name": "", "element_keys": ["P3", "P4"], "element_map_name": "landmarks_map"},
    "L-2-5": {"name": "", "element_keys": ["P2", "P5"], "element_map_name": "landmarks_map"},
    "L-2-6": {"name": "", "element_keys": ["P2", "P6"], "element_map_name": "landmarks_map"},
}
CEPH_ANGLES = {
    "A-L_2_5-L_2_6": {"name": "", "element_keys": ["L-2-5", "L-2-6"], "element_map_name": "lines_map"},
    "A-L_1_2-L_3_4": {"name": "", "element_keys": ["L-1-2", "L-3-4"], "element_map_name": "lines_map"},
}
CEPH_METRICS = [
    {"metric_type": "angle", "metric_map_name": "angles_map", "metric_key": "A-L_2_5-L_2_6", "slice_dim": 0},
    {"metric_type": "angle", "metric_map_name": "angles_map", "metric_key": "A-L_1_2-L_3_4", "slice_dim": 0},
    {"metric_type": "distance", "metric_map_name": "lines_map", "metric_key": "L-1-2", "slice_dim": 0},
    {"metric_type": "distance", "metric_map_name": "lines_map", "metric_key": "L-3-4", "slice_dim": 0},
    {"metric_type": "distance", "metric_map_name": "lines_map", "metric_key": "L-2-5", "slice_dim": 0},
]


def _ceph(ds: Path, rng: np.random.Generator) -> list[dict[str, Any]]:
    shape, zooms = (1, 150, 120), (1.0, 0.5, 0.6)
    base = {"P1": (40, 30), "P2": (40, 95), "P3": (70, 80), "P4": (68, 20), "P5": (100, 92), "P6": (125, 88)}
    rr, cc = np.mgrid[0:shape[1], 0:shape[2]]
    truth = []
    for i in range(16):
        pts = {k: [0, int(np.clip(r + rng.integers(-6, 7), 2, shape[1] - 3)), int(np.clip(c + rng.integers(-6, 7), 2, shape[2] - 3))]
               for k, (r, c) in base.items()}
        img = 400.0 * np.exp(-(((rr - 75) / 60.0) ** 2 + ((cc - 60) / 50.0) ** 2)) + rng.normal(0, 15.0, shape[1:])
        for _, r, c in pts.values():
            img[(rr - r) ** 2 + (cc - c) ** 2 <= 4] += 600.0
        _save(ds / "Images" / f"ceph_{i:03d}.nii.gz", img[None], zooms, ("R", "A", "S"))
        write_json(ds / "Landmarks" / f"ceph_{i:03d}.json.gz",
                   {"slice_landmarks_x": [{"slice_idx": 0, "landmarks": pts}], "slice_landmarks_y": [], "slice_landmarks_z": []})
        truth.append({"case": f"ceph_{i:03d}", "landmarks": pts})
    task = {"image_modality": "X Ray", "image_description": "synthetic cephalogram (head and neck X-ray)",
            "image_folder": "Images", "landmark_folder": "Landmarks", "image_prefix": "", "image_suffix": ".nii.gz",
            "landmark_prefix": "", "landmark_suffix": ".json.gz", "landmarks_map": CEPH_LANDMARKS,
            "lines_map": CEPH_LINES, "angles_map": CEPH_ANGLES, "biometrics_map": CEPH_METRICS}
    build_plan(ds, "ad_measure", [task], dataset_info={"dataset": "DemoCeph"})
    return truth


def demo_configs() -> list[BenchmarkConfig]:
    def cfg(name, task, dataset, plane, modality, desc, labels, metric=None):
        return BenchmarkConfig(name=name, task=task, dataset=dataset, task_id=1, plane=plane, slice_axis=PLANES[plane],
                               modality=modality, image_description=desc, labels=labels, lists=("demo",),
                               metric_type=metric, verified=True)

    abd = {1: "liver", 2: "right kidney", 3: "left kidney", 4: "spleen", 5: "liver tumor"}
    abd_desc = "synthetic abdominal computed tomography (CT) scan"
    ceph_desc = "synthetic cephalogram (head and neck X-ray)"
    return [
        cfg("DemoAbdomenCT_BoxSize_Task01_Axial", "detection", "DemoAbdomenCT", "Axial", "CT", abd_desc, abd),
        cfg("DemoBrainEPI_BoxSize_Task01_Axial", "detection", "DemoBrainEPI", "Axial", "MR",
            "echo-planar brain magnetic resonance imaging (MRI) scan", {1: "brain", 2: "synthetic lesion"}),
        cfg("DemoAbdomenCT_TumorLesionSize_Task01_Axial", "tl_size", "DemoAbdomenCT", "Axial", "CT", abd_desc, {5: "liver tumor"}),
        cfg("DemoAbdomenCT_TumorLesionSize_Task01_Coronal", "tl_size", "DemoAbdomenCT", "Coronal", "CT", abd_desc, {5: "liver tumor"}),
        cfg("DemoCeph_BiometricsFromLandmarks_Distance_Task01_Sagittal", "ad_measure", "DemoCeph", "Sagittal", "XR", ceph_desc, {}, "distance"),
        cfg("DemoCeph_BiometricsFromLandmarks_Angle_Task01_Sagittal", "ad_measure", "DemoCeph", "Sagittal", "XR", ceph_desc, {}, "angle"),
    ]


def build_demo(path: str | Path) -> Path:
    """Write the demo data directory into ``path`` (created; must be empty or absent)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    truth = {
        "DemoAbdomenCT": _abdomen(root / "Datasets" / "DemoAbdomenCT", rng),
        "DemoBrainEPI": _brain(root / "Datasets" / "DemoBrainEPI", rng),
        "DemoCeph": _ceph(root / "Datasets" / "DemoCeph", rng),
    }
    write_catalogue_file(root / CATALOGUE_FILE, demo_configs())
    (root / DONE_MARKER).write_text(json.dumps({"demo_version": DEMO_VERSION, "seed": SEED, "truth": truth}, indent=1))
    return root


def demo_dir() -> Path:
    """The demo directory, generated on first use (built in a temp dir, then renamed atomically)."""
    base = cache_base()
    final = base / f"demo-{DEMO_VERSION}"
    if (final / DONE_MARKER).is_file():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".demo-{DEMO_VERSION}-", dir=base))
    try:
        build_demo(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / DONE_MARKER).is_file():  # a half directory from elsewhere: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final

