"""The volume cache: bounded in bytes, prefetch on a worker thread, one decode per volume."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medvision_eval.data import SampleDataError
from medvision_eval.data.volumes import CACHE_BYTES_ENV, VolumeCache, cache_bytes_from_env


def _volumes(tmp_path, n: int, shape=(20, 10, 5)) -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / f"v{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.full(shape, i, np.int16), np.eye(4)), str(path))
        paths.append(str(path))
    return paths


def test_cache_is_bounded_in_bytes_not_count(tmp_path):
    paths = _volumes(tmp_path, 4)
    one = 20 * 10 * 5 * 2  # int16 voxels of one volume, cached as stored (float32 holds them exactly)
    cache = VolumeCache(max_bytes=2 * one)
    for p in paths:
        cache.get(p)
    assert cache.nbytes == 2 * one and cache.peak_bytes == 2 * one
    assert cache.decodes == 4
    cache.get(paths[3])  # still cached
    cache.get(paths[2])
    assert cache.decodes == 4
    cache.get(paths[0])  # evicted earlier: decoded again
    assert cache.decodes == 5 and cache.nbytes == 2 * one


def test_cache_keeps_the_volume_in_use_even_above_the_bound(tmp_path):
    paths = _volumes(tmp_path, 2)
    cache = VolumeCache(max_bytes=0)
    volume, _ = cache.get(paths[0])
    assert float(volume[0, 0, 0]) == 0.0 and cache.nbytes == volume.nbytes
    cache.get(paths[1])
    assert cache.nbytes == volume.nbytes  # the first was evicted
    cache.get(paths[1])
    assert cache.decodes == 2


def test_prefetch_decodes_once_on_a_worker_thread(tmp_path):
    paths = _volumes(tmp_path, 2)
    cache = VolumeCache(max_bytes=1 << 20)
    cache.prefetch(paths[1])
    cache.prefetch(paths[1])  # already under way: no second decode
    volume, _ = cache.get(paths[1])
    assert float(volume[3, 3, 3]) == 1.0
    cache.prefetch(paths[1])  # cached: nothing to do
    cache.get(paths[1])
    assert cache.decodes == 1
    cache.close()


def test_prefetch_error_surfaces_in_get_naming_the_file(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti file")
    cache = VolumeCache(max_bytes=1 << 20)
    cache.prefetch(str(bad))
    with pytest.raises(SampleDataError, match="bad.nii.gz"):
        cache.get(str(bad))
    cache.close()


def test_cache_size_from_environment(monkeypatch):
    monkeypatch.setenv(CACHE_BYTES_ENV, "256")
    assert cache_bytes_from_env() == 256 << 20
    monkeypatch.setenv(CACHE_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match=CACHE_BYTES_ENV):
        cache_bytes_from_env()
    monkeypatch.delenv(CACHE_BYTES_ENV)
    assert cache_bytes_from_env(123) == 123


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.uint16, np.float32, np.int32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.5])
def test_decode_equals_v1_get_fdata_as_float32(tmp_path, dtype, slope):
    """Direct float32 decoding (no float64 copy) gives exactly v1's ``get_fdata().astype('float32')``."""
    from medvision_eval.data.volumes import load_ras

    data = np.random.default_rng(0).normal(0, 1000, (20, 30, 7)).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([-1.0, 1.0, 1.0, 1.0]))  # LAS on disk: reoriented on load
    if slope:
        img.header.set_slope_inter(slope, -1024)
    path = tmp_path / "v.nii.gz"
    nib.save(img, str(path))
    volume, _ = load_ras(path)
    loaded = nib.load(str(path))
    v1 = nib.orientations.apply_orientation(loaded.get_fdata(), nib.orientations.io_orientation(loaded.affine))
    assert volume.dtype == np.float32 and np.array_equal(volume, v1.astype("float32"))


def test_drop_forgets_a_volume_and_its_pending_decode(tmp_path):
    paths = _volumes(tmp_path, 3)
    cache = VolumeCache(max_bytes=1 << 20)
    cache.get(paths[0])
    cache.get(paths[1])
    cache.drop(paths[0])
    assert cache.nbytes == 20 * 10 * 5 * 2  # only the second volume is held
    cache.get(paths[1])
    assert cache.decodes == 2
    cache.get(paths[0])  # dropped: decoded again, and counted
    assert cache.decodes == 3
    cache.prefetch(paths[2])
    cache.drop(paths[2])  # a decode under way is forgotten too
    volume, _ = cache.get(paths[2])
    assert float(volume[0, 0, 0]) == 2.0
    cache.drop("never/seen.nii.gz")  # nothing to forget: no error
    cache.close()


def _gzip_members(raw: bytes, cuts: list[int]) -> bytes:
    import gzip

    edges = [0, *cuts, len(raw)]
    return b"".join(gzip.compress(raw[a:b]) for a, b in zip(edges, edges[1:]))


@pytest.mark.parametrize("dtype", ["<i2", ">i2", "<f4", ">f8", "u1", "<i4"])
def test_inflated_voxels_are_exactly_nibabels(tmp_path, dtype):
    """The straight-into-the-array inflater gives nibabel's raw array: bytes, dtype (byte order
    included), shape and layout, for single- and multi-member gzip files and a trailing 1 axis."""
    import gzip

    from medvision_eval.data.volumes import _inflated_voxels, decode_ras

    rng = np.random.default_rng(3)
    for shape in [(37, 23, 11), (16, 9, 7, 1)]:
        data = (rng.normal(0, 300, shape)).astype(dtype)
        img = nib.Nifti1Image(data, np.diag([-0.7, 0.7, 2.5, 1.0]))
        img.set_data_dtype(np.dtype(dtype))
        plain = tmp_path / "v.nii"
        nib.save(img, str(plain))
        raw = plain.read_bytes()
        for name, payload in [("one.nii.gz", gzip.compress(raw)), ("multi.nii.gz", _gzip_members(raw, [100, 5000]))]:
            path = tmp_path / name
            path.write_bytes(payload)
            expected = np.asanyarray(nib.load(str(path)).dataobj)
            got = _inflated_voxels(nib.load(str(path)), path)
            assert got is not None and got.dtype == expected.dtype and got.shape == expected.shape
            assert got.flags.f_contiguous == expected.flags.f_contiguous and np.array_equal(got, expected)
            volume, _ = decode_ras(path)
            assert volume.shape == shape[:3]


def test_inflater_leaves_scaled_and_uncompressed_volumes_to_nibabel(tmp_path):
    from medvision_eval.data.volumes import _inflated_voxels

    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(5, 4, 3), np.eye(4))
    img.header.set_slope_inter(2.0, -1024)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    assert _inflated_voxels(nib.load(str(tmp_path / "scaled.nii.gz")), tmp_path / "scaled.nii.gz") is None
    nib.save(nib.Nifti1Image(np.ones((5, 4, 3), np.int16), np.eye(4)), str(tmp_path / "plain.nii"))
    assert _inflated_voxels(nib.load(str(tmp_path / "plain.nii")), tmp_path / "plain.nii") is None


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_gzip_is_one_error_naming_the_file(tmp_path, keep):
    from medvision_eval.data.volumes import decode_ras

    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(40, 30, 20)).astype(np.float32), np.eye(4)),
             str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(SampleDataError, match=r"cut\.nii\.gz: cannot decode voxel data \(truncated or corrupt gzip"):
        decode_ras(path)


def test_a_failed_decode_is_read_once_until_the_volume_is_dropped(tmp_path, monkeypatch):
    from medvision_eval.data import volumes

    broken = tmp_path / "broken.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(40, 30, 20)).astype(np.float32), np.eye(4)),
             str(broken))
    raw = broken.read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])
    calls: list[str] = []
    real = volumes.decode_ras
    monkeypatch.setattr(volumes, "decode_ras", lambda path: (calls.append(str(path)), real(path))[1])
    cache = VolumeCache()
    messages = []
    for _ in range(5):  # five samples on the broken volume: one read, five identical errors
        with pytest.raises(SampleDataError) as exc:
            cache.get(broken)
        messages.append(str(exc.value))
    assert calls == [str(broken)]
    assert len(set(messages)) == 1 and messages[0].startswith(f"{broken}: cannot decode voxel data")
    cache.prefetch(broken)  # a known failure is not decoded again on the worker thread either
    with pytest.raises(SampleDataError):
        cache.get(broken)
    assert calls == [str(broken)]
    cache.drop(broken)  # done with it: a later visit reads the file again (it may have been fixed)
    broken.write_bytes(raw)
    volume, _ = cache.get(broken)
    assert calls == [str(broken), str(broken)] and volume.shape == (40, 30, 20)


def test_a_failed_prefetch_is_remembered_too(tmp_path, monkeypatch):
    from medvision_eval.data import volumes

    broken = tmp_path / "missing.nii.gz"
    calls: list[str] = []
    real = volumes.decode_ras
    monkeypatch.setattr(volumes, "decode_ras", lambda path: (calls.append(str(path)), real(path))[1])
    cache = VolumeCache()
    cache.prefetch(broken)
    for _ in range(3):
        with pytest.raises(SampleDataError, match="missing.nii.gz: file not found"):
            cache.get(broken)
    assert calls == [str(broken)]
    cache.close()
