"""The predict step's data path: images are v1's pixels whatever the decode layout, a volume is
decoded once and released when its samples are done, a slice shared by samples is rendered once,
and pixels are dropped once answered."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medvision_eval.config import RunConfig
from medvision_eval.data import MedVisionData
from medvision_eval.data.render import CT_WINDOWS, anatomy_group
from medvision_eval.data.volumes import decode_ras
from medvision_eval.protocol import get_protocol
from medvision_eval.runner import Runner
from medvision_eval.schema import ImagePart

TASKS = ["detection", "tl_size", "ad_measure"]


def v1_pixels(root, sample, render: str) -> np.ndarray:
    """The official route: ``get_fdata()`` (float64), RAS+ reorientation, ``astype('float32')``,
    a C-ordered copy, the untransposed slice, then the renderer's 8-bit scaling."""
    img = nib.load(str(root / sample.image.path))
    vol = nib.orientations.apply_orientation(img.get_fdata(), nib.orientations.io_orientation(img.affine))
    vol = np.ascontiguousarray(vol.astype("float32"))
    sl = np.take(vol, sample.image.slice_index, axis=sample.image.slice_axis)
    if render == "minmax":
        lo, hi = sl.min(), sl.max()
        return ((sl - lo) / (hi - lo) * 255).astype(np.uint8) if hi > lo else np.zeros(sl.shape, np.uint8)
    if sample.modality == "CT":
        width, level = CT_WINDOWS[anatomy_group(sample.label)]
        lo, hi = level - width / 2.0, level + width / 2.0
        return np.round((np.clip(sl, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)
    lo, hi = np.percentile(sl[np.isfinite(sl)], [0.5, 99.5])
    return np.round((np.clip(sl, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)


def demo_samples(data: MedVisionData) -> list:
    out = []
    for task in TASKS:
        for config in data.catalogue.configs(task):
            try:
                out += data.samples(config)
            except Exception:  # configs of datasets the demo does not carry
                continue
    return out


@pytest.mark.parametrize("render", ["minmax", "window"])
def test_images_are_v1_pixels_on_every_axis_and_orientation(demo_root, render):
    """Axial, coronal and sagittal slices of LPS, PIR and oblique LAS volumes (int16 CT, float
    MRI, X-ray) decoded in the file's layout render exactly the official float32 pixels."""
    data = MedVisionData(demo_root)
    samples = demo_samples(data)
    assert {s.image.slice_axis for s in samples} == {0, 1, 2} and {s.modality for s in samples} >= {"CT", "MR"}
    for s in samples:
        image = data.image(s, render)
        assert image.mode == "RGB" and image.size == tuple(s.image_size)
        rgb = np.asarray(image)
        expected = v1_pixels(demo_root, s, render)
        assert np.array_equal(rgb[..., 0], expected), s.id
        assert np.array_equal(rgb[..., 1], expected) and np.array_equal(rgb[..., 2], expected)


def test_resized_slices_are_v1_zoom_of_the_float32_slice(kits_root):
    from scipy.ndimage import zoom

    data = MedVisionData(kits_root)
    for s in data.samples("KiTS23_BoxSize_Task01_Axial-336x336"):
        img = np.asarray(data.image(s))[:, :, 0]
        vol = np.ascontiguousarray(nib.load(str(kits_root / s.image.path)).get_fdata().astype("float32"))
        sl = vol[:, :, s.image.slice_index]
        z = zoom(sl, (336 / sl.shape[0], 336 / sl.shape[1]), order=1)
        assert np.array_equal(img, ((z - z.min()) / (z.max() - z.min()) * 255).astype(np.uint8))


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32, np.float64])
def test_cached_volume_is_exact_and_read_only(tmp_path, dtype):
    """The cache keeps 8/16-bit voxels as stored (half the memory of float32) and everything
    else as v1's float32; either way ``astype(float32)`` is v1's volume, and nothing can write
    into the cache through a slice."""
    data = np.random.default_rng(1).normal(0, 1000, (12, 9, 5)).astype(dtype)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))
    volume, _ = decode_ras(path)
    assert volume.dtype == (dtype if dtype in (np.int16, np.uint8, np.float32) else np.float32)
    loaded = nib.load(str(path))
    v1 = nib.orientations.apply_orientation(loaded.get_fdata(), nib.orientations.io_orientation(loaded.affine))
    assert np.array_equal(volume.astype(np.float32), v1.astype("float32"))
    with pytest.raises(ValueError):
        volume[:, :, 0][0, 0] = 1


def test_samples_of_one_slice_share_one_rendered_image(demo_root, monkeypatch):
    import medvision_eval.data.render as render_mod

    data = MedVisionData(demo_root)
    samples = data.samples("DemoAbdomenCT_BoxSize_Task01_Axial")
    same = [(a, b) for a, b in zip(samples, samples[1:])
            if (a.image.path, a.image.slice_index) == (b.image.path, b.image.slice_index) and a.label != b.label]
    assert same, "the demo has slices with several labels"
    a, b = same[0]
    renders: list[int] = []
    real = render_mod.to_uint8
    monkeypatch.setattr(render_mod, "to_uint8", lambda *args, **kw: renders.append(1) or real(*args, **kw))
    image_a, image_b = data.image(a), data.image(b)
    assert len(renders) == 1  # v1 min-max does not depend on the label: rendered once
    assert image_a is not image_b and np.array_equal(np.asarray(image_a), np.asarray(image_b))  # each its own copy
    assert data.decodes == 1
    monkeypatch.setattr(render_mod, "to_uint8", real)
    # the CT window depends on the label's anatomy group: rendered per label
    liver = a.model_copy(update={"label": "liver"})
    lung = a.model_copy(update={"label": "lung", "id": a.id + "-lung"})
    win_liver, win_lung = data.image(liver, "window"), data.image(lung, "window")
    assert win_liver is not win_lung and not np.array_equal(np.asarray(win_liver), np.asarray(win_lung))
    other = next(s for s in samples if s.image.slice_index != a.image.slice_index)
    assert data.image(other) is not data.image(a)


class Recording:
    """Wraps a MedVisionData, recording the order of renders, prefetches and releases."""

    def __init__(self, data: MedVisionData) -> None:
        self.data = data
        self.events: list[tuple[str, str]] = []
        self.held: list[int] = []  # decoded bytes held by the cache at each render

    def __getattr__(self, name):
        return getattr(self.data, name)

    def image(self, sample, render="minmax"):
        image = self.data.image(sample, render)
        self.events.append(("render", sample.image.path))
        self.held.append(self.data._cache.nbytes)
        return image

    def prefetch(self, sample):
        self.events.append(("prefetch", sample.image.path))
        self.data.prefetch(sample)

    def release(self, sample):
        self.events.append(("release", sample.image.path))
        self.data.release(sample)


def test_executor_decodes_each_volume_once_and_releases_it_when_done(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVISION_VOLUME_CACHE_MB", "4096")  # a bound that would keep every volume
    data = Recording(MedVisionData(demo_root))
    runner = Runner(RunConfig(tasks=TASKS, model="oracle", data=str(demo_root), output=str(tmp_path / "run"),
                              batch_size=4), data=data)
    summary = runner.execute()
    assert summary.sent == summary.planned > 100 and summary.errors == 0
    renders = [p for kind, p in data.events if kind == "render"]
    volumes = list(dict.fromkeys(renders))
    assert data.decodes == len(volumes) > 5  # one decode per volume across every task and config
    assert renders == sorted(renders)  # visited volume by volume
    released = [p for kind, p in data.events if kind == "release"]
    assert released == volumes  # each released once, in visiting order
    for volume in volumes:
        last_render = max(i for i, e in enumerate(data.events) if e == ("render", volume))
        assert data.events.index(("release", volume)) == last_render + 1  # right after its last sample
    prefetched = [p for kind, p in data.events if kind == "prefetch"]
    assert prefetched == volumes[1:]  # each next volume, while the previous one is worked on
    for volume in volumes[1:]:
        assert data.events.index(("prefetch", volume)) < data.events.index(("render", volume))
    # at every render the cache holds one volume only, however large its bound
    largest = max(decode_ras(demo_root / v)[0].nbytes for v in volumes)
    assert max(data.held) <= largest and data.data._cache.nbytes == 0


def test_pixels_are_dropped_once_answered(demo_root, tmp_path):
    seen: list[list[ImagePart]] = []

    class Keeper:
        """Records the image parts of every request; answers nothing useful."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def generate(self, requests):
            parts = [p for r in requests for m in r.messages for p in m.content if isinstance(p, ImagePart)]
            assert all(isinstance(p.image, Image.Image) for p in parts)  # attached while asked
            seen.append(parts)
            return self.inner.generate(requests)

    runner = Runner(RunConfig(tasks=TASKS, model="oracle", data=str(demo_root), output=str(tmp_path / "run"),
                              batch_size=8))
    runner._adapter = Keeper(runner.adapter)
    summary = runner.execute()
    assert sum(len(p) for p in seen) == summary.planned == summary.sent
    assert all(p.image is None for parts in seen for p in parts)


def test_paper_and_corrected_renders_match_the_protocol(demo_root):
    """The protocol's renderer picks minmax (paper) or window (corrected) through the same cache."""
    data = MedVisionData(demo_root)
    s = data.samples("DemoAbdomenCT_BoxSize_Task01_Axial")[0]
    paper = np.asarray(get_protocol("paper").render_image(data, s))[..., 0]
    corrected = np.asarray(get_protocol("corrected").render_image(data, s))[..., 0]
    assert np.array_equal(paper, v1_pixels(demo_root, s, "minmax"))
    assert np.array_equal(corrected, v1_pixels(demo_root, s, "window"))
