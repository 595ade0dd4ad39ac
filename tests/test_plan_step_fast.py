"""The plan step's shortcuts (session 5) give exactly what the general paths give, on hostile data:
prompts asked once per distinct inputs, image references written once per slice, the always-true
sample filter skipped, one ImageRef per slice, task_info answered while samples() walks, the
landmark check once per (dataset, file, shape). Each is compared with the same code with the
shortcut switched off: plan lines, cache keys and messages byte for byte."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from data_fixtures import _info, box, ellipse, make_landmark_ad_dir, save_nifti
from medvision_eval.data.planfile import write_json

LABELS = {"1": "Leber é 肝 \"q\" \\ back", "2": "null", "3": "x\ny\tz", "4": "NaN Infinity", "5": " "}
DESCRIPTION = "synthetic CT\u2028 with ünïcode and \"quotes\""
# (case, shape, zooms, written): unusual spacings; c2/c3 have no image file, so the plan's voxel
# sizes (0.0 and -0.0, NaN) become the samples' spacing (the samples are planned, marked unusable)
CASES = [("c0", (40, 30, 6), (0.3333333, 1e-3, 7.5), True), ("c1", (20, 50, 6), (1e5, 0.07, 1.0), True),
         ("c2", (40, 30, 6), (-0.0, 0.0, 1.0), False), ("c3", (40, 30, 6), (math.nan, 1.0, 1.0), False),
         ("c4", (40, 30, 6), (0.3333333, 1e-3, 7.5), True)]
UNITS = ["mm", "cm", "", "mm", None]


def hostile_root(root: Path) -> Path:
    ds = root / "Datasets" / "KiTS23"
    rng = np.random.default_rng(5)
    for cid, shape, zooms, written in CASES:
        if written:
            save_nifti(ds / "Images" / f"{cid}_0000.nii.gz", rng.normal(0, 1, shape).astype(np.float32), zooms=zooms)

    def case(cid, shape, zooms, profiles):
        return {"case_ID": cid, "image_file": f"Images/{cid}_0000.nii.gz", "image_file_info": _info(shape, zooms),
                "slice_profiles_x": [], "slice_profiles_y": [], "slice_profiles_z": profiles}

    detection = []
    for i, (cid, shape, zooms, _) in enumerate(CASES):
        h, w = shape[1], shape[0]
        slices = (1, 2, 3) if i else (1, 2, 3, "2.0", "x", 99, None)  # c0: odd slice indices too
        profiles = [{"slice_idx": s, "slice_profile": [{"label": lab, "bboxes": [box(1 + lab, 1, h - 2, w - 2 - lab)]}
                                                       for lab in (1, 2, 3, 4, 5)]} for s in slices]
        if not i:
            profiles.append({"slice_idx": 2, "slice_profile": [{"label": 9, "bboxes": [box(1, 1, 20, 20)]}]})  # unmapped
        detection.append(case(cid, shape, zooms, profiles))
    task = {"image_modality": "CT", "image_description": DESCRIPTION, "labels_map": LABELS, "task_ID": "01",
            "test_cases": detection, "train_cases": []}
    write_json(ds / "benchmark_plan_detection_v1.0.0.json.gz", {"dataset_info": {"dataset": "KiTS23"}, "tasks": [task]})

    tl = []
    for (cid, shape, zooms, _), unit in zip(CASES, UNITS):
        entries = []
        for s, (major, minor) in zip((1, 2, 3), ((12.3456, 7.891), (12.3456, 7.891), (1e-9, 6.0e4))):
            profile = ellipse(major, minor)
            for axis in profile:
                if unit is None:
                    del axis["metric_unit"]
                else:
                    axis["metric_unit"] = unit
            entries.append({"slice_idx": s, "slice_profile": [profile]})
        tl.append(case(cid, shape, zooms, entries))
    task = {"image_modality": "CT", "image_description": DESCRIPTION, "labels_map": LABELS, "target_label": 1,
            "task_ID": "01", "test_cases": tl, "train_cases": []}
    write_json(ds / "benchmark_plan_biometry_v1.0.0.json.gz", {"dataset_info": {"dataset": "KiTS23"}, "tasks": [task]})
    return root


class _Geometry:
    """An adapter whose model sees images through a geometry family (stated sizes differ)."""

    def __init__(self, adapter, spec, image_first):
        self._adapter, self._spec, self.image_first = adapter, spec, image_first

    def __getattr__(self, name):
        return getattr(self._adapter, name)

    def perceived_geometry(self, width, height):
        from medvision_eval.models.geometry import perceive

        return perceive(self._spec, width, height)


def _plan(root, protocol, adapter_of, *, shortcuts):
    from medvision_eval import planning
    from medvision_eval.config import RunConfig
    from medvision_eval.planning import build_plan
    from medvision_eval.runner import Runner

    config = RunConfig(tasks=["detection:KiTS23", "tl_size:KiTS23"], model="oracle", data=str(root), protocol=protocol)
    runner = Runner(config)
    from medvision_eval.data import reader

    saved = planning.prompt_inputs, planning._plain_render, planning._keeps_all, reader.FUSED_DETECTION
    if not shortcuts:
        planning.prompt_inputs, planning._plain_render, planning._keeps_all = (lambda task: None, lambda p: None,
                                                                               lambda task: False)
        reader.FUSED_DETECTION = False
    try:
        return build_plan(config, runner.tasks(), runner.data, adapter_of(runner.adapter)), runner.data
    finally:
        planning.prompt_inputs, planning._plain_render, planning._keeps_all, reader.FUSED_DETECTION = saved


@pytest.mark.parametrize("protocol", ["paper", "corrected", "v2"])
@pytest.mark.parametrize("geometry", ["identity", "fixed", "qwen2_vl"])
@pytest.mark.parametrize("image_first", [False, True])
def test_plan_shortcuts_equal_the_general_path(tmp_path, protocol, geometry, image_first):
    from medvision_eval.models.geometry import GeometrySpec
    from medvision_eval.store import strict_dumps

    root = hostile_root(tmp_path / "data")
    spec = GeometrySpec(family=geometry, size=448 if geometry == "fixed" else 0)
    adapter_of = lambda adapter: _Geometry(adapter, spec, image_first)  # noqa: E731
    fast, data = _plan(root, protocol, adapter_of, shortcuts=True)
    slow, slow_data = _plan(root, protocol, adapter_of, shortcuts=False)
    lines = [strict_dumps(e) for e in fast.entries]
    assert len(lines) == 111  # 96 boxes (c1: 15 under 10 px dropped) + 15 ellipses
    assert lines == [strict_dumps(e) for e in slow.entries]
    assert data.problems == slow_data.problems and data._bad == slow_data._bad
    assert any("outside the volume" in p for p in data.problems) and any("slice_idx" in p for p in data.problems)
    for mine, general in zip(fast.tasks, slow.tasks):
        assert list(mine.requests) == list(general.requests)
        for key, request in mine.requests.items():
            assert request.messages == general.requests[key].messages
            assert request.sample == general.requests[key].sample
    # the hostile values reached the prompts, and distinct spacings/units gave distinct prompts
    at = 1 if image_first else 0
    texts = {e.prompt[0]["content"][at]["text"] for e in fast.entries if e.task == "tl_size"}
    assert len(texts) == 4  # c0 = c4; c1 (cm), c2 (0.0 / -0.0), c3 (NaN)
    assert any("-0.00" in t for t in texts) and any("nan" in t for t in texts) and any(" cm" in t for t in texts)
    assert any("肝" in e.prompt[0]["content"][at]["text"] for e in fast.entries)


def test_prompt_inputs_only_for_the_built_in_prompts():
    from medvision_eval.planning import prompt_inputs
    from medvision_eval.protocol import Protocol, get_protocol
    from medvision_eval.tasks.ad_measure import AngleDistanceTask
    from medvision_eval.tasks.detection import DetectionTask
    from medvision_eval.tasks.tl_size import TumorLesionSizeTask

    class OwnPrompt(DetectionTask):
        def prompt(self, sample, geometry=None):
            return sample.id  # depends on more than the description and label

    class OwnUnit(TumorLesionSizeTask):
        @staticmethod
        def unit_of(sample):
            return "inch"

    class OwnProtocol(Protocol):
        pass

    paper = get_protocol("paper")
    assert prompt_inputs(DetectionTask(paper)) is not None and prompt_inputs(TumorLesionSizeTask(paper)) is not None
    assert prompt_inputs(OwnPrompt(paper)) is None and prompt_inputs(OwnUnit(paper)) is None
    assert prompt_inputs(AngleDistanceTask(paper)) is None
    assert prompt_inputs(DetectionTask(OwnProtocol(**paper.model_dump()))) is None


def test_keep_is_asked_when_the_protocol_filters(tmp_path):
    """corrected drops near-zero angles: the planner asks keep() per sample there (and the A/D
    samples of the landmark fixture lose the 0.12 degree one)."""
    from medvision_eval.planning import _keeps_all
    from medvision_eval.protocol import get_protocol
    from medvision_eval.tasks.ad_measure import AngleDistanceTask
    from medvision_eval.tasks.detection import DetectionTask

    assert _keeps_all(DetectionTask(get_protocol("paper")))
    assert not _keeps_all(AngleDistanceTask(get_protocol("corrected")))


def test_landmark_check_once_per_file_gives_what_each_config_gave(tmp_path, monkeypatch):
    """The angle and the distance configs share the landmark check of a case: samples, unusable
    samples, problems and the files noted equal those of a check made per config."""
    from medvision_eval.data import MedVisionData
    from medvision_eval.data.catalogue import BenchmarkConfig
    from medvision_eval.data.families import LandmarkSamples

    root = make_landmark_ad_dir(tmp_path / "data")
    ds = root / "Datasets" / "Ceph-Biometrics-400"
    plan_path = ds / "benchmark_plan_biometry_v1.0.0.json.gz"
    from medvision_eval.data.planfile import read_json

    plan = read_json(plan_path)
    cases = plan["tasks"][0]["test_cases"]
    cases[0]["landmark_file"] = "Landmarks/p0.json.gz"  # landmarks outside the volume: every sample unusable
    cases[1]["landmark_file"] = "Landmarks/missing é.json.gz"  # not found: a warning, samples kept
    write_json(plan_path, plan)
    write_json(ds / "Landmarks" / "p0.json.gz", {"slice_landmarks_x": [{"slice_idx": 7, "landmarks": {
        "P1": [1, 2, 3], "P2": [400, 2, 3], "P3": [-1, 0, 0]}}]})

    def configs():
        return [BenchmarkConfig(name=f"Ceph_{m}", task="ad_measure", dataset="Ceph-Biometrics-400", task_id=1,
                                plane="Sagittal", slice_axis=0, modality="XR", labels={}, metric_type=m)
                for m in ("angle", "distance")]

    def walk():
        data = MedVisionData(root)
        samples = [s for c in configs() for s in data.samples(c)]
        return samples, dict(data._bad), list(data.problems), data.consulted_files()

    once = walk()
    monkeypatch.setattr(LandmarkSamples, "case_problem", lambda self, data, config, case, shape: self._case_problem(
        data, config, case.get("landmark_file"), shape) if case.get("landmark_file") else None)
    each = walk()
    assert once == each
    samples, bad, problems, _ = once
    assert samples and all(s.id in bad for s in samples if "/p0/" in s.id)
    assert sum("lie outside the volume" in p for p in problems) == 1
    assert sum("landmark file not found" in p for p in problems) == 1


def test_task_info_during_and_after_samples(tmp_path, monkeypatch):
    """A family asking task_info while samples() walks gets the walked plan's task; afterwards
    task_info looks the plan up again (a changed planner version is seen)."""
    from medvision_eval.data import MedVisionData
    from medvision_eval.data.errors import DataNotFoundError
    from medvision_eval.data.families import DetectionSamples

    from data_fixtures import make_kits_dir

    root = make_kits_dir(tmp_path / "data")
    data = MedVisionData(root)
    config = data.catalogue.get("KiTS23_BoxSize_Task01_Axial")
    asked = []
    original = DetectionSamples.targets

    def targets(self, data_, config_, facts, entry, height, width):
        asked.append(data_.task_info(config_))
        return original(self, data_, config_, facts, entry, height, width)

    monkeypatch.setattr(DetectionSamples, "targets", targets)
    samples = data.samples(config)
    assert samples and asked and all(info is asked[0] for info in asked)
    assert asked[0] is data.task_info(config)
    monkeypatch.setenv("MEDVISION_PLANNER_VERSION", "9.9.9")
    with pytest.raises(DataNotFoundError, match="9.9.9"):
        data.task_info(config)


def test_one_image_ref_per_slice_and_built_equals_model_construct(demo_root):
    from medvision_eval.data import MedVisionData
    from medvision_eval.schema import ImageRef, Sample, Target, built

    data = MedVisionData(demo_root)
    samples = [s for c in data.catalogue.configs("detection") for s in data.samples(c)]
    by_slice = {}
    for s in samples:
        by_slice.setdefault((s.image.path, s.image.slice_axis, s.image.slice_index), set()).add(id(s.image))
    assert any(len(ids) == 1 for ids in by_slice.values()) and all(len(ids) == 1 for ids in by_slice.values())
    assert max(sum(1 for s in samples if s.image is samples[i].image) for i in range(len(samples))) > 1
    for cls, fields in ((Target, {"values": (0.5, -0.0), "unit": "mm", "names": ("a", "b")}),
                        (ImageRef, {"path": "é/x.nii.gz", "slice_axis": 2, "slice_index": 0})):
        made, constructed = built(cls, dict(fields)), cls.model_construct(**fields)
        assert made == constructed and made.model_dump_json() == constructed.model_dump_json()
        assert made.model_fields_set == constructed.model_fields_set and made.__pydantic_extra__ is None
    sample = samples[0]
    copy = built(Sample, dict(sample.__dict__))
    assert copy == sample and copy.model_dump_json() == sample.model_dump_json()


# -- plan paths resolved in strings equal the pathlib resolution ----------------------------------

def _pathlib_resolve(data, dataset, path):
    """MedVisionData._resolve of a relative path as written before (pathlib)."""
    from pathlib import PurePosixPath

    from medvision_eval.data.errors import SampleDataError

    p = PurePosixPath(str(path).replace("\\", "/"))
    target = data._realpath(str(data.root / "Datasets" / dataset / Path(p)))
    try:
        return Path(target).relative_to(data.root).as_posix()
    except ValueError:
        raise SampleDataError(f"{path}: path escapes the data root {data.root}") from None


def test_string_resolve_equals_pathlib(tmp_path):
    import os

    from medvision_eval.data import MedVisionData
    from medvision_eval.data.errors import SampleDataError

    root = tmp_path / "data"
    ds = root / "Datasets" / "KiTS23"
    (ds / "Images").mkdir(parents=True)
    (ds / "Images" / "é 肝.nii.gz").write_bytes(b"")
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", ds / "escape")  # a folder link leaving the root
    os.symlink(ds / "Images", ds / "inside")  # a folder link staying inside
    os.symlink(ds / "Images" / "é 肝.nii.gz", ds / "Images" / "link.nii.gz")
    data = MedVisionData(root)
    paths = ["Images/é 肝.nii.gz", "Images//é 肝.nii.gz", "./Images/./é 肝.nii.gz", "Images/../Images/x.nii.gz",
             "Images\\x.nii.gz", "Images/", "", ".", "..", "../..", "../../outside/x", "escape/x.nii.gz",
             "inside/x.nii.gz", "Images/link.nii.gz", "inside/link.nii.gz", "missing/dir/x.nii.gz", "a b/ c ",
             "../KiTS23/Images/x", "Images/x.nii.gz/"]
    for dataset in ("KiTS23", "Other", "KiTS23/../KiTS23", "."):
        for path in paths:
            try:
                want = _pathlib_resolve(data, dataset, path)
            except SampleDataError as exc:
                want = ("error", str(exc))
            fresh = MedVisionData(root)
            try:
                got = fresh._resolve(dataset, path)
            except SampleDataError as exc:
                got = ("error", str(exc))
            assert got == want, (dataset, path)


# -- the struct-read NIfTI header equals the NumPy-record one -------------------------------------

def _fields(h):
    return h.path, h.shape, h.zooms, h.orientation, h.affine.tobytes(), [type(v) for v in (*h.shape, *h.zooms)]


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_struct_header_equals_the_numpy_record_read(byteorder):
    """Random and hand-picked hostile values in every field the header read looks at: where the
    struct read answers, it gives the NumPy read's header; everything else it leaves to that read."""
    import random
    import struct as st

    import nibabel as nib

    from medvision_eval.data import volumes

    base = nib.Nifti1Header(endianness=byteorder)
    base.set_data_dtype(np.int16)
    base.set_data_shape((7, 5, 3))
    base.set_sform(np.diag([0.7, 0.8, 2.5, 1.0]), code=1)
    base.set_zooms((0.7, 0.8, 2.5))
    base["vox_offset"] = 352
    template = bytearray(base.binaryblock + b"\0\0\0\0")
    rng = random.Random(7)
    floats = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-8, 1e-13, 3e38, math.inf, -math.inf, math.nan, 352.0, 351.9, 1e30]
    fields = {"dim": (40, "h", 8), "datatype": (70, "h", 1), "bitpix": (72, "h", 1), "pixdim": (76, "f", 8),
              "vox_offset": (108, "f", 1), "slope": (112, "f", 1), "inter": (116, "f", 1), "sform": (254, "h", 1),
              "srow": (280, "f", 12)}
    answered = refused = 0
    path = Path("/x/é.nii.gz")
    for trial in range(3000):
        raw = bytearray(template)
        for _ in range(rng.randint(0, 3)):
            offset, kind, count = fields[rng.choice(list(fields))]
            at = rng.randrange(count)
            if kind == "h":
                value = rng.choice([-1, 0, 1, 2, 3, 4, 5, 7, 8, 16, 64, 256, 512, 768, 1024, 32767])
            else:
                value = rng.choice(floats + [rng.uniform(-5, 5)])
            st.pack_into(byteorder + kind, raw, offset + at * st.calcsize(kind), value)
        if trial % 3 == 0:  # an oblique or nearly singular sform
            rows = [rng.choice([0.0, 1e-4, 0.3, -0.7, 1.0]) for _ in range(12)]
            st.pack_into(byteorder + "12f", raw, 280, *rows)
        raw = bytes(raw)
        try:
            fast = volumes._struct_nifti1(raw, path)
        except Exception as exc:  # noqa: BLE001 - the caller turns this into the general read
            fast = exc
        try:
            slow = volumes._plain_nifti1(raw, path)
        except Exception as exc:  # noqa: BLE001
            slow = exc
        if fast is None:
            refused += 1
            continue
        answered += 1
        if isinstance(fast, Exception):  # the same orientation error from the same shape and affine
            assert type(slow) is type(fast) and str(slow) == str(fast)
            continue
        assert not isinstance(slow, Exception) and slow is not None, raw
        assert _fields(fast) == _fields(slow)
    assert answered > 300 and refused > 300


def test_fused_detection_leaves_a_label_of_another_type_to_the_general_loop(tmp_path):
    """A labels_map value that is not a name: the general loop refuses it with one error naming
    the plan file, the sample and the field, with the fused loop on or off."""
    from medvision_eval.data import MedVisionData, reader
    from medvision_eval.data.errors import DataNotFoundError
    from medvision_eval.data.planfile import read_json

    root = hostile_root(tmp_path / "data")
    plan_path = root / "Datasets" / "KiTS23" / "benchmark_plan_detection_v1.0.0.json.gz"
    plan = read_json(plan_path)
    plan["tasks"][0]["labels_map"]["2"] = 7
    write_json(plan_path, plan)
    messages = []
    for fused in (True, False):
        saved = reader.FUSED_DETECTION
        reader.FUSED_DETECTION = fused
        try:
            data = MedVisionData(root)
            with pytest.raises(DataNotFoundError) as caught:
                data.samples(data.catalogue.get("KiTS23_BoxSize_Task01_Axial"))
            messages.append((str(caught.value), list(data.problems), dict(data._bad)))
        finally:
            reader.FUSED_DETECTION = saved
    assert messages[0] == messages[1]
    assert "benchmark_plan_detection" in messages[0][0] and "label" in messages[0][0] and "/c0/A1/2" in messages[0][0]
