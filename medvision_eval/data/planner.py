"""Build benchmark-plan files from your own images, masks and landmarks, in the official format.

A *task* is a dict with the official ``benchmark_plan["tasks"][i]`` keys (``image_folder``,
``image_prefix``/``image_suffix``, ``mask_folder``…, ``labels_map``, ``image_description``,
``image_modality``; T/L adds ``target_label``, ``landmark_folder``…; A/D adds ``landmarks_map``,
``lines_map``, ``angles_map``, ``biometrics_map``). Folders are relative to the dataset directory
``<root>/Datasets/<name>``, so the reader resolves them under the data root. Volumes are used in
RAS+ voxel order (the reader applies the same reorientation), so nothing is rewritten in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import annotate
from .planfile import DEFAULT_SEED, DEFAULT_SPLIT_RATIO, plan_filename, read_json, split_files, write_json
from .volumes import REMAINING_AXES, load_ras, read_header, take_slice


def _file_info(header) -> dict[str, Any]:
    return {
        "voxel_size": [round(float(z), 3) for z in header.zooms],
        "affine": np.round(header.affine, 3).tolist(),
        "orientation": ["R", "A", "S"],
        "array_size": list(header.shape),
    }


def _image_names(dataset_dir: Path, task: dict[str, Any]) -> list[str]:
    folder = dataset_dir / task["image_folder"]
    return sorted(p.name for p in folder.glob("*.nii.gz"))


def _case_id(name: str, task: dict[str, Any]) -> str:
    return name.replace(task.get("image_prefix", ""), "").replace(task.get("image_suffix", ".nii.gz"), "")


def _split(dataset_dir: Path, task: dict[str, Any], seed: int, ratio: float) -> dict[str, list[str]]:
    train, test = split_files(_image_names(dataset_dir, task), seed, ratio)
    return {"train": train, "test": test}


def _detection_case(dataset_dir: Path, task: dict[str, Any], name: str) -> dict[str, Any]:
    case = _case_id(name, task)
    image_rel = f"{task['image_folder']}/{name}"
    mask_rel = f"{task['mask_folder']}/{task.get('mask_prefix', '')}{case}{task.get('mask_suffix', '.nii.gz')}"
    mask, mh = load_ras(dataset_dir / mask_rel)
    ih = read_header(dataset_dir / image_rel)
    profiles = annotate.detection_profiles(np.rint(mask).astype(np.uint16), mh.zooms)
    return {"case_ID": case, "image_file": image_rel, "mask_file": mask_rel,
            "image_file_info": _file_info(ih), "mask_file_info": _file_info(mh), **profiles}


def _tl_case(dataset_dir: Path, task: dict[str, Any], name: str, mode: str) -> dict[str, Any]:
    case = _case_id(name, task)
    image_rel = f"{task['image_folder']}/{name}"
    mask_rel = f"{task['mask_folder']}/{task.get('mask_prefix', '')}{case}{task.get('mask_suffix', '.nii.gz')}"
    lm_rel = f"{task['landmark_folder']}/{task.get('landmark_prefix', '')}{case}{task.get('landmark_suffix', '.json.gz')}"
    mask, mh = load_ras(dataset_dir / mask_rel)
    ih = read_header(dataset_dir / image_rel)
    binary = np.rint(mask) == int(task["target_label"])
    threshold = int(task.get("cluster_size_threshold", annotate.CLUSTER_SIZE_THRESHOLD))
    landmarks: dict[str, list] = {annotate.AXIS_KEYS[a]: [] for a in (0, 1, 2)}
    profiles: dict[str, list] = {annotate.PROFILE_KEYS[a]: [] for a in (0, 1, 2)}
    for axis in (0, 1, 2):
        a, b = REMAINING_AXES[axis]
        spacing = (mh.zooms[a], mh.zooms[b])
        present = np.flatnonzero(np.any(binary, axis=tuple(i for i in range(3) if i != axis)))
        for idx in present:
            fits = annotate.fit_slice(take_slice(binary, axis, int(idx)), spacing, axis, int(idx), mh.zooms,
                                      mode=mode, min_pixels=threshold)  # type: ignore[arg-type]
            if not fits:
                continue
            landmarks[annotate.AXIS_KEYS[axis]].append({"slice_idx": int(idx), "landmarks": [f["landmarks"] for f in fits]})
            ellipses = [[
                {"metric_type": "distance", "metric_map_name": "lines_map", "metric_key": "L-1-2",
                 "metric_value": f["major"], "metric_unit": "mm", "slice_dim": axis},
                {"metric_type": "distance", "metric_map_name": "lines_map", "metric_key": "L-3-4",
                 "metric_value": f["minor"], "metric_unit": "mm", "slice_dim": axis},
            ] for f in fits]
            profiles[annotate.PROFILE_KEYS[axis]].append({"slice_idx": int(idx), "slice_profile": ellipses})
    write_json(dataset_dir / lm_rel, landmarks)
    return {"case_ID": case, "image_file": image_rel, "landmark_file": lm_rel, "mask_file": mask_rel,
            "image_file_info": _file_info(ih), "mask_file_info": _file_info(mh), **profiles}


def _ad_case(dataset_dir: Path, task: dict[str, Any], name: str) -> dict[str, Any]:
    case = _case_id(name, task)
    image_rel = f"{task['image_folder']}/{name}"
    lm_rel = f"{task['landmark_folder']}/{task.get('landmark_prefix', '')}{case}{task.get('landmark_suffix', '.json.gz')}"
    ih = read_header(dataset_dir / image_rel)
    lm_json = read_json(dataset_dir / lm_rel)
    profiles: dict[str, list] = {annotate.PROFILE_KEYS[a]: [] for a in (0, 1, 2)}
    for metric in task["biometrics_map"]:
        axis = int(metric["slice_dim"])
        entry = task[metric["metric_map_name"]][metric["metric_key"]]
        if metric["metric_type"] == "angle":
            lines = [task[entry["element_map_name"]][k] for k in entry["element_keys"]]
            keys = [*lines[0]["element_keys"], *lines[1]["element_keys"]]
        else:
            keys = list(entry["element_keys"])
        found = next((s["landmarks"] for s in lm_json[annotate.AXIS_KEYS[axis]] if all(k in s["landmarks"] for k in keys)), None)
        if found is None:
            continue
        pts = [found[k] for k in keys]
        if metric["metric_type"] == "angle":
            value, unit = annotate.acute_angle(*pts, ih.zooms), "degree"
        else:
            value, unit = annotate.distance(pts[0], pts[1], ih.zooms), "mm"
        profiles[annotate.PROFILE_KEYS[axis]].append({"slice_idx": int(round(pts[0][axis])), "slice_profile": [{
            "metric_type": metric["metric_type"], "metric_map_name": metric["metric_map_name"],
            "metric_key": metric["metric_key"], "metric_value": value, "metric_unit": unit, "slice_dim": axis}]})
    return {"case_ID": case, "image_file": image_rel, "landmark_file": lm_rel, "image_file_info": _file_info(ih), **profiles}


def build_plan(dataset_dir: str | Path, kind: str, tasks: list[dict[str, Any]], *, dataset_info: dict[str, Any] | None = None,
               version: str = "1.0.0", seed: int = DEFAULT_SEED, split_ratio: float = DEFAULT_SPLIT_RATIO,
               ellipse_mode: str = "corrected") -> Path:
    """Annotate every task and write ``benchmark_plan_<kind>_v<version>.json.gz`` into ``dataset_dir``.

    ``kind``: "detection" (boxes from masks), "tl_size" (ellipses from masks; writes landmark
    files) or "ad_measure" (distances/angles from existing landmark files). T/L and A/D share the
    official ``biometry`` plan file, so one dataset holds either T/L or A/D tasks.
    """
    dataset_dir = Path(dataset_dir)
    plan_tasks = []
    for task_id, task in enumerate(tasks, start=1):
        task = dict(task)
        task["task_ID"] = f"{task_id:02d}"
        for split, names in _split(dataset_dir, task, seed, split_ratio).items():
            task[f"{split}_cases_number"] = len(names)
            if kind == "detection":
                task["task_type"] = "detection"
                task[f"{split}_cases"] = [_detection_case(dataset_dir, task, n) for n in names]
            elif kind == "tl_size":
                task["task_type"] = "biometry"
                task.setdefault("landmarks_map", {"P1": "most right/anterior/superior endpoint of the major axis",
                                                  "P2": "most left/posterior/inferior endpoint of the major axis",
                                                  "P3": "most right/anterior/superior endpoint of the minor axis",
                                                  "P4": "most left/posterior/inferior endpoint of the minor axis"})
                task.setdefault("lines_map", {"L-1-2": {"name": "major axis", "element_keys": ["P1", "P2"], "element_map_name": "landmarks_map"},
                                              "L-3-4": {"name": "minor axis", "element_keys": ["P3", "P4"], "element_map_name": "landmarks_map"}})
                task.setdefault("biometrics_map", [{"metric_type": "distance", "metric_map_name": "lines_map", "metric_key": k, "slice_dim": None}
                                                   for k in ("L-1-2", "L-3-4")])
                task[f"{split}_cases"] = [_tl_case(dataset_dir, task, n, ellipse_mode) for n in names]
            elif kind == "ad_measure":
                task["task_type"] = "biometry"
                task[f"{split}_cases"] = [_ad_case(dataset_dir, task, n) for n in names]
            else:
                raise ValueError(f"unknown plan kind {kind!r}")
        plan_tasks.append(task)
    plan = {"dataset_info": dataset_info or {"dataset": dataset_dir.name}, "tasks_number": len(plan_tasks), "tasks": plan_tasks}
    out = dataset_dir / plan_filename("detection" if kind == "detection" else "biometry", version)
    write_json(out, plan)
    return out
