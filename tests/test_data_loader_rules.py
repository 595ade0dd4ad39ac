"""The sample lists of the official HF loader (``MedVision.py::_generate_examples``), pinned on hand-built plans.

Rules (see docs/data.md, "Provenance of the sample filters"): cases in plan order, then the entries of
``slice_profiles_{x,y,z}`` in plan order, then each entry's profiles in plan order; Box-Size drops
more than one box or a box under 10 px; Tumor-Lesion-Size drops ``n_total_clusters > 1`` (v1.1.0+
plans) or more than one measured ellipse (v1.0.0); A/D configs ``_Distance``/``_Angle`` keep one
metric type, the others keep all; T/L and A/D values are float16 (HF features);
``MedVision_DISABLE_SAMPLE_FILTERING=true`` turns the per-sample filters off.
"""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import add_kits_tl_plan, make_landmark_ad_dir

from medvision_eval.data import MedVisionData, SampleDataError

KITS = "KiTS23_BoxSize_Task01_Axial"
KITS_TL = "KiTS23_TumorLesionSize_Task01_Axial"
CEPH = "Ceph-Biometrics-400_BiometricsFromLandmarks_{}_Task01_Sagittal"


def f16(x: float) -> float:
    return float(np.float16(x))


@pytest.fixture(autouse=True)
def _no_filter_override(monkeypatch):
    for name in ("MedVision_DISABLE_SAMPLE_FILTERING", "MEDVISION_DISABLE_SAMPLE_FILTERING"):
        monkeypatch.delenv(name, raising=False)


def test_tl_order_filters_and_float16_targets(kits_root):
    data = MedVisionData(add_kits_tl_plan(kits_root))
    samples = data.samples(KITS_TL)
    assert [(s.image.path.split("/")[-1], s.image.slice_index) for s in samples] == [
        ("c0_0000.nii.gz", 3), ("c1_0000.nii.gz", 5), ("c1_0000.nii.gz", 0), ("c2_0000.nii.gz", 2)]
    assert [s.index for s in samples] == [0, 1, 2, 3]
    first = samples[0]
    assert first.target.values == (f16(12.3456), f16(7.891)) and first.target.values != (12.3456, 7.891)
    assert first.extra["plan_values"] == [12.3456, 7.891]
    assert (first.label, first.label_id, first.target.unit) == ("kidney tumor", 2, "mm")
    # the loader keeps a slice with an empty profile (v1 doc_to_target cannot read it): kept, image refused
    with pytest.raises(SampleDataError, match="slice 2 has no measured ellipse"):
        data.image(samples[3])
    assert data.image(samples[1]).size == (30, 40)


def test_tl_unfiltered_keeps_every_plan_entry_and_reads_the_first_ellipse(kits_root):
    data = MedVisionData(add_kits_tl_plan(kits_root), sample_filtering=False)
    samples = data.samples(KITS_TL)
    assert [(s.image.path.split("/")[-1][:2], s.image.slice_index) for s in samples] == [
        ("c0", 3), ("c0", 1), ("c0", 2), ("c1", 4), ("c1", 5), ("c1", 0), ("c2", 2)]
    assert samples[1].target.values == (20.0, 10.0) and samples[1].extra["n_measured"] == 2
    assert any("per-sample filters disabled" in p for p in data.problems)


@pytest.mark.parametrize("value, filtered", [("true", False), ("TRUE", False), ("1", True), ("false", True), ("", True)])
def test_disable_sample_filtering_env_is_the_literal_true(kits_root, monkeypatch, value, filtered):
    monkeypatch.setenv("MedVision_DISABLE_SAMPLE_FILTERING", value)
    data = MedVisionData(kits_root)
    assert data.sample_filtering is filtered
    assert len(data.samples(KITS)) == (4 if filtered else 6)


def test_detection_unfiltered_order_and_first_box(kits_root):
    samples = MedVisionData(kits_root, sample_filtering=False).samples(KITS)
    # every (slice, label) of the plan, in plan order: c0 s1 {1, 2}, c0 s2 {2, 3}, c1 s4 {2}, c2 s0 {1}
    assert [(s.image.path.split("/")[-1][:2], s.image.slice_index, s.label_id) for s in samples] == [
        ("c0", 1, 1), ("c0", 1, 2), ("c0", 2, 2), ("c0", 2, 3), ("c1", 4, 2), ("c2", 0, 1)]
    assert samples[1].extra["box_pixels"] == [2, 2, 12, 12]  # the first of the two boxes


def test_ad_metric_type_split_keeps_plan_order(tmp_path):
    data = MedVisionData(make_landmark_ad_dir(tmp_path))
    dist = data.samples(CEPH.format("Distance"))
    assert [(s.image.path.split("/")[-1], s.image.slice_index, s.extra["metric_key"]) for s in dist] == [
        ("p0.nii.gz", 7, "D1"), ("p0.nii.gz", 9, "D2"), ("p1.nii.gz", 2, "D1")]
    assert [s.target.values[0] for s in dist] == [f16(52.3456), f16(11.1111), 48.0]
    assert dist[0].extra["plan_values"] == [52.3456] and dist[0].target.unit == "mm"
    angle = data.samples(CEPH.format("Angle"))
    assert [(s.image.path.split("/")[-1], s.extra["metric_key"]) for s in angle] == [("p0.nii.gz", "A1"), ("p1.nii.gz", "A1")]
    assert angle[0].target.values == (f16(0.123456),) and angle[0].target.unit == "degree"
    assert [s.index for s in angle] == [0, 1]
    # the filter flag never touches A/D: the metric-type split always applies
    assert len(MedVisionData(tmp_path, sample_filtering=False).samples(CEPH.format("Angle"))) == 2


def test_ad_config_without_metric_token_keeps_both_types(tmp_path):
    data = MedVisionData(make_landmark_ad_dir(tmp_path, "FeTA24"))
    samples = data.samples("FeTA24_BiometricsFromLandmarks_Task01_Sagittal")
    assert [(s.image.path.split("/")[-1][:2], s.extra["metric_key"]) for s in samples] == [
        ("p0", "D1"), ("p0", "A1"), ("p0", "D2"), ("p1", "A1"), ("p1", "D1")]
