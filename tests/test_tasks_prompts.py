"""Prompt snapshots: every variant (paper/corrected x detection, T/L, angle/distance named and
unnamed) is pinned byte for byte in tests/snapshots/. Regenerate deliberately with
``MEDVISION_UPDATE_SNAPSHOTS=1 pytest tests/test_tasks_prompts.py``; wording changes must also
change the task fingerprint (tested below)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medvision_eval.models.base import PerceivedGeometry
from medvision_eval.protocol import get_protocol
from medvision_eval.schema import ImagePart, ImageRef, Sample, Target, TextPart
from medvision_eval.tasks import prompts
from medvision_eval.tasks.ad_measure import AngleDistanceTask
from medvision_eval.tasks.detection import DetectionTask
from medvision_eval.tasks.tl_size import TumorLesionSizeTask

SNAPSHOTS = Path(__file__).parent / "snapshots"
# A padding model: v1 stated 448 x 448, the canvas is 448 x 448, the image content 361 x 448.
GEOMETRY = PerceivedGeometry(original=(1935, 2400), canvas=(448, 448), content=(361, 448), v1=(448, 448))


def sample(task: str, target, unit: str, label: str = "kidney tumor", **extra) -> Sample:
    return Sample(
        id=f"{task}-1", task=task, config="Cfg", dataset="Ceph-Biometrics-400", index=0,
        image=ImageRef(path="Images/case_001.nii.gz", slice_axis=0, slice_index=0),
        image_size=(1935, 2400), pixel_spacing=(0.1, 0.1), label=label, modality="XR", plane="S",
        image_description="cephalogram (head and neck X-ray)",
        target=Target(values=target, unit=unit, names=tuple("v" * len(target))), extra=extra,
    )


VARIANTS = {
    "detection": (DetectionTask, sample("detection", (0.1, 0.2, 0.3, 0.4), "relative")),
    "tl_size": (TumorLesionSizeTask, sample("tl_size", (20.0, 10.0), "mm")),
    "angle_named": (AngleDistanceTask, sample("ad_measure", (80.0,), "degree", label="SNA",
                                              metric_type="angle", metric_name="SNA",
                                              landmarks=["sella", "nasion", "nasion", "subspinale"])),
    "angle_unnamed": (AngleDistanceTask, sample("ad_measure", (2.0,), "degree", label="A-L_2_5-L_2_6",
                                                metric_type="angle", metric_name="",
                                                landmarks=["nasion", "subspinale", "nasion", "supramentale"])),
    "distance_named": (AngleDistanceTask, sample("ad_measure", (60.0,), "mm", label="D1", metric_type="distance",
                                                 metric_name="length of corpus callosum",
                                                 landmarks=["genu", "splenium"])),
    "distance_unnamed": (AngleDistanceTask, sample("ad_measure", (60.0,), "mm", label="D2", metric_type="distance",
                                                   metric_name="", landmarks=["sella", "nasion"])),
}
CASES = [(p, v) for p in ("paper", "corrected") for v in VARIANTS]


@pytest.mark.parametrize(("protocol", "variant"), CASES)
def test_prompt_snapshot(protocol, variant):
    cls, s = VARIANTS[variant]
    task = cls(get_protocol(protocol))
    (message,) = task.messages(s, GEOMETRY)
    assert message.role == "user"
    text_part, image_part = message.content  # text before the image, as v1's vLLM wrappers
    assert isinstance(text_part, TextPart) and isinstance(image_part, ImagePart)
    assert image_part.ref == f"Images/case_001.nii.gz#0:0|{task.protocol.render}"
    path = SNAPSHOTS / f"{protocol}__{variant}.txt"
    if os.environ.get("MEDVISION_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text_part.text, encoding="utf-8")
    assert text_part.text == path.read_text(encoding="utf-8")


def test_pixel_size_follows_protocol():
    cls, s = VARIANTS["tl_size"]
    paper = cls(get_protocol("paper")).messages(s, GEOMETRY)[0].text()
    fixed = cls(get_protocol("corrected")).messages(s, GEOMETRY)[0].text()
    # paper: 0.1 * 1935/448 and 0.1 * 2400/448 (v1's stated size); corrected: content 361 x 448
    assert "0.432 mm (width) x 0.536 mm (height)" in paper and "image size" not in paper
    assert "0.536 mm (width) x 0.536 mm (height)" in fixed
    assert "The image size is 448 pixels (width) x 448 pixels (height)." in fixed
    assert "<answer>" in fixed and "<answer>" not in paper


def test_detection_states_no_size():
    cls, s = VARIANTS["detection"]
    for name in ("paper", "corrected"):
        text = cls(get_protocol(name)).messages(s, GEOMETRY)[0].text()
        assert "pixel" not in text and "image size" not in text


def test_fingerprint_changes_with_wording_and_protocol(monkeypatch):
    task = DetectionTask(get_protocol("paper"))
    before = task.fingerprint()
    assert before != DetectionTask(get_protocol("corrected")).fingerprint()
    assert before != TumorLesionSizeTask(get_protocol("paper")).fingerprint()
    monkeypatch.setitem(prompts.ALL_TEMPLATES, "V1_FORMAT_BOX", prompts.V1_FORMAT_BOX + " ")
    assert task.fingerprint() != before


def test_answer_spec_renders_what_the_parser_accepts():
    for protocol in ("paper", "corrected"):
        for cls, s in VARIANTS.values():
            task = cls(get_protocol(protocol))
            spec = task.answer_spec(s)
            assert spec.k == task.k and spec.low < spec.high
            values = [spec.low + (spec.high - spec.low) * (i + 1) / (spec.k + 1) for i in range(spec.k)]
            pred = task.parse(spec.render(values))
            assert pred.status.value == "ok"
            assert pred.values == pytest.approx(values, rel=1e-3)
