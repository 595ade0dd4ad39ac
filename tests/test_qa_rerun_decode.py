"""Hostile inputs for the predict path and the finished-rerun fast path: NIfTI files in every
layout the decoder may meet (values equal nibabel's, or one error naming the file), images handed
to adapters that draw on them, and reruns whose fast path must print and exit as a full rerun."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import ImageDraw

from medvision_eval.cli import main
from medvision_eval.data import MedVisionData, SampleDataError
from medvision_eval.data.volumes import decode_ras, load_ras

AFFINE = np.diag([1.5, 2.0, 3.0, 1.0])


def v1_values(path: Path) -> np.ndarray:
    """The official route: get_fdata (float64, scaled) -> float32, in RAS+ order."""
    img = nib.load(str(path))
    data = img.get_fdata()[..., 0] if len(img.shape) == 4 else img.get_fdata()
    ornt = nib.orientations.io_orientation(img.affine)
    return nib.orientations.apply_orientation(data, ornt).astype(np.float32)


def _save(path: Path, data: np.ndarray, **header) -> Path:
    img = nib.Nifti1Image(data, AFFINE)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, str(path))
    return path


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(7).integers(-1000, 3000, (64, 48, 40)).astype(np.int16)


def test_decoded_values_equal_nibabel_in_every_file_layout(tmp_path, volume):
    plain = gzip.decompress(_save(tmp_path / "ref.nii.gz", volume).read_bytes())
    half = len(plain) // 2
    files = {
        "ref.nii.gz": None,
        "plain.nii": None,
        "multi_member.nii.gz": gzip.compress(plain[:100]) + gzip.compress(b"") + gzip.compress(plain[100:half])
        + gzip.compress(plain[half:]),
        "trailing_garbage.nii.gz": gzip.compress(plain) + b"not gzip at all",
        "trailing_zeros.nii.gz": gzip.compress(plain) + bytes(64),
        "stored_level0.nii.gz": gzip.compress(plain, compresslevel=0),
    }
    _save(tmp_path / "plain.nii", volume)
    for name, payload in files.items():
        if payload is not None:
            (tmp_path / name).write_bytes(payload)
    img = nib.Nifti1Image(volume, AFFINE)  # big-endian with a header extension; then a far vox_offset
    big = nib.Nifti1Image(volume, AFFINE, header=img.header.as_byteswapped(">"))
    big.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"hostile comment " * 9))
    nib.save(big, str(tmp_path / "big_endian_ext.nii.gz"))
    far = nib.Nifti1Image(volume, AFFINE)
    far.header.set_data_offset(4096)
    nib.save(far, str(tmp_path / "far_offset.nii.gz"))
    files.update({"big_endian_ext.nii.gz": None, "far_offset.nii.gz": None})
    for dtype in (np.uint8, np.int8, np.uint16, np.int32, np.float32, np.float64):
        name = f"{np.dtype(dtype).name}.nii.gz"
        _save(tmp_path / name, (volume % 200).astype(dtype))
        files[name] = None
    _save(tmp_path / "scaled.nii.gz", volume, scl_slope=0.1234567, scl_inter=-1024.3)
    _save(tmp_path / "flipped_4d.nii.gz", volume[..., None])
    files.update({"scaled.nii.gz": None, "flipped_4d.nii.gz": None})
    for name in files:
        data, _ = load_ras(tmp_path / name)
        expected = v1_values(tmp_path / name)
        assert data.dtype == np.float32 and data.shape == expected.shape, name
        assert np.array_equal(data, expected), name
        assert not data.flags.writeable, name


def test_truncated_and_short_gzip_are_one_error_naming_the_file(tmp_path, volume):
    good = _save(tmp_path / "good.nii.gz", volume).read_bytes()
    plain = gzip.decompress(good)
    (tmp_path / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(plain[:-10]))
    size = volume.nbytes
    with pytest.raises(SampleDataError) as exc:
        decode_ras(tmp_path / "short.nii.gz")
    assert str(exc.value) == (f"{tmp_path / 'short.nii.gz'}: cannot decode voxel data (truncated or corrupt gzip: "
                              f"the compressed stream ends after {size - 10} of {size} voxel bytes)")
    with pytest.raises(SampleDataError) as exc:
        decode_ras(tmp_path / "truncated.nii.gz")
    assert str(exc.value).startswith(f"{tmp_path / 'truncated.nii.gz'}: cannot decode voxel data (truncated or corrupt gzip: ")
    assert "\n" not in str(exc.value)


def test_rgb_volume_is_a_sample_error_naming_the_file_not_a_traceback(tmp_path, volume):
    rgb = np.zeros(volume.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, AFFINE), str(path))
    with pytest.raises(SampleDataError) as exc:
        decode_ras(path)
    assert str(exc.value) == (f"{path}: voxel data type [('R', 'u1'), ('G', 'u1'), ('B', 'u1')] (e.g. RGB) is not a "
                              "scalar type; MedVision slices greyscale volumes (convert the file to one scalar channel)")


def test_rgb_volume_in_a_run_fails_its_samples_and_the_run_goes_on(demo_root, tmp_path, capsys):
    data = Path(shutil.copytree(demo_root, tmp_path / "data"))
    path = data / "Datasets/DemoBrainEPI/Images/epi_000_0000.nii.gz"
    img = nib.load(str(path))
    rgb = np.zeros(img.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    replaced = nib.Nifti1Image(rgb, img.affine)
    replaced.header.set_zooms(img.header.get_zooms())
    nib.save(replaced, str(path))
    out = tmp_path / "r"
    argv = ["--tasks", "detection", "--model", "prior", "--data", str(data), "--output", str(out), "--quiet"]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "predicted: 95 sent, 0 already answered, 7 errors" in printed
    problems = (out / "data_problems.txt").read_text().splitlines()
    assert len(problems) == 7 and all(line.startswith("error: sample DemoBrainEPI_") for line in problems)
    assert all(line.endswith(f": {path}: voxel data type [('R', 'u1'), ('G', 'u1'), ('B', 'u1')] (e.g. RGB) is not "
                             "a scalar type; MedVision slices greyscale volumes (convert the file to one scalar "
                             "channel)") for line in problems)
    assert "Traceback" not in printed
    assert main(argv + ["--max-error-rate", "0.1"]) == 0  # a rerun retries the 7 (they fail again) within the rate


def test_adapter_drawing_on_its_image_cannot_change_another_samples_image(demo_root):
    """Samples of one slice share one render; each still gets an image of its own, so an adapter
    that draws on (or thumbnails) its image does not change what the next sample is sent."""
    data = MedVisionData(demo_root)
    samples = data.samples("DemoAbdomenCT_BoxSize_Task01_Axial")
    a, b, c = next((x, y, z) for x, y, z in zip(samples, samples[1:], samples[2:])
                   if len({(s.image.path, s.image.slice_index) for s in (x, y, z)}) == 1)
    fresh = np.asarray(MedVisionData(demo_root).image(a)).copy()
    first = data.image(a)
    ImageDraw.Draw(first).rectangle([0, 0, 20, 20], fill=(255, 0, 0))
    second = data.image(b)
    assert second is not first and np.array_equal(np.asarray(second), fresh)
    second.thumbnail((8, 8))
    third = data.image(c)
    assert third.size == (fresh.shape[1], fresh.shape[0]) and np.array_equal(np.asarray(third), fresh)


def test_volume_with_an_empty_axis_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((0, 4, 4), np.int16), AFFINE), str(path))
    for read in (decode_ras, load_ras):
        with pytest.raises(SampleDataError) as exc:
            read(path)
        assert str(exc.value) == f"{path}: volume of shape (0, 4, 4) has no voxels (an axis of size 0); fix the NIfTI header"
