"""NIfTI scl_slope/scl_inter are applied exactly once (issue 10 item 1)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from medvision_eval.data import render
from medvision_eval.data.volumes import load_ras, take_slice
from medvision_eval.protocol import get_protocol


def _int16_ct(path, hu: np.ndarray, slope: float = 1.0, inter: float = -1024.0):
    stored = np.round((hu - inter) / slope).astype(np.int16)
    img = nib.Nifti1Image(stored, np.diag([0.8, 0.8, 2.5, 1.0]))
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return stored


def test_int16_ct_with_slope_and_inter_reads_true_hu(tmp_path):
    hu = np.zeros((4, 3, 2), dtype=np.float64)
    hu[..., 0] = [[-1000, 40, 300]] * 4  # air, soft tissue, contrast
    hu[..., 1] = [[-1000, 40, 300]] * 4
    stored = _int16_ct(tmp_path / "ct.nii.gz", hu)
    assert stored.min() == 24 and stored.max() == 1324  # really stored offset by 1024
    vol, header = load_ras(tmp_path / "ct.nii.gz")
    assert vol.dtype == np.float32
    np.testing.assert_array_equal(vol[0, :, 0], [-1000.0, 40.0, 300.0])
    np.testing.assert_array_equal(vol, hu.astype(np.float32))


def test_slope_two_reads_true_hu(tmp_path):
    hu = np.array([[[-1000.0], [40.0], [300.0]]])
    _int16_ct(tmp_path / "ct2.nii.gz", hu, slope=2.0, inter=-1000.0)
    vol, _ = load_ras(tmp_path / "ct2.nii.gz")
    np.testing.assert_array_equal(vol.ravel(), [-1000.0, 40.0, 300.0])


def test_corrected_soft_tissue_window_on_scaled_ct_is_not_blank(tmp_path):
    rng = np.random.default_rng(0)
    hu = np.full((32, 32, 3), -1000.0)
    hu[8:24, 8:24, :] = 40.0 + rng.normal(0, 30, size=(16, 16, 3)).round()  # soft tissue, liver-like
    _int16_ct(tmp_path / "liver.nii.gz", hu)
    vol, _ = load_ras(tmp_path / "liver.nii.gz")
    sl = take_slice(vol, 2, 1)
    protocol = get_protocol("corrected")
    assert render.anatomy_group("liver") == "soft_tissue"
    gray = render.to_uint8(sl, protocol.render, modality="CT", label="liver", dataset="X")
    inside = gray[8:24, 8:24]
    # level 40, width 400: 40 HU maps to mid-grey (about 153), air to 0
    assert 120 < float(inside.mean()) < 190
    assert inside.std() > 5
    assert gray[0, 0] == 0
    # with the old double scaling the tissue read about -984 HU and the window was all black
    doubled = sl - 1024.0
    assert render.to_uint8(doubled, "window", modality="CT", label="liver", dataset="X").max() == 0


def test_partly_nan_slice_renders_as_v1_under_paper_and_filled_under_corrected():
    x = np.array([[0.0, 50.0], [np.nan, 100.0]], dtype=np.float32)
    # v1: img.max() > img.min() is False with NaNs, so np.zeros_like -> black
    np.testing.assert_array_equal(render.to_uint8(x, "minmax"), np.zeros((2, 2), np.uint8))
    filled = render.minmax_uint8(x)  # corrected's fallback: NaN as the slice minimum
    np.testing.assert_array_equal(filled, [[0, 127], [0, 255]])
    window = render.to_uint8(x, get_protocol("corrected").render, modality="MR", label="brain", dataset="X")
    assert window.max() == 255 and window[1, 0] == 0
