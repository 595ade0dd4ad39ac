"""The other official task lists (issue 10 item 6): OOD / with-OOD, resized, SFT training lists,
selectable by name, shown with their sizes by ``medvision-eval list configs``; the resized
variants behave as v1's ``reshape_image_hw``."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import zoom

from medvision_eval.data import MedVisionData
from medvision_eval.data.catalogue import builtin_catalogue, official_lists
from medvision_eval.protocol import get_protocol
from medvision_eval.tasks.detection import DetectionTask

# (family, list, configs, samples) as in the official tasks_list/*.json at c221615
SIZES = [
    ("detection", "paper", 28, 1166270), ("detection", "planeOOD", 48, None), ("detection", "taskOOD", 15, None),
    ("detection", "w-OOD", 91, None), ("detection", "train_SFT", 28, 1166270),
    ("detection", "336x336", 28, 1166270), ("detection", "560x560", 28, 1166270), ("detection", "896x896", 28, 1166270),
    ("tl_size", "paper", 10, 5456), ("tl_size", "w-OOD", 27, None), ("tl_size", "w-planeOOD", 81, None),
    ("tl_size", "train_SFT", 10, 5456), ("tl_size", "336x336", 10, 5456),
    ("ad_measure", "paper", 5, 1300), ("ad_measure", "OOD", 2, None), ("ad_measure", "wo-OOD", 5, None),
    ("ad_measure", "train_SFT", 5, 1300), ("ad_measure", "896x896", 5, 1300),
]


@pytest.mark.parametrize("family,name,n_configs,n_samples", SIZES)
def test_lists_selectable_by_name_with_official_sizes(family, name, n_configs, n_samples):
    lists = official_lists()[family]
    assert len(lists[name]) == n_configs
    if n_samples is not None:
        assert sum(lists[name].values()) == n_samples
    selected = builtin_catalogue().configs(family, name)
    assert len(selected) == n_configs
    assert all(name in c.lists for c in selected)


def test_resized_and_local_names_parse():
    cat = builtin_catalogue()
    c = cat.get("KiTS23_BoxCoordinate_Task01_Axial-560x560")
    assert c.name == "KiTS23_BoxSize_Task01_Axial-560x560" and c.reshape_hw == (560, 560)
    assert c.hf_config() == "KiTS23_BoxSize_Task01_Axial_Test"
    ood = cat.get("Ceph-Biometrics-400_BiometricsFromLandmarks_Angle_Task01_Sagittal_local_ds_OOD")
    assert ood.metric_type == "angle" and ood.lists == ("OOD",)


def test_list_configs_shows_lists_and_sizes():
    env = {**os.environ, "COLUMNS": "200"}  # the table's rows must not depend on the caller's terminal width
    out = subprocess.run([sys.executable, "-m", "medvision_eval.cli", "list", "configs"], capture_output=True,
                         text=True, env=env, timeout=120, check=True).stdout
    for row in ("w-OOD", "w-planeOOD", "wo-OOD", "336x336", "560x560", "896x896", "train_SFT", "planeOOD", "taskOOD"):
        assert row in out
    assert "1166270" in out  # detection paper list: 28 configs, 1,166,270 samples
    assert "KiTS23_BoxSize_Task01_Axial-336x336" in out


def test_resized_config_is_v1_reshape(kits_root):
    data = MedVisionData(kits_root)
    base = data.samples("KiTS23_BoxSize_Task01_Axial")
    resized = data.samples("KiTS23_BoxSize_Task01_Axial-336x336")
    assert len(resized) == len(base)
    s0, r0 = base[0], resized[0]
    assert r0.image_size == (336, 336) and s0.image_size == (30, 40)
    # spacing: np.float32 header spacing / (new / old) stays float32, as v1
    assert r0.pixel_spacing == (float(np.float32(0.6) / np.float32(336 / 30)), float(np.float32(0.8) / np.float32(336 / 40)))
    # detection target: v1 divides the original pixel corners by the resized size (box rows 5..24, cols 4..20)
    assert r0.target.values == (4 / 336, (336 - 24) / 336, 20 / 336, (336 - 5) / 336)
    assert r0.extra["plan_values"] == list(s0.target.values)
    paper, corrected = DetectionTask(get_protocol("paper")), DetectionTask(get_protocol("corrected"))
    assert paper.true_values(r0) == r0.target.values and corrected.true_values(r0) == s0.target.values
    # image: scipy.ndimage.zoom(order=1) of the float32 slice, then v1 min-max
    img = np.asarray(data.image(r0))[:, :, 0]
    vol = nib.load(str(kits_root / r0.image.path)).get_fdata().astype("float32")
    z = zoom(vol[:, :, r0.image.slice_index], (336 / 40, 336 / 30), order=1)
    np.testing.assert_array_equal(img, ((z - z.min()) / (z.max() - z.min()) * 255).astype(np.uint8))
