"""The planner's direct prompt dump and hash equal pydantic's dump and ``stable_hash`` exactly
(plan.jsonl and every cache key stay byte-identical), for any text."""

from __future__ import annotations

import pytest

from medvision_eval.planning import PlannedRequest, prompt_of
from medvision_eval.schema import ImagePart, Message, TextPart, stable_hash

TEXTS = ["plain", "quotes \" and \\ back", "new\nline\ttab\x00nul", "unicode é ü 字 °C ×", "emoji 😀", "lone \ud800 surrogate",
         "", "<answer>1.0, 2.0</answer>"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("image_first", [False, True])
def test_prompt_of_equals_model_dump_and_stable_hash(text, image_first):
    parts = [TextPart(text=text), ImagePart(ref=f"Datasets/x/{text}.nii.gz|2|7|minmax")]
    messages = [Message(role="system", content=[TextPart(text="sys " + text)]),
                Message(role="user", content=parts[::-1] if image_first else parts)]
    prompt, digest = prompt_of(messages)
    expected = [m.model_dump(mode="json") for m in messages]
    assert prompt == expected and list(map(list, (d.keys() for d in prompt))) == [list(d.keys()) for d in expected]
    assert digest == stable_hash(expected)


def test_prompt_of_other_part_types_go_through_pydantic():
    class Captioned(TextPart):
        caption: str = "c"

    messages = [Message(role="user", content=[TextPart(text="a")])]
    messages[0].content.append(Captioned(text="b"))
    prompt, digest = prompt_of(messages)
    assert prompt == [m.model_dump(mode="json") for m in messages] and digest == stable_hash(prompt)


def test_planned_request_builds_its_answer_spec_once_when_asked():
    calls = []

    class Task:
        def answer_spec(self, sample):
            calls.append(sample)
            return "spec"

    request = PlannedRequest("sample", [], task=Task())
    assert calls == []
    assert request.answer == "spec" and request.answer == "spec" and calls == ["sample"]
    with pytest.raises(TypeError):
        PlannedRequest("sample", [])


# -- the planner's shortcuts equal the general paths they skip ------------------------------------

def _general_header(path):
    from medvision_eval.data import volumes

    return volumes._header_of(volumes._open(path), path)  # nib.load, as before the one-read path


def _header_facts(h):
    return (h.path, h.shape, h.zooms, h.orientation, h.affine.dtype, h.affine.tolist(),
            [type(v) for v in (*h.shape, *h.zooms)])


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("form", ["sform", "qform", "none", "oblique", "flipped", "4d", "big-endian"])
def test_one_read_header_equals_nibabel_load(tmp_path, gz, form):
    import nibabel as nib
    import numpy as np

    from medvision_eval.data import volumes

    data = np.zeros((6, 5, 4, 1) if form == "4d" else (6, 5, 4), np.int16)
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    if form == "oblique":
        c, s = np.cos(0.3), np.sin(0.3)
        affine[:3, :3] = affine[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    if form == "flipped":
        affine = np.diag([-0.7, 0.8, -2.5, 1.0])
        affine[:3, 3] = [10, -20, 30]
    header = nib.Nifti1Header(endianness=">") if form == "big-endian" else None
    img = nib.Nifti1Image(data, affine, header)
    if form == "qform":
        img.set_sform(None, code=0)
        img.set_qform(affine, code=1)
    if form == "none":
        img.set_sform(None, code=0)
        img.set_qform(None, code=0)
    path = tmp_path / ("v.nii.gz" if gz else "v.nii")
    nib.save(img, path)
    fast = volumes._single_open_header(path)
    assert fast is not None  # the one-read path took it
    assert _header_facts(fast) == _header_facts(_general_header(path)) == _header_facts(volumes.read_header(path))


@pytest.mark.parametrize("problem", ["zero-axis", "nan-spacing", "negative-spacing", "zero-affine", "truncated", "not-nifti"])
def test_one_read_header_errors_are_the_general_paths(tmp_path, problem):
    import nibabel as nib
    import numpy as np

    from medvision_eval.data import volumes
    from medvision_eval.data.errors import SampleDataError

    path = tmp_path / "bad.nii.gz"
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    nib.save(img, path)
    raw = bytearray(volumes._leading_bytes(path, 352))
    header = np.ndarray((), dtype=nib.nifti1.header_dtype, buffer=raw)
    if problem == "zero-axis":
        header["dim"][3] = 0
    elif problem == "nan-spacing":
        header["pixdim"][2] = np.nan
    elif problem == "negative-spacing":
        header["pixdim"][1] = -1.0
    elif problem == "zero-affine":
        header["sform_code"], header["qform_code"] = 0, 0
        header["pixdim"][1:4] = 0
    import gzip

    body = gzip.decompress(path.read_bytes())[352:]
    blob = bytes(raw) + body
    if problem == "truncated":
        path.write_bytes(gzip.compress(blob)[:30])
    elif problem == "not-nifti":
        path.write_bytes(gzip.compress(b"hello, not a volume" * 40))
    else:
        path.write_bytes(gzip.compress(blob))
    with pytest.raises(SampleDataError) as general:
        _general_header(path)
    with pytest.raises(SampleDataError) as planned:
        volumes.read_header(path)
    assert str(planned.value) == str(general.value) and str(path) in str(planned.value)


def test_read_json_equals_json_including_what_orjson_reads_differently(tmp_path):
    import gzip
    import json

    from medvision_eval.data.planfile import read_json

    docs = ['{"a": [1, 2.5, -0.0, 1e-7, 0.1], "b": {"c": "\\u00e9"}, "a": 3}',
            '{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',
            '{"nan": NaN, "inf": Infinity}', '{"lone": "\\ud800"}', '[1e400]']
    for i, text in enumerate(docs):
        for gz in (False, True):
            path = tmp_path / (f"d{i}.json.gz" if gz else f"d{i}.json")
            path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
            got, want = read_json(path), json.loads(text)
            assert json.dumps(got) == json.dumps(want) and repr(got) == repr(want)


@pytest.mark.parametrize("image_first", [False, True])
def test_lazy_messages_equal_the_tasks_arranged_messages(demo_root, image_first):
    from medvision_eval.data import MedVisionData
    from medvision_eval.planning import prompt_of, user_message
    from medvision_eval.protocol import get_protocol
    from medvision_eval.schema import PerceivedGeometry, arrange_messages
    from medvision_eval.tasks.detection import DetectionTask

    data = MedVisionData(demo_root)
    task = DetectionTask(get_protocol("paper"))
    sample = data.samples(task.configs(data.catalogue, None)[0])[0]
    geometry = PerceivedGeometry.identity(*sample.image_size)
    expected = arrange_messages(task.messages(sample, geometry), image_first)
    made = user_message(task.prompt(sample, geometry), task.protocol.image_ref(sample), image_first)
    assert made == expected and [m.model_dump() for m in made] == [m.model_dump() for m in expected]
    request = PlannedRequest(sample, task=task, parts=(task.prompt(sample, geometry), task.protocol.image_ref(sample),
                                                       image_first))
    assert request.messages == expected and request.messages is request.messages  # built once
    with pytest.raises(TypeError):
        PlannedRequest(sample, task=task)
    assert prompt_of(made) == prompt_of(expected)


def test_built_samples_equal_validated_ones(demo_root):
    from medvision_eval.data import MedVisionData
    from medvision_eval.schema import Sample

    data = MedVisionData(demo_root)
    samples = [s for family in ("detection", "tl_size", "ad_measure") for c in data.catalogue.configs(family)
               for s in data.samples(c)]
    assert len(samples) > 100
    for sample in samples:
        if True:
            validated = Sample.model_validate(sample.model_dump())
            assert sample == validated and sample.model_dump_json() == validated.model_dump_json()
            assert sample.model_fields_set == validated.model_fields_set
            assert type(sample.extra) is dict and sample.extra is not validated.extra


def test_gc_paused_restores_the_collectors_state():
    import gc

    from medvision_eval.planning import gc_paused

    was = gc.isenabled()
    try:
        for start in (True, False):
            (gc.enable if start else gc.disable)()
            with gc_paused():
                assert not gc.isenabled()
                with gc_paused():  # nested (the runner pauses around build_plan, which pauses too)
                    assert not gc.isenabled()
                assert not gc.isenabled()
            assert gc.isenabled() is start and gc.get_freeze_count() == 0
            with pytest.raises(RuntimeError), gc_paused():
                raise RuntimeError("planning failed")
            assert gc.isenabled() is start
    finally:
        (gc.enable if was else gc.disable)()
