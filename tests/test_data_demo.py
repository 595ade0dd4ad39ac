from __future__ import annotations

import json

from medvision_eval.data import MedVisionData, default_data_dir
from medvision_eval.data.demo import DEMO_VERSION, build_demo
from medvision_eval.data.planfile import read_json


def test_default_data_dir_env_and_atomic_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVISION_DATA_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"
    monkeypatch.delenv("MEDVISION_DATA_DIR")
    monkeypatch.delenv("MedVision_DATA_DIR", raising=False)
    monkeypatch.setenv("MEDVISION_EVAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / f"demo-{DEMO_VERSION}").mkdir(parents=True)  # a half directory left by a kill
    d = default_data_dir()
    assert d == tmp_path / "cache" / f"demo-{DEMO_VERSION}" and (d / "demo.json").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"demo-{DEMO_VERSION}"]  # no temp dirs left
    assert default_data_dir() == d


def test_demo_is_deterministic_and_small(demo_root, tmp_path):
    again = build_demo(tmp_path / "again")
    for rel in ("Datasets/DemoAbdomenCT/benchmark_plan_biometry_v1.0.0.json.gz", "Datasets/DemoCeph/benchmark_plan_biometry_v1.0.0.json.gz"):
        assert read_json(demo_root / rel) == read_json(again / rel)
    size = sum(p.stat().st_size for p in demo_root.rglob("*") if p.is_file())
    assert size < 10 * 2**20
    truth = json.loads((demo_root / "demo.json").read_text())["truth"]
    assert {t["orientation"] for t in truth["DemoAbdomenCT"]} == {"LPS", "PIR"}
    assert truth["DemoBrainEPI"][0]["source"].endswith("example4d.nii.gz")


def test_demo_targets_match_the_analytic_truth(demo_root):
    import numpy as np

    from medvision_eval.data.annotate import ellipsoid_section
    from medvision_eval.data.demo import _rotation_z

    data = MedVisionData(demo_root)
    truth = {t["case"]: t for t in json.loads((demo_root / "demo.json").read_text())["truth"]["DemoAbdomenCT"]}
    zooms = (0.9, 1.0, 3.0)
    for cfg in ("DemoAbdomenCT_TumorLesionSize_Task01_Axial", "DemoAbdomenCT_TumorLesionSize_Task01_Coronal"):
        for s in data.samples(cfg):
            t = truth[s.image.path.split("/")[-1].replace("_0000.nii.gz", "")]
            axis = s.image.slice_axis
            true = ellipsoid_section(t["tumour_semi_axes_mm"], _rotation_z(t["tumour_angle_deg"]),
                                     np.array(t["tumour_centre_mm"]), axis, s.image.slice_index * zooms[axis])
            vox = max(z for i, z in enumerate(zooms) if i != axis)
            # organs clip nothing here, but the body/liver boundary can; allow 2 % or one voxel
            assert abs(s.target.values[0] - true[0]) <= max(0.02 * true[0], vox)
            assert abs(s.target.values[1] - true[1]) <= max(0.02 * true[1], vox)
