from __future__ import annotations

import pytest

from medvision_eval.data import BenchmarkConfig, Catalogue, load_catalogue
from medvision_eval.data.catalogue import parse_config_name


def test_paper_lists_have_the_papers_sizes():
    cat = load_catalogue()
    assert len(cat.configs("detection")) == 28
    assert len(cat.configs("tl_size")) == 10
    assert len(cat.configs("ad_measure")) == 5
    assert len(cat.configs("detection", "planeOOD")) == 48
    assert len(cat.configs("detection", "taskOOD")) == 15
    assert len(cat.configs("tl_size", "planeOOD")) == 20
    assert len(cat.configs("tl_size", "taskOOD")) == 7
    assert sum(min(c.paper_count, 1000) for c in cat.configs("detection")) == 23071
    assert sum(min(c.paper_count, 1000) for c in cat.configs("tl_size")) == 4597
    assert sum(c.paper_count for c in cat.configs("ad_measure")) == 1300


def test_paper_order_and_fields():
    cat = load_catalogue()
    det = cat.configs("detection")
    assert det[0].name == "CrossMoDA_BoxSize_Task01_Axial" and det[-1].name == "TopCoW24_BoxSize_Task01_Axial"
    kits = cat.get("KiTS23_BoxSize_Task01_Axial")
    assert isinstance(kits, BenchmarkConfig)
    assert (kits.task, kits.dataset, kits.task_id, kits.plane, kits.slice_axis, kits.modality) == (
        "detection", "KiTS23", 1, "Axial", 2, "CT")
    assert set(kits.lists) == {"paper", "w-OOD", "train_SFT"}  # the official lists naming it
    assert kits.hf_config() == "KiTS23_BoxSize_Task01_Axial_Test"
    ceph = cat.get("Ceph-Biometrics-400_BiometricsFromLandmarks_Angle_Task01_Sagittal")
    assert (ceph.slice_axis, ceph.modality, ceph.metric_type, ceph.paper_count) == (0, "XR", "angle", 960)
    assert ceph.image_description == "cephalogram (head and neck X-ray)"
    assert cat.get("OAIZIB-CM_BoxSize_Task01_Axial").labels[2] == "femoral cartilage"
    assert cat.get("KiPA22_TumorLesionSize_Task01_Axial").labels == {4: "tumor"}


def test_selectors_compose():
    cat = load_catalogue()
    assert [c.name for c in cat.configs("detection", "KiTS23")] == ["KiTS23_BoxSize_Task01_Axial"]
    assert len(cat.configs("detection", "MSD")) == 9
    assert [c.name for c in cat.configs("ad_measure", "Ceph-Bio-400")] == [
        "Ceph-Biometrics-400_BiometricsFromLandmarks_Distance_Task01_Sagittal",
        "Ceph-Biometrics-400_BiometricsFromLandmarks_Angle_Task01_Sagittal"]
    # eval-task spelling and _Test suffix resolve to the same config
    assert cat.get("KiTS23_BoxCoordinate_Task01_Axial_Test").name == "KiTS23_BoxSize_Task01_Axial"
    assert cat.configs("detection", "KiTS23_BoxCoordinate_Task01_Sagittal")[0].plane == "Sagittal"
    assert len(cat.configs("detection", "all")) == 28 + 48 + 15 + 3 * 28  # + the resized 336/560/896 variants

def test_unknown_and_restricted_selectors_explain():
    cat = load_catalogue()
    with pytest.raises(ValueError, match="unknown selector 'Nope'.*KiTS23.*planeOOD"):
        cat.configs("detection", "Nope")
    with pytest.raises(ValueError, match="ToothFairy2 is not redistributable.*Datasets/ToothFairy2"):
        cat.configs("detection", "ToothFairy2")
    with pytest.raises(ValueError, match="unknown task family"):
        cat.configs("segmentation")
    assert cat.get("SKM-TEA_BoxSize_Task01_Axial").restricted
    assert "Synapse" in cat.get("FeTA24_BiometricsFromLandmarks_Task01_Axial").restricted_note


def test_parse_config_name():
    p = parse_config_name("Ceph-Biometrics-400_BiometricsFromLandmarks_Distance_Task01_Sagittal_Test")
    assert p == {"dataset": "Ceph-Biometrics-400", "task": "ad_measure", "task_id": 1, "plane": "Sagittal",
                 "metric_type": "distance", "name": "Ceph-Biometrics-400_BiometricsFromLandmarks_Distance_Task01_Sagittal",
                 "reshape_hw": None}
    with pytest.raises(ValueError):
        parse_config_name("KiTS23_Task01")


def test_root_catalogue_is_the_default_selection(demo_root):
    cat = load_catalogue(demo_root)
    assert isinstance(cat, Catalogue)
    assert [c.dataset for c in cat.configs("detection")] == ["DemoAbdomenCT", "DemoBrainEPI"]
    assert len(cat.configs("detection", "paper")) == 28  # the paper list is still reachable
    assert [c.metric_type for c in cat.configs("ad_measure")] == ["distance", "angle"]

