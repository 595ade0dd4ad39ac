"""Read a MedVision data directory (``MedVision_DATA_DIR``) into Samples, and render their images.

Layout (official ``docs/file-structure.md``)::

    <root>/Datasets/<dataset>/benchmark_plan_{detection,biometry}_v<version>.json.gz
    <root>/Datasets/<dataset>/<image_folder>/*.nii.gz, <mask_folder>/*.nii.gz, <landmark_folder>/*.json.gz

The plan's ``tasks[task_id-1]["test_cases"|"train_cases"]`` already hold the official 70/30
split; they are flattened as the official loader ``MedVision.py::_generate_examples`` does (cases in
plan order, then the entries of ``slice_profiles_{x,y,z}`` in plan order, then the profiles of each
entry in plan order) with its per-sample filters, so ``Sample.index`` is the position in the
official dataset order and ``--limit N`` means ``samples[:N]``. ``MedVision_DISABLE_SAMPLE_FILTERING
=true`` turns the filters off, as in the official loader (multi-instance samples; not the paper's set).
``samples()`` reads plan files and NIfTI headers only; ``image()`` decodes through a volume cache
bounded in bytes (``cache_bytes``, default ``MEDVISION_VOLUME_CACHE_MB`` or 512 MiB); ``prefetch()``
decodes the next volume on a worker thread.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from ..schema import ImageRef, Sample, Target, built
from . import annotate
from . import render as render_mod
from .catalogue import CATALOGUE_FILE, BenchmarkConfig, Catalogue, load_catalogue, normalise_modality
from .errors import DataNotFoundError, SampleDataError
from .families import _BOX_NAMES, BUILT_IN_FAMILIES, DetectionSamples, SampleBuilder
from .planfile import plan_filename, read_json
from .volumes import VolumeCache, VolumeHeader, read_header, take_slice

PLANNER_VERSION_ENV = ("MEDVISION_PLANNER_VERSION", "MedVision_PLANNER_VERSION")
DISABLE_FILTERING_ENV = ("MedVision_DISABLE_SAMPLE_FILTERING", "MEDVISION_DISABLE_SAMPLE_FILTERING")
# the built-in detection family's samples built in one loop (MedVisionData._detection_samples); tests
# switch it off to compare with the general loop
FUSED_DETECTION = True
_DETECTION_TARGETS = DetectionSamples.targets  # what _detection_samples reproduces


def sample_filtering_from_env() -> bool:
    """False when ``MedVision_DISABLE_SAMPLE_FILTERING`` is "true" (case-insensitive), as the official loader."""
    return not any(os.environ.get(name, "").strip().lower() == "true" for name in DISABLE_FILTERING_ENV)


def _planner_version(config: BenchmarkConfig) -> str:
    for name in PLANNER_VERSION_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return config.planner_version


def discovered_families() -> dict[str, SampleBuilder]:
    """The sample builders every installed plugin registers (the three built-ins included)."""
    from ..plugins import Registry

    return Registry.discover().sample_builders()


def group_by_volume(samples: Sequence[Sample]) -> list[Sample]:
    """Samples reordered so each volume's slices are consecutive (stable within a volume)."""
    first: dict[str, int] = {}
    for i, s in enumerate(samples):
        first.setdefault(s.image.path, i)
    return sorted(samples, key=lambda s: (first[s.image.path], s.index))


class MedVisionData:
    """A MedVision data directory."""

    def __init__(self, root: str | Path, *, cache_bytes: int | None = None, sample_filtering: bool | None = None,
                 families: Mapping[str, SampleBuilder] | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DataNotFoundError(f"data directory {self.root} does not exist; pass --data DIR or set MEDVISION_DATA_DIR "
                                    "to the folder that holds Datasets/ (unset it to use the demo data)")
        # sample builders by family name (default: every family the installed plugins register)
        self.families: dict[str, SampleBuilder] = dict(families if families is not None else discovered_families())
        catalogue = load_catalogue(self.root)
        added = [c for b in self.families.values() for c in b.configs(catalogue) if c.name not in catalogue]
        # configs a plugin family derives count as the data root's own when the root declares its own
        self.catalogue: Catalogue = catalogue.merged(added, local=bool(catalogue.local)) if added else catalogue
        self.problems: list[str] = []
        self._cache = VolumeCache(cache_bytes)  # None: MEDVISION_VOLUME_CACHE_MB or 512 MiB
        self._plans: dict[Path, dict[str, Any]] = {}
        self._plan_paths: dict[tuple[str, str, str], Path] = {}  # (dataset, planner kind, version) -> plan file
        self._headers: dict[Path, VolumeHeader | SampleDataError] = {}
        self._header_of_rel: dict[str, VolumeHeader | SampleDataError] = {}  # _header(): rel -> _headers[root / rel]
        self._resolved: dict[tuple[str, str], str | SampleDataError] = {}  # resolve(), once per path
        self._real_dirs: dict[str, str] = {}  # folder -> its real path (symbolic links resolved)
        self._annotations: dict[Path, tuple[Any, Exception | None]] = {}  # read_annotation()
        self._noted: set[Path] = set()  # other files planning read (landmark files): note_file()
        self._bad: dict[str, str] = {}  # sample id -> why its image cannot be produced
        # the official loader's per-sample filters (single-instance set); None = from the environment
        self.sample_filtering = sample_filtering_from_env() if sample_filtering is None else bool(sample_filtering)
        if not self.sample_filtering:
            self._problem("warning: per-sample filters disabled (MedVision_DISABLE_SAMPLE_FILTERING=true): "
                          "multi-instance samples, not comparable with the paper")

    # ---------------------------------------------------------------------------- paths
    def report(self, message: str) -> None:
        """Record a data problem once (printed and written to data_problems.txt by the run)."""
        seen = self.__dict__.setdefault("_problem_set", set())
        if message not in seen:
            seen.add(message)
            self.problems.append(message)

    _problem = report

    def builder(self, config: BenchmarkConfig) -> SampleBuilder:
        """The sample builder of a config's family."""
        try:
            return self.families[config.task]
        except KeyError:
            known = ", ".join(sorted(self.families)) or "none"
            raise DataNotFoundError(f"{config.name}: no sample family {config.task!r} is registered "
                                    f"(known: {known}); install the plugin that provides it") from None

    def resolve(self, dataset: str, path: str) -> str:
        """A plan path as a posix path relative to the root; raises SampleDataError if it escapes.
        Worked out once per (dataset, path) for the life of this object, as headers are read once."""
        key = (dataset, path)
        known = self._resolved.get(key)
        if known is None:
            try:
                known = self._resolve(dataset, path)
            except SampleDataError as exc:
                known = exc
            self._resolved[key] = known
        if isinstance(known, SampleDataError):
            raise SampleDataError(str(known)) from None
        return known

    def _resolve(self, dataset: str, path: str) -> str:
        text = str(path).replace("\\", "/")
        if not text.startswith("/") and type(dataset) is str:
            return self._resolve_relative(dataset, text, path)
        p = PurePosixPath(text)
        if p.is_absolute():
            parts = p.parts
            hit = [i for i in range(len(parts) - 1) if parts[i] == "Datasets" and parts[i + 1] == dataset]
            if hit:
                p = PurePosixPath(*parts[hit[-1] + 2:])
            else:
                try:
                    return Path(p).resolve().relative_to(self.root).as_posix()
                except ValueError:
                    raise SampleDataError(f"{path}: path escapes the data root {self.root}") from None
        target = self._realpath(str(self.root / "Datasets" / dataset / Path(p)))
        try:
            return Path(target).relative_to(self.root).as_posix()
        except ValueError:
            raise SampleDataError(f"{path}: path escapes the data root {self.root}") from None

    def _resolve_relative(self, dataset: str, text: str, path: str) -> str:
        """:meth:`_resolve` of a relative plan path, in strings: ``realpath`` normalises what
        pathlib would have normalised (``//``, ``.``, a trailing ``/``), and a real path lies
        under the (resolved) root exactly when it is the root or starts with the root and ``/``."""
        root = self.__dict__.get("_root_text")
        if root is None:
            root = self._root_text = str(self.root)
        target = self._realpath(os.path.join(root, "Datasets", dataset, text))
        if target == root:
            return "."
        prefix = root if root.endswith("/") else root + "/"
        if target.startswith(prefix):
            return target[len(prefix):]
        raise SampleDataError(f"{path}: path escapes the data root {self.root}")

    def _realpath(self, path: str) -> str:
        """``os.path.realpath(path)`` (what ``Path.resolve()`` returns), resolving each directory
        once: a file whose folder is resolved already costs one ``lstat`` instead of one per
        component. ``realpath(dir/name)`` is ``realpath(realpath(dir)/name)``, which is the folder's
        real path joined with ``name`` unless ``name`` is itself a symbolic link."""
        head, name = os.path.split(path)
        if not head or name in ("", ".", ".."):
            return os.path.realpath(path)
        real_head = self._real_dirs.get(head)
        if real_head is None:
            real_head = self._real_dirs[head] = os.path.realpath(head)
        joined = os.path.join(real_head, name)
        return os.path.realpath(joined) if os.path.islink(joined) else joined

    def _header(self, rel: str) -> VolumeHeader:
        value = self._header_of_rel.get(rel)
        if value is None:
            path = self.root / rel
            if path not in self._headers:
                try:
                    self._headers[path] = read_header(path)
                except SampleDataError as exc:
                    self._headers[path] = exc
            value = self._header_of_rel[rel] = self._headers[path]
        if isinstance(value, SampleDataError):
            raise value
        return value

    # ----------------------------------------------------------------------------- plans
    def dataset_dir(self, config: BenchmarkConfig) -> Path:
        d = self.root / "Datasets" / config.dataset
        if not d.is_dir():
            if config.restricted:
                raise DataNotFoundError(f"{config.name}: {config.restricted_note}")
            raise DataNotFoundError(
                f"{config.name}: dataset folder {d} is missing. Build it with the official loader "
                f"(datasets==3.6.0, load_dataset('YongchengYAO/MedVision', name='{config.hf_config()}', "
                "trust_remote_code=True) with MedVision_DATA_DIR set) and point --data at that MedVision_DATA_DIR, "
                "or run the demo (unset MEDVISION_DATA_DIR)")
        return d

    def plan(self, config: BenchmarkConfig) -> dict[str, Any]:
        kind, version = self.builder(config).planner_kind, _planner_version(config)
        known = self._plan_paths.get((config.dataset, kind, version))
        if known is not None:  # read before: no file-system calls
            return self._plans[known]
        d = self.dataset_dir(config)
        path = d / plan_filename(kind, version)
        if path not in self._plans:
            if not path.is_file():
                found = sorted(p.name for p in d.glob("benchmark_plan_*.json*"))
                raise DataNotFoundError(f"{config.name}: plan file {path} is missing (found: {', '.join(found) or 'none'}); "
                                        "set MEDVISION_PLANNER_VERSION to the version you have, the paper used 1.0.0")
            try:
                self._plans[path] = read_json(path)
            except (OSError, EOFError, ValueError) as exc:
                raise DataNotFoundError(f"{path}: cannot read the plan file ({exc})") from exc
        self._plan_paths[(config.dataset, kind, version)] = path
        return self._plans[path]

    def task_info(self, config: BenchmarkConfig) -> dict[str, Any]:
        current = self.__dict__.get("_samples_of")
        if current is not None and current[0] is config:  # asked by a family while samples() walks it
            return current[1]
        tasks = self.plan(config).get("tasks", [])
        if not 1 <= config.task_id <= len(tasks):
            raise DataNotFoundError(f"{config.name}: the plan has {len(tasks)} tasks, no Task{config.task_id:02d}")
        return tasks[config.task_id - 1]

    def note_file(self, path: str | Path) -> None:
        """Record a file that planning read besides plan files and volume headers (a family's
        landmark file): it becomes part of the run's manifest, so changing it re-plans the run."""
        self._noted.add(Path(path))

    def read_annotation(self, path: str | Path) -> Any:
        """``read_json(path)`` of an annotation file a family reads (a landmark file), read once per
        data object: configs slicing the same cases share it. The document is shared, not copied:
        callers only read it. A file that cannot be read raises its error again on every call."""
        path = Path(path)
        known = self._annotations.get(path)
        if known is None:
            try:
                known = (read_json(path), None)
            except Exception as exc:  # re-raised below, and for every later caller
                known = (None, exc)
            self._annotations[path] = known
        if known[1] is not None:
            raise known[1]
        return known[0]

    def consulted_files(self) -> list[Path]:
        """Every file planning has read so far (or looked for): the data root's catalogue.json,
        plan files, volumes whose header was read (images and masks) and noted files."""
        return sorted({self.root / CATALOGUE_FILE, *self._plans, *self._headers, *self._noted})

    def identity(self) -> dict[str, str]:
        """sha256 (16 hex) of every annotation file planning has read so far, by path under the root:
        the plan files and the root's catalogue.json. Two runs with equal identities saw the same samples."""
        files = sorted(self._plans) + [p for p in [self.root / CATALOGUE_FILE] if p.is_file()]
        out = {}
        for path in files:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            out[path.relative_to(self.root).as_posix()] = digest.hexdigest()[:16]
        return out

    # --------------------------------------------------------------------------- samples
    def samples(self, config: BenchmarkConfig | str, split: str = "test") -> list[Sample]:
        if isinstance(config, str):
            config = self.catalogue.get(config)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        info = self.task_info(config)
        labels = {int(k): v for k, v in info.get("labels_map", {}).items()} or dict(config.labels)
        facts = {
            "description": info.get("image_description", config.image_description),
            "modality": normalise_modality(info["image_modality"]) if info.get("image_modality") else config.modality,
            "labels": labels,
            "target_label": (int(info["target_label"]) if info.get("target_label") is not None
                             else next(iter(config.labels), None)),
        }
        out: list[Sample] = []
        seen: dict[str, int] = {}
        self._samples_of = (config, info)  # task_info(config) meanwhile: this info, no file-system or env look-up
        try:
            for case in info.get(f"{split}_cases", []):
                for sample in self._case_samples(config, info, facts, case, split, len(out)):
                    if sample.id in seen:
                        seen[sample.id] += 1
                        sample = sample.model_copy(update={"id": f"{sample.id}#{seen[sample.id]}"})
                    else:
                        seen[sample.id] = 0
                    out.append(sample)
        finally:
            self._samples_of = None
        return out

    def _case_geometry(self, config: BenchmarkConfig, case: dict[str, Any]) -> tuple[str, tuple[int, ...], tuple[float, ...], str | None]:
        """(image path rel. to root, RAS shape, zooms, problem or None)."""
        info = case.get("image_file_info", {})
        shape = tuple(int(s) for s in info.get("array_size", (0, 0, 0)))
        zooms = tuple(float(z) for z in info.get("voxel_size", (1.0, 1.0, 1.0)))
        raw = case.get("image_file", "")
        try:
            rel = self.resolve(config.dataset, raw)
        except SampleDataError as exc:
            return str(raw), shape, zooms, str(exc)
        try:
            header = self._header(rel)
        except SampleDataError as exc:
            return rel, shape, zooms, str(exc)
        problem = None
        if case.get("mask_file"):
            problem = self._check_mask(config, rel, header, case["mask_file"])
        return rel, header.shape, header.zooms, problem

    def _check_mask(self, config: BenchmarkConfig, rel: str, header: VolumeHeader, mask_file: str) -> None:
        """Image/mask header mismatch is a warning (as the official planner), never fatal."""
        try:
            mrel = self.resolve(config.dataset, mask_file)
            mh = self._header(mrel)
        except SampleDataError as exc:
            self._problem(f"warning: {exc}")
            return None
        if mh.shape == header.shape and mh.zooms == header.zooms and np.array_equal(mh.affine, header.affine):
            return None  # the common case: the same geometry exactly (so also within the tolerances)
        diffs = []
        if mh.shape != header.shape:
            diffs.append(f"shape {header.shape} vs {mh.shape}")
        if not np.allclose(mh.zooms, header.zooms, rtol=1e-3, atol=1e-5):
            diffs.append(f"voxel size {tuple(round(z, 4) for z in header.zooms)} vs {tuple(round(z, 4) for z in mh.zooms)}")
        if not np.allclose(mh.affine, header.affine, rtol=1e-3, atol=1e-3):
            diffs.append("affine differs")
        if diffs:
            self._problem(f"warning: {self.root / rel} and mask {self.root / mrel}: header mismatch ({'; '.join(diffs)})")
        return None

    def _case_samples(self, config: BenchmarkConfig, info: dict[str, Any], facts: dict[str, Any], case: dict[str, Any],
                      split: str, start: int) -> list[Sample]:
        axis = config.slice_axis
        rel, shape, zooms, problem = self._case_geometry(config, case)
        if problem:
            self._problem(problem)
        a, b = ((1, 2), (0, 2), (0, 1))[axis]
        plan_shape = tuple(int(s) for s in case.get("image_file_info", {}).get("array_size", shape))
        height, width = int(shape[a]), int(shape[b])
        plan_h, plan_w = int(plan_shape[a]), int(plan_shape[b])
        spacing = (float(zooms[b]), float(zooms[a]))  # (width, height)
        reshape = config.reshape_hw
        if reshape:
            # v1 ``_load_nifti_2d(new_shape_hw=...)``: zoom = new / old per axis (a Python float), and
            # the header's np.float32 spacing divided by it stays float32 (numpy 2)
            new_h, new_w = int(reshape[0]), int(reshape[1])
            spacing = (float(np.float32(zooms[b]) / np.float32(new_w / width)),
                       float(np.float32(zooms[a]) / np.float32(new_h / height)))
        entries = case.get(annotate.PROFILE_KEYS[axis], []) or []
        builder = self.builder(config)
        lm_problem = builder.case_problem(self, config, case, shape)
        case_id = str(case.get("case_ID", PurePosixPath(rel).name))
        modality_spelling = str(info["image_modality"]) if info.get("image_modality") else None
        size = (new_w, new_h) if reshape else (width, height)
        # the fields every sample of the case shares have their validated types (str, int, float)
        own_keys = type(builder) in BUILT_IN_FAMILIES  # whose extra fields are named by str literals
        task_name, config_name, dataset, plane = config.task, config.name, config.dataset, config.plane_code
        modality, description = facts["modality"], facts["description"]
        plain = (type(rel) is str and type(axis) is int and all(type(v) is int for v in size)
                 and all(type(v) is float for v in spacing) and type(modality) is str and type(description) is str
                 and type(task_name) is str and type(config_name) is str and type(dataset) is str
                 and type(plane) is str and type(split) is str)
        if (plain and not reshape and type(builder) is DetectionSamples and DetectionSamples.targets is _DETECTION_TARGETS
                and FUSED_DETECTION):
            fused = self._detection_samples(config, entries, rel, axis, shape, plan_h, plan_w, problem, lm_problem,
                                            case_id, facts, modality_spelling, size, spacing, split, start)
            if fused is not None:
                return fused
        out: list[Sample] = []
        for position, entry in enumerate(entries):
            idx, entry_problem = self._slice_index(config, case_id, axis, position, entry)
            image = None  # the slice's reference, built once and shared by its samples (it is frozen)
            if entry_problem:  # no usable slice index: a stable id from the entry's position
                head = f"{config_name}/{split}/{case_id}/{plane}?entry{position}/"
            else:
                head = f"{config_name}/{split}/{case_id}/{plane}{idx}/"
            for kind, payload in builder.targets(self, config, facts, entry, plan_h, plan_w):
                label_name, label_id, target, extra = payload
                if reshape:
                    extra = {**extra, "reshape_hw": [new_h, new_w], "original_size": [width, height]}
                    if kind == "box":
                        # v1 doc_to_target_BoxCoordinate divides the *original* pixel corners by the
                        # resized image size; the scale-free target stays in plan_values (corrected)
                        px = extra["box_pixels"]
                        extra["plan_values"] = list(target.values)
                        target = target.model_copy(update={"values": tuple(
                            annotate.relative_box(px[:2], px[2:], new_h, new_w))})
                key = label_id if label_id is not None else extra.get("metric_key")
                sid = f"{head}{key}"
                why = problem or entry_problem
                if why is None and kind.endswith("-missing"):
                    why = f"{self.root / rel}: slice {idx} has no measured ellipse in the plan (official loader: IndexError)"
                    self._problem(why)
                if why is None and not 0 <= idx < shape[axis]:
                    why = f"{self.root / rel}: slice {idx} is outside the volume (axis {axis} has {shape[axis]} slices)"
                    self._problem(why)
                if why is None and lm_problem:
                    why = lm_problem
                if why:
                    self._bad[sid] = why
                own = False  # whether extra is a dict made here (else the builder's, copied as validation does)
                if modality_spelling is not None:  # the plan's own spelling (v1 groups by it verbatim)
                    extra, own = {**extra, "image_modality": modality_spelling}, True
                fields = {
                    "id": sid, "task": task_name, "config": config_name, "dataset": dataset, "split": split,
                    "index": start + len(out), "image": None, "image_size": size, "pixel_spacing": spacing,
                    "label": label_name, "label_id": label_id, "modality": modality, "plane": plane,
                    "image_description": description, "target": target, "extra": extra,
                }
                if (plain and type(label_name) is str and (label_id is None or type(label_id) is int)
                        and type(target) is Target and type(extra) is dict
                        and (own_keys or all(type(k) is str for k in extra))):
                    # every field already has the type validation would give it: built without re-checking
                    if image is None:
                        image = built(ImageRef, {"path": rel, "slice_axis": axis, "slice_index": idx})
                    fields["image"] = image
                    if not (own or reshape):
                        fields["extra"] = dict(extra)
                    out.append(built(Sample, fields))
                else:  # a plugin's unusual label or extra: validated (and refused with a message) as always
                    fields["image"] = ImageRef(path=rel, slice_axis=axis, slice_index=idx)
                    try:
                        out.append(Sample(**fields))
                    except ValidationError as exc:  # a value the plan file gives has the wrong type
                        first = exc.errors()[0]
                        field = ".".join(map(str, first["loc"])) or "(sample)"
                        raise DataNotFoundError(
                            f"{self._plan_file(config)}: sample {sid}: {field} is {first.get('input')!r}: {first['msg']}; "
                            "fix the plan file (e.g. its labels_map)") from exc
        return out

    def _detection_samples(self, config: BenchmarkConfig, entries: list, rel: str, axis: int, shape: tuple,
                           plan_h: int, plan_w: int, problem: str | None, lm_problem: str | None, case_id: str,
                           facts: dict[str, Any], modality_spelling: str | None, size: tuple[int, int],
                           spacing: tuple[float, float], split: str, start: int) -> list[Sample] | None:
        """The samples of one case of the built-in detection family, as :meth:`_case_samples`'
        general loop builds them from :meth:`DetectionSamples.targets` (same values, checks, problems
        and order, evaluated in the same order), without a generator, payload tuples and a second
        copy of each ``extra`` per box. None when a box's values or label are not of the types the
        general loop builds directly (it then builds the whole case, reporting nothing twice: the
        problems reported so far are the first it reports, and it records the same unusable ids)."""
        keep_box, relative_box = annotate.keep_box, annotate.relative_box
        filtering, labels = self.sample_filtering, facts["labels"]
        image_area = float(plan_h * plan_w) if plan_h and plan_w else None
        task_name, config_name, dataset, plane = config.task, config.name, config.dataset, config.plane_code
        modality, description = facts["modality"], facts["description"]
        out: list[Sample] = []
        for position, entry in enumerate(entries):
            idx, entry_problem = self._slice_index(config, case_id, axis, position, entry)
            image = None
            if entry_problem:
                head = f"{config_name}/{split}/{case_id}/{plane}?entry{position}/"
            else:
                head = f"{config_name}/{split}/{case_id}/{plane}{idx}/"
            for prof in entry.get("slice_profile", []) or []:
                boxes = prof.get("bboxes", []) or []
                if not boxes or (filtering and not keep_box(boxes)):
                    continue
                box = boxes[0]
                lab = int(prof["label"])
                low, high = box["min_coords"], box["max_coords"]
                values = relative_box(low, high, plan_h, plan_w)
                dh, dw = box["dimensions"]
                ratio = float(dh * dw) / image_area if image_area is not None else float("nan")
                pixels = [*low, *high]
                x1, y1, x2, y2 = values
                label_name = labels.get(lab, str(lab))
                if not (type(x1) is float and type(y1) is float and type(x2) is float and type(y2) is float
                        and type(values) is tuple and type(label_name) is str):
                    return None
                sid = f"{head}{lab}"
                why = problem or entry_problem
                if why is None and not 0 <= idx < shape[axis]:
                    why = f"{self.root / rel}: slice {idx} is outside the volume (axis {axis} has {shape[axis]} slices)"
                    self._problem(why)
                if why is None and lm_problem:
                    why = lm_problem
                if why:
                    self._bad[sid] = why
                if modality_spelling is not None:
                    extra = {"box_area_ratio": ratio, "box_pixels": pixels, "unit": "relative",
                             "image_modality": modality_spelling}
                else:
                    extra = {"box_area_ratio": ratio, "box_pixels": pixels, "unit": "relative"}
                if image is None:
                    image = built(ImageRef, {"path": rel, "slice_axis": axis, "slice_index": idx})
                out.append(built(Sample, {
                    "id": sid, "task": task_name, "config": config_name, "dataset": dataset, "split": split,
                    "index": start + len(out), "image": image, "image_size": size, "pixel_spacing": spacing,
                    "label": label_name, "label_id": lab, "modality": modality, "plane": plane,
                    "image_description": description,
                    "target": built(Target, {"values": values, "unit": "relative", "names": _BOX_NAMES}),
                    "extra": extra}))
        return out

    def _plan_file(self, config: BenchmarkConfig) -> Path | str:
        """The plan file ``config``'s samples come from (for messages)."""
        kind, version = self.builder(config).planner_kind, _planner_version(config)
        return self._plan_paths.get((config.dataset, kind, version), f"{config.name} plan file")

    def _slice_index(self, config: BenchmarkConfig, case_id: str, axis: int, position: int,
                     entry: dict[str, Any]) -> tuple[int, str | None]:
        """The entry's ``slice_idx``, or (-1, a problem naming the plan file and field)."""
        raw = entry.get("slice_idx") if isinstance(entry, dict) else None
        if type(raw) is int and -(2**53) < raw < 2**53:  # the common case (exact as a float): no message
            return raw, None
        field = f"case {case_id!r} {annotate.PROFILE_KEYS[axis]}[{position}].slice_idx"
        plan = self.dataset_dir(config) / plan_filename(config.planner_kind, _planner_version(config))
        if raw is None:
            problem = f"{plan}: {field} is missing; every slice entry needs its slice index"
        elif isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            problem = f"{plan}: {field} = {raw!r} is not an integer slice index"
        else:
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not (np.isfinite(value) and value == int(value)):
                problem = f"{plan}: {field} = {raw!r} is not an integer slice index"
            else:
                return int(value), None
        self._problem(problem)
        return -1, problem

    # ---------------------------------------------------------------------------- images
    def slice_array(self, sample: Sample) -> np.ndarray:
        """The raw float32 2D slice of a sample (decoded once per volume through the cache); read-only
        when it is a view into the cached volume."""
        if sample.id in self._bad:
            raise SampleDataError(self._bad[sample.id])
        path = self._checked_path(sample.image.path)
        volume, _ = self._cache.get(path)
        try:
            arr = take_slice(volume, sample.image.slice_axis, sample.image.slice_index)
        except IndexError as exc:
            raise SampleDataError(f"{path}: {exc}") from exc
        if arr.dtype != np.float32:  # voxels cached as stored (int16 CT): float32 holds them exactly
            arr = arr.astype(np.float32)  # a contiguous copy
        elif not (arr.flags.c_contiguous or arr.flags.f_contiguous):
            # a scattered slice (e.g. sagittal of a file-ordered volume): one strided copy, so every
            # later pass is cache-friendly; a contiguous one (axial) is used in place, read-only
            arr = np.ascontiguousarray(arr)
        reshape = sample.extra.get("reshape_hw")
        if reshape:  # v1: scipy.ndimage.zoom(order=1) of the float32 slice
            from scipy.ndimage import zoom

            arr = zoom(arr, (reshape[0] / arr.shape[0], reshape[1] / arr.shape[1]), order=1)
        if arr.shape != (sample.image_size[1], sample.image_size[0]):
            raise SampleDataError(f"{path}: slice shape {arr.shape} differs from the expected (height, width) "
                                  f"{(sample.image_size[1], sample.image_size[0])}")
        lo, hi = arr.min(), arr.max()  # NaN if any voxel is NaN: then take the slow path
        if np.isnan(lo) or np.isnan(hi):
            where = f"{path} slice {sample.image.slice_axis}:{sample.image.slice_index}"
            nan = int(np.isnan(arr).sum())
            if nan == arr.size:
                raise SampleDataError(f"{where}: every voxel is NaN")
            self._problem(f"warning: {where}: {nan} NaN voxels; paper renders the slice black as v1 did, "
                          "corrected renders them as the slice minimum")
            finite = arr[~np.isnan(arr)]
            lo, hi = finite.min(), finite.max()
        if lo == hi:
            where = f"{path} slice {sample.image.slice_axis}:{sample.image.slice_index}"
            self._problem(f"warning: {where}: constant slice (value {float(lo)}); rendered black as v1 did")
        return arr

    def _checked_path(self, rel: str) -> Path:
        """``root/rel``, refusing paths that escape the data root (checked once per file)."""
        checked = self.__dict__.setdefault("_checked_paths", {})
        path = checked.get(rel)
        if path is None:
            path = self.root / rel
            try:
                Path(path).resolve().relative_to(self.root)
            except ValueError:
                raise SampleDataError(f"{rel}: path escapes the data root {self.root}") from None
            checked[rel] = path
        return path

    def image(self, sample: Sample, render: str = "minmax") -> Image.Image:
        """RGB image of a sample rendered as ``render`` ("minmax" v1 or "window"; the protocol's
        renderer, see ``Protocol.render_image``).

        Samples of one slice (one per label in detection) usually come one after another, so the
        last rendered image is kept and a copy of it returned when the next sample would render the
        same pixels. Every call returns a new image of its own: an adapter that draws on (or
        ``thumbnail()``s) its image cannot change what another sample is sent.
        """
        if not isinstance(render, str):
            raise TypeError(f"MedVisionData.image takes a renderer name ('minmax' or 'window'), not {type(render).__name__}; "
                            "to render as a protocol does, call protocol.render_image(data, sample)")
        if sample.id in self._bad:
            raise SampleDataError(self._bad[sample.id])
        key = self._render_key(sample, render)
        last = self.__dict__.get("_last_render")
        if last is not None and last[0] == key:
            return last[1].copy()  # a new image: the kept one is never handed out
        arr = self.slice_array(sample)
        gray = render_mod.to_uint8(arr, render, modality=sample.modality, label=sample.label, dataset=sample.dataset)
        image = render_mod.to_rgb(gray)
        self._last_render = (key, image)
        return image.copy()

    @staticmethod
    def _render_key(sample: Sample, render: str) -> tuple:
        """Everything the rendered pixels depend on: the slice, its expected size, the resize and
        the renderer (``window`` also picks its window by modality, dataset and label)."""
        reshape = sample.extra.get("reshape_hw")
        key: tuple = (sample.image.path, sample.image.slice_axis, sample.image.slice_index, tuple(sample.image_size),
                      tuple(reshape) if reshape else None, render)
        if render != "minmax":
            key += (sample.modality, sample.dataset, sample.label)
        return key

    def images(self, samples: Iterable[Sample], render: str = "minmax"):
        """Yield (sample, image or SampleDataError) grouped by volume, so each volume is decoded once."""
        for s in group_by_volume(list(samples)):
            try:
                yield s, self.image(s, render)
            except SampleDataError as exc:
                yield s, exc

    def prefetch(self, sample: Sample) -> None:
        """Start decoding the volume of ``sample`` on a worker thread (errors surface in ``image``)."""
        if sample.id in self._bad:
            return
        try:
            path = self._checked_path(sample.image.path)
        except SampleDataError:
            return
        self._cache.prefetch(path)

    def release(self, sample: Sample) -> None:
        """Drop the decoded volume of ``sample`` (its caller is done with that volume); decoding
        it again later is allowed, and counted in :attr:`decodes`."""
        try:
            path = self._checked_path(sample.image.path)
        except SampleDataError:
            return
        self._cache.drop(path)

    def close(self) -> None:
        """Release every decoded volume, the last rendered image and the decode thread."""
        self._last_render = None
        self._cache.close()

    @property
    def decodes(self) -> int:
        """How many volumes the cache decoded so far."""
        return self._cache.decodes
