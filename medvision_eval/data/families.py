"""Sample families: how the samples of one kind of benchmark config are built from a data directory.

A :class:`SampleBuilder` turns one slice entry of an official benchmark-plan case into targets.
:class:`~medvision_eval.data.reader.MedVisionData` walks the plan (cases, slice entries, the
official order and split) and asks the config's family builder for the targets; it knows no
family by name. The three built-in families register through the same hook a plugin uses
(``medvision_eval_families``); a plugin adds a family by returning a
:class:`~medvision_eval.hookspecs.FamilyEntry` whose target is its builder class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..hookspecs import FamilyEntry, hookimpl
from ..schema import Target, built
from .errors import DataNotFoundError, SampleDataError

if TYPE_CHECKING:  # pragma: no cover
    from .catalogue import BenchmarkConfig, Catalogue
    from .reader import MedVisionData

_ANNOTATE: list[Any] = []


def _annotate() -> Any:
    """:mod:`.annotate` (numpy), imported when a family first builds samples, not at discovery."""
    if not _ANNOTATE:
        from . import annotate

        _ANNOTATE.append(annotate)
    return _ANNOTATE[0]


# One target of a slice entry: (kind, (label name, label id, Target, extra)). ``kind`` is free text
# for the builder; "<anything>-missing" marks a sample the official loader would fail on.
TargetItem = tuple[str, tuple[str, "int | None", Target, dict[str, Any]]]


class SampleBuilder:
    """Base of a sample family. Override :meth:`targets`; the rest has working defaults."""

    name: str = ""
    # benchmark_plan_<planner_kind>_v<version>.json.gz holds this family's annotations.
    planner_kind: str = "detection"

    def configs(self, catalogue: Catalogue) -> list[BenchmarkConfig]:
        """Configs this family adds to a data directory's catalogue (built-ins: none, the catalogue
        already lists them)."""
        return []

    def case_problem(self, data: MedVisionData, config: BenchmarkConfig, case: dict[str, Any],
                     shape: tuple[int, ...]) -> str | None:
        """Why every sample of a case is unusable (e.g. landmarks outside the volume), else None."""
        return None

    def targets(self, data: MedVisionData, config: BenchmarkConfig, facts: dict[str, Any], entry: dict[str, Any],
                height: int, width: int) -> Iterator[TargetItem]:
        """The targets of one slice entry (``entry["slice_profile"]``) of a plan case, in plan order."""
        raise NotImplementedError


_BOX_NAMES = ("x1", "y1", "x2", "y2")


class DetectionSamples(SampleBuilder):
    name = "detection"
    planner_kind = "detection"

    def targets(self, data, config, facts, entry, height, width):
        annotate = _annotate()
        filtering, keep_box, relative_box = data.sample_filtering, annotate.keep_box, annotate.relative_box
        labels = facts["labels"]
        image_area = float(height * width) if height and width else None
        for prof in entry.get("slice_profile", []) or []:
            boxes = prof.get("bboxes", []) or []
            if not boxes or (filtering and not keep_box(boxes)):
                continue
            # v1 doc_to_target_BoxCoordinate reads the first box (the only one when filtered)
            box = boxes[0]
            lab = int(prof["label"])
            low, high = box["min_coords"], box["max_coords"]
            rel = relative_box(low, high, height, width)
            dh, dw = box["dimensions"]
            extra = {"box_area_ratio": float(dh * dw) / image_area if image_area is not None else float("nan"),
                     "box_pixels": [*low, *high], "unit": "relative"}
            x1, y1, x2, y2 = rel
            if type(x1) is float and type(y1) is float and type(x2) is float and type(y2) is float \
                    and type(rel) is tuple:  # the plan's integer corners: floats already, as validated
                target = built(Target, {"values": rel, "unit": "relative", "names": _BOX_NAMES})
            else:
                target = Target(values=rel, unit="relative", names=_BOX_NAMES)
            yield "box", (labels.get(lab, str(lab)), lab, target, extra)


class TumorLesionSamples(SampleBuilder):
    name = "tl_size"
    planner_kind = "biometry"

    def targets(self, data, config, facts, entry, height, width):
        profiles = entry.get("slice_profile", []) or []
        try:
            ellipses = _annotate().tl_measurements(profiles)
        except ValueError as exc:
            raise DataNotFoundError(f"{config.name}: slice {entry.get('slice_idx')}: {exc} (the official loader fails too)") from exc
        # loader: more than one cluster (v1.1.0+ plans: n_total_clusters; v1.0.0: measured ellipses) -> dropped
        if data.sample_filtering and not _annotate().keep_tl(entry, len(ellipses)):
            return
        target_label = facts["target_label"]
        name = facts["labels"].get(target_label, "lesion") if target_label is not None else "lesion"
        if not ellipses:  # kept by the loader with an empty profile; v1 doc_to_target fails on it
            nan = float("nan")
            yield "ellipse-missing", (name, target_label, Target(values=(nan, nan), unit="mm", names=("major", "minor")),
                                      {"unit": "mm", "metric_keys": ["L-1-2", "L-3-4"]})
            return
        first = ellipses[0]  # v1 doc_to_target_TumorLesionSize reads [0]
        unit = first["unit"]
        values = (_annotate().as_float16(first["major"]), _annotate().as_float16(first["minor"]))
        yield "ellipse", (name, target_label, Target(values=values, unit=unit, names=("major", "minor")),
                          {"unit": unit, "metric_keys": ["L-1-2", "L-3-4"],
                           "plan_values": [first["major"], first["minor"]], "n_measured": len(ellipses)})


def landmark_structure_problem(path: Any, payload: Any) -> str | None:
    """A problem naming the file and the field when a landmark file is not the official
    ``{"slice_landmarks_x|y|z": [{"slice_idx": i, "landmarks": {name: [x, y, z]}}]}``."""
    import math

    if not isinstance(payload, dict):
        return (f"{path}: top level is a {type(payload).__name__}; expected an object with "
                f"{', '.join(_annotate().AXIS_KEYS.values())}")
    for key in _annotate().AXIS_KEYS.values():
        slices = payload.get(key, [])
        if not isinstance(slices, list):
            return f"{path}: {key} is a {type(slices).__name__}; expected a list of slices"
        for i, entry in enumerate(slices):
            if not isinstance(entry, dict):
                return f"{path}: {key}[{i}] is a {type(entry).__name__}; expected an object"
            lms = entry.get("landmarks", {})
            items = lms if isinstance(lms, list) else [lms]
            for j, item in enumerate(items):
                where = f"{key}[{i}].landmarks" + (f"[{j}]" if isinstance(lms, list) else "")
                if not isinstance(item, dict):
                    return f"{path}: {where} is a {type(item).__name__}; expected {{name: [x, y, z]}}"
                for name, point in item.items():
                    if not isinstance(point, list):
                        continue
                    for c, v in enumerate(point):
                        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                            return (f"{path}: {where}.{name}[{c}] = {v!r} is not a finite number "
                                    "(landmark coordinates are voxel indices)")
    return None


class LandmarkSamples(SampleBuilder):
    name = "ad_measure"
    planner_kind = "biometry"

    def case_problem(self, data, config, case, shape):
        """Landmarks outside the volume make every sample of the case unusable (named by file).

        Worked out once per (dataset, landmark file, shape) for a data object: the angle and the
        distance configs of a dataset slice the same cases (what it reports and notes was reported
        and noted the first time)."""
        raw = case.get("landmark_file")
        if not raw:
            return None
        known = getattr(data, "__dict__", None)
        if known is None or type(raw) is not str:
            return self._case_problem(data, config, raw, shape)
        key = (config.dataset, raw, tuple(shape))
        cache = known.setdefault("_landmark_case_problems", {})
        if key not in cache:
            cache[key] = self._case_problem(data, config, raw, shape)
        return cache[key]

    def _case_problem(self, data, config, raw, shape):
        try:
            rel = data.resolve(config.dataset, raw)
        except SampleDataError as exc:
            data.report(str(exc))
            return str(exc)
        path = data.root / rel
        note = getattr(data, "note_file", None)
        if note is not None:
            note(path)
        from .planfile import read_json

        read = getattr(data, "read_annotation", None) or read_json  # read once for all configs of the file
        try:
            payload = read(path)
        except FileNotFoundError:
            data.report(f"warning: {path}: landmark file not found (targets come from the plan file)")
            return None
        except (OSError, EOFError, ValueError) as exc:
            data.report(f"warning: {path}: unreadable landmark file ({exc})")
            return None
        structural = landmark_structure_problem(path, payload)
        if structural:  # named by file and field; every sample of the case fails, the run goes on
            data.report(structural)
            return structural
        outside = set()
        for key in _annotate().AXIS_KEYS.values():
            for s in payload.get(key, []):
                lms = s.get("landmarks", {})
                for item in (lms if isinstance(lms, list) else [lms]):
                    pts = {k: v for k, v in item.items() if isinstance(v, list)}
                    outside.update(_annotate().points_inside(pts, shape))
        if outside:
            msg = (f"{path}: landmarks {', '.join(sorted(outside, key=lambda k: (len(k), k)))} lie outside the "
                   f"volume of shape {tuple(shape)}")
            data.report(msg)
            return msg
        return None

    def targets(self, data, config, facts, entry, height, width):
        info = data.task_info(config)
        for prof in entry.get("slice_profile", []) or []:
            if config.metric_type and prof.get("metric_type") != config.metric_type:
                continue
            yield "metric", landmark_payload(info, prof)


def landmark_payload(info: dict[str, Any], prof: dict[str, Any]):
    """Label, Target and extra fields of one angle/distance profile (names resolved through the plan maps)."""
    mtype, key, mapname = prof["metric_type"], prof["metric_key"], prof["metric_map_name"]
    entry = info.get(mapname, {}).get(key, {})
    if mtype == "angle":
        lines = [info.get(entry.get("element_map_name", "lines_map"), {}).get(k, {}) for k in entry.get("element_keys", [])]
        point_keys = [p for line in lines for p in line.get("element_keys", [])]
        pmap = info.get(lines[0].get("element_map_name", "landmarks_map"), {}) if lines else {}
    else:
        point_keys = list(entry.get("element_keys", []))
        pmap = info.get(entry.get("element_map_name", "landmarks_map"), {})
    names = [pmap.get(k, k) for k in point_keys]
    unit = prof.get("metric_unit") or ("degree" if mtype == "angle" else "mm")
    extra = {"metric_type": mtype, "metric_key": key, "metric_map_name": mapname,
             "metric_name": entry.get("name", ""), "unit": unit, "landmark_keys": point_keys,
             "landmarks": names, **{f"p{i + 1}": n for i, n in enumerate(names)}}
    label = f"{mtype}_{key}"
    extra["plan_values"] = [float(prof["metric_value"])]
    value = _annotate().as_float16(prof["metric_value"])  # the HF feature is float16
    return label, None, Target(values=(value,), unit=unit, names=(mtype,)), extra


BUILT_IN_FAMILIES = (DetectionSamples, TumorLesionSamples, LandmarkSamples)


@hookimpl
def medvision_eval_families() -> list[FamilyEntry]:
    return [
        FamilyEntry(name="detection", target="medvision_eval.data.families:DetectionSamples",
                    description="boxes of labelled structures (benchmark_plan_detection)"),
        FamilyEntry(name="tl_size", target="medvision_eval.data.families:TumorLesionSamples",
                    description="tumour/lesion ellipse diameters (benchmark_plan_biometry)"),
        FamilyEntry(name="ad_measure", target="medvision_eval.data.families:LandmarkSamples",
                    description="angles and distances between landmarks (benchmark_plan_biometry)"),
    ]
