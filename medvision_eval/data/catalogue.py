"""The benchmark configs of the MedVision paper, as data.

A config name has the official form ``{dataset}_{kind}_{TaskNN}_{Plane}`` (without the
``_Train``/``_Test`` suffix), where ``kind`` is ``BoxSize`` (detection; the eval task is
called ``BoxCoordinate``), ``TumorLesionSize`` or ``BiometricsFromLandmarks`` (optionally
followed by ``_Distance``/``_Angle``). The label maps, descriptions and list memberships live
in ``catalogue/paper.json``; a data root may add its own configs in ``catalogue.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The official config naming of the three MedVision families (data about the official names; the
# reader builds samples through each family's registered SampleBuilder, see data/families.py).
TASK_FAMILIES = ("detection", "tl_size", "ad_measure")
PLANES = {"Sagittal": 0, "Coronal": 1, "Axial": 2}
KIND_BY_FAMILY = {"detection": "BoxSize", "tl_size": "TumorLesionSize", "ad_measure": "BiometricsFromLandmarks"}
# benchmark_plan_<planner kind>_v<version>.json.gz holds each family's annotations.
PLANNER_KIND = {"detection": "detection", "tl_size": "biometry", "ad_measure": "biometry"}
MODALITY_CODES = {"CT": "CT", "MRI": "MR", "MR": "MR", "US": "US", "ULTRASOUND": "US", "X RAY": "XR",
                  "X-RAY": "XR", "XR": "XR", "PET": "PET"}
CATALOGUE_FILE = "catalogue.json"

_NAME_RE = re.compile(
    r"^(?P<dataset>.+?)_(?P<kind>BoxSize|BoxCoordinate|TumorLesionSize|BiometricsFromLandmarks)"
    r"(?:_(?P<metric>Distance|Angle))?_Task(?P<task>\d+)_(?P<plane>Axial|Coronal|Sagittal)"
    r"(?P<rest>(?:_[A-Za-z0-9_]+)?)(?P<resize>-(?P<rh>\d+)x(?P<rw>\d+))?$"
)


def normalise_modality(text: str) -> str:
    """'MRI' -> 'MR', 'X Ray' -> 'XR'; unknown strings are returned upper-cased."""
    return MODALITY_CODES.get(text.strip().upper(), text.strip().upper())


class BenchmarkConfig(BaseModel):
    """One benchmark config: a (dataset, planner task, plane) with its label map and prompt facts."""

    model_config = ConfigDict(frozen=True)

    name: str  # e.g. "KiTS23_BoxSize_Task01_Axial"
    task: str  # sample family: detection | tl_size | ad_measure | a plugin's family
    dataset: str
    task_id: int  # 1-based index into benchmark_plan["tasks"]
    plane: Literal["Axial", "Coronal", "Sagittal"]
    slice_axis: int  # 0 sagittal, 1 coronal, 2 axial
    modality: str  # CT | MR | US | XR | PET
    image_description: str = ""
    labels: dict[int, str] = Field(default_factory=dict)
    restricted: bool = False
    restricted_note: str = ""
    lists: tuple[str, ...] = ()
    paper_count: int | None = None
    metric_type: Literal["distance", "angle"] | None = None  # A/D configs restricted to one type
    verified: bool = False  # label map / description read from the official medvision_ds code
    # The official resized variants ("-336x336" ...): v1 ``reshape_image_hw`` (height, width).
    reshape_hw: tuple[int, int] | None = None
    planner_version: str = "1.0.0"

    @property
    def plane_code(self) -> str:
        return self.plane[0]

    @property
    def planner_kind(self) -> str:
        """The plan file kind of the official families (the reader asks the family's builder)."""
        return PLANNER_KIND.get(self.task, "detection")

    def hf_config(self, split: str = "test") -> str:
        """The official Hugging Face config name, e.g. 'KiTS23_BoxSize_Task01_Axial_Test'."""
        base = self.name.rsplit("-", 1)[0] if self.reshape_hw else self.name  # resizing is an eval option
        return f"{base}_{split.capitalize()}"


def parse_config_name(name: str) -> dict[str, Any]:
    """Split an official config/eval-task name into its parts; raises ValueError if malformed."""
    base = re.sub(r"_(Train|Test)$", "", name)
    m = _NAME_RE.match(base)
    if not m:
        raise ValueError(f"not a MedVision config name: {name!r}")
    kind = m["kind"]
    family = {"BoxSize": "detection", "BoxCoordinate": "detection", "TumorLesionSize": "tl_size",
              "BiometricsFromLandmarks": "ad_measure"}[kind]
    metric = m["metric"].lower() if m["metric"] else None
    canonical = f"{m['dataset']}_{KIND_BY_FAMILY[family]}"
    if metric:
        canonical += f"_{m['metric']}"
    canonical += f"_Task{int(m['task']):02d}_{m['plane']}{m['rest']}"
    reshape = (int(m["rh"]), int(m["rw"])) if m["resize"] else None
    if reshape:
        canonical += f"-{reshape[0]}x{reshape[1]}"
    return {"dataset": m["dataset"], "task": family, "task_id": int(m["task"]), "plane": m["plane"],
            "metric_type": metric, "name": canonical, "reshape_hw": reshape}


class Catalogue:
    """Configs by family, in the paper's list order; selectors resolve names, datasets and lists."""

    def __init__(self, configs: Iterable[BenchmarkConfig], *, aliases: dict[str, str] | None = None,
                 restricted: dict[str, str] | None = None, local: Iterable[str] = ()) -> None:
        self._configs: dict[str, BenchmarkConfig] = {}
        for cfg in configs:
            self._configs[cfg.name] = cfg
        self.aliases = dict(aliases or {})
        self.restricted = dict(restricted or {})
        self.local = tuple(n for n in local if n in self._configs)  # configs the data root declared

    def __len__(self) -> int:
        return len(self._configs)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except KeyError:
            return False
        return True

    def all(self) -> list[BenchmarkConfig]:
        return list(self._configs.values())

    def get(self, name: str) -> BenchmarkConfig:
        if name in self._configs:
            return self._configs[name]
        try:
            canonical = parse_config_name(name)["name"]
        except ValueError:
            raise KeyError(name) from None
        if canonical in self._configs:
            return self._configs[canonical]
        raise KeyError(name)

    def datasets(self, task: str | None = None) -> list[str]:
        seen: dict[str, None] = {}
        for cfg in self._configs.values():
            if task is None or cfg.task == task:
                seen.setdefault(cfg.dataset, None)
        return list(seen)

    def list_names(self, task: str) -> list[str]:
        names: dict[str, None] = {}
        for cfg in self._configs.values():
            if cfg.task == task:
                for lst in cfg.lists:
                    names.setdefault(lst, None)
        return list(names)

    def _family(self, task: str) -> list[BenchmarkConfig]:
        found = [c for c in self._configs.values() if c.task == task]
        if not found:
            known = ", ".join(dict.fromkeys(c.task for c in self._configs.values()))
            raise ValueError(f"unknown task family {task!r}: no benchmark configs of it are known; families with configs: {known}")
        return found

    def configs(self, task: str, selector: str | None = None) -> list[BenchmarkConfig]:
        family = self._family(task)
        if selector is None or selector == "":
            local = [c for c in family if c.name in self.local]
            if local:
                return local
            return [c for c in family if "paper" in c.lists]
        if selector in ("all", "*"):
            return family
        if selector in self.list_names(task):
            return [c for c in family if selector in c.lists]
        dataset = self.aliases.get(selector, selector)
        by_dataset = [c for c in family if c.dataset == dataset]
        if by_dataset:
            in_paper = [c for c in by_dataset if "paper" in c.lists or c.name in self.local]
            return in_paper or by_dataset
        try:
            cfg = self.get(selector)
        except KeyError:
            cfg = None
        if cfg is not None and cfg.task == task:
            return [cfg]
        if dataset in self.restricted:
            raise ValueError(f"{task}:{selector}: {self.restricted[dataset]}")
        lists = sorted(self.list_names(task))
        datasets = sorted((set(self.datasets(task)) | set(self.aliases)) - set(lists))
        raise ValueError(
            f"unknown selector {selector!r} for task {task!r}; valid selectors: a dataset ({', '.join(datasets)}), "
            f"a named task list ({', '.join(lists)}), all, or a config name such as {family[0].name!r} "
            "(medvision-eval list configs)"
            if family else f"unknown selector {selector!r}: no {task} configs are known"
        )

    def merged(self, extra: Iterable[BenchmarkConfig], *, local: bool = True) -> "Catalogue":
        extra = list(extra)
        return Catalogue([*self._configs.values(), *extra], aliases=self.aliases, restricted=self.restricted,
                         local=[*self.local, *([c.name for c in extra] if local else [])])


def _config_from_parts(parts: dict[str, Any], entry: dict[str, Any] | None, *, lists: tuple[str, ...],
                       count: int | None, restricted: dict[str, str], version: str) -> BenchmarkConfig:
    entry = entry or {}
    dataset = parts["dataset"]
    return BenchmarkConfig(
        name=parts["name"], task=parts["task"], dataset=dataset, task_id=parts["task_id"], plane=parts["plane"],
        slice_axis=PLANES[parts["plane"]], modality=normalise_modality(entry.get("modality", "")),
        image_description=entry.get("description", ""),
        labels={int(k): v for k, v in entry.get("labels", {}).items()},
        restricted=dataset in restricted, restricted_note=restricted.get(dataset, ""), lists=lists,
        paper_count=count, metric_type=parts["metric_type"], verified=bool(entry.get("verified", False)),
        planner_version=version, reshape_hw=parts.get("reshape_hw"),
    )


@lru_cache(maxsize=1)
def _builtin() -> Catalogue:
    raw = json.loads(resources.files("medvision_eval.data").joinpath("catalogue/paper.json").read_text())
    version = raw.get("planner_version", "1.0.0")
    restricted = raw.get("restricted", {})
    member: dict[str, dict[str, Any]] = {}
    for family, lists in raw["lists"].items():
        for list_name, entries in lists.items():
            for name, count in entries.items():
                parts = parse_config_name(name)
                if parts["task"] != family:
                    raise ValueError(f"catalogue: {name} listed under {family}")
                rec = member.setdefault(parts["name"], {"parts": parts, "lists": [], "count": None})
                rec["lists"].append(list_name)
                if list_name == "paper" or rec["count"] is None:
                    rec["count"] = int(count)
    configs = []
    for rec in member.values():
        parts = rec["parts"]
        entry = raw["datasets"].get(parts["dataset"], {}).get(parts["task"], {}).get(str(parts["task_id"]))
        if entry is None:
            raise ValueError(f"catalogue: no task entry for {parts['name']}")
        configs.append(_config_from_parts(parts, entry, lists=tuple(rec["lists"]), count=rec["count"],
                                          restricted=restricted, version=version))
    return Catalogue(configs, aliases=raw.get("aliases", {}), restricted=restricted)


def official_lists() -> dict[str, dict[str, dict[str, int]]]:
    """The official task lists (tasks_list/*.json at c221615): family -> list -> config -> count."""
    raw = json.loads(resources.files("medvision_eval.data").joinpath("catalogue/paper.json").read_text())
    return {family: {name: dict(entries) for name, entries in lists.items()} for family, lists in raw["lists"].items()}


def builtin_catalogue() -> Catalogue:
    """The paper's configs (detection 28 + planeOOD/taskOOD, T/L 10 + OOD, A/D 5)."""
    return _builtin()


def read_catalogue_file(path: str | Path) -> list[BenchmarkConfig]:
    """Configs a data root declares in its ``catalogue.json`` (a list of BenchmarkConfig dumps)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        items = data["configs"] if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"expected a list of configs, got {type(items).__name__}")
        return [BenchmarkConfig.model_validate(item) for item in items]
    except (ValueError, KeyError, TypeError) as exc:  # JSON, UTF-8 and pydantic errors are ValueErrors
        if isinstance(exc, KeyError):
            what = f"no {exc} key"
        elif isinstance(exc, ValidationError):
            first = exc.errors()[0]
            what = f"config field {'.'.join(map(str, first['loc'])) or '(root)'}: {first['msg']}"
        else:
            what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a valid catalogue file: {what}; fix it or remove it "
                         f"(the built-in catalogue needs no {CATALOGUE_FILE})") from exc


def write_catalogue_file(path: str | Path, configs: Iterable[BenchmarkConfig]) -> None:
    payload = {"configs": [c.model_dump(mode="json") for c in configs]}
    Path(path).write_text(json.dumps(payload, indent=1, sort_keys=True))


def load_catalogue(root: str | Path | None = None) -> Catalogue:
    """Built-in catalogue plus the configs of ``root/catalogue.json`` if present."""
    base = builtin_catalogue()
    if root is None:
        return base
    path = Path(root) / CATALOGUE_FILE
    if not path.is_file():
        return base
    return base.merged(read_catalogue_file(path))
