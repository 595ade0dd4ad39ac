"""One scored run in the paper's layout: the rows of Tables 2, 3 and 4 with n and 95 % intervals.

Shared by the terminal ``report``, ``leaderboard`` and ``view``. A family row holds, per *set*
(Table 2: ``anatomy`` / ``T/L``; Table 3: ``all``; Table 4: one set per dataset and kind, e.g.
``Ceph-Bio-400-Distance``), one :class:`Cell` per metric of the one metric vocabulary below.

Where the run's own ``results.json`` has the number (paper arithmetic, with its bootstrap
interval) it is used as is. The one exception is a detection set whose groups all have fewer
than 50 samples (the demo data): the paper's Table 2 row is empty there, so the row shows the
pooled per-sample mean over the set's samples instead and is marked ``pooled``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .stats import mean_intervals
from .tasks import groups as G

# -- the metric vocabulary ---------------------------------------------------------------------

DETECTION_METRICS = ("Recall", "Precision", "F1", "IoU", "SR", "IoU>=0.5")
# The paper's Table 2 column heading of IoU>=0.5 (v1 computed it as IoU >= 0.5).
TABLE2_COLUMN = {"IoU>=0.5": "IoU>0.5"}
MEASURE_METRICS = ("MAE", "MRE", "SR", "MRE<0.1", "MRE<0.2", "MRE<0.3")
AD_METRICS = ("MAE", "MRE", "SR", "MRE<0.1")
KNOWN_METRICS: tuple[str, ...] = tuple(dict.fromkeys(DETECTION_METRICS + MEASURE_METRICS))
ALIASES = {"r": "Recall", "p": "Precision"}
SHORT = {"Recall": "R", "Precision": "P", "IoU>=0.5": "IoU>0.5"}  # headings as the paper prints them
LOWER_IS_BETTER = frozenset({"MAE", "MRE"})
FAMILIES = ("detection", "tl_size", "ad_measure")
FAMILY_TITLES = {
    "detection": "Detection (Table 2 layout)",
    "tl_size": "Tumour/lesion size (Table 3 layout)",
    "ad_measure": "Angle/distance (Table 4 layout)",
}


def resolve_metrics(text: str | None) -> list[str] | None:
    """``--metrics`` -> canonical names; unknown names raise ``ValueError`` listing the known ones."""
    if not text:
        return None
    out: list[str] = []
    from .metric_names import canonical as vocabulary_name

    lookup = {m.lower(): m for m in KNOWN_METRICS} | ALIASES
    unknown = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        canonical = lookup.get(vocabulary_name(name).lower(), lookup.get(name.lower()))
        if canonical is None:
            unknown.append(name)
        elif canonical not in out:
            out.append(canonical)
    if unknown:
        raise ValueError(f"--metrics: unknown metric(s) {', '.join(repr(u) for u in unknown)}; "
                         f"known: {', '.join(KNOWN_METRICS)} (R and P are short for Recall and Precision; "
                         "IoU>0.5 is accepted for IoU>=0.5)")
    if not out:
        raise ValueError(f"--metrics: no metric given; known: {', '.join(KNOWN_METRICS)}")
    return out


def is_percent(metric: str) -> bool:
    return metric not in ("MAE",)


# -- cells and rows ----------------------------------------------------------------------------

@dataclass
class Cell:
    value: float | None
    low: float | None = None
    high: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"value": _finite(self.value), "low": _finite(self.low), "high": _finite(self.high)}


@dataclass
class FamilyRow:
    family: str
    sets: dict[str, dict[str, Cell]] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    pooled: list[str] = field(default_factory=list)  # sets shown as pooled per-sample means

    def cell(self, set_name: str, metric: str) -> Cell:
        return self.sets.get(set_name, {}).get(metric, Cell(None))

    def total_n(self) -> int:
        return sum(self.n.values())


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _cell(iv: dict[str, Any] | None, value: Any = None) -> Cell:
    if iv is None:
        return Cell(_finite(value))
    return Cell(_finite(iv.get("value") if value is None else value), _finite(iv.get("low")), _finite(iv.get("high")))


# -- reading a scored run ----------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc})") from None
    return rows


@dataclass
class ScoredRun:
    """A scored run directory: results, per-sample rows per task, and the planned samples by id."""

    path: Path
    results: dict[str, Any]
    samples: dict[str, list[dict[str, Any]]]
    plan: dict[tuple[str, str], dict[str, Any]]  # (task, sample id) -> plan entry

    @classmethod
    def load(cls, run_dir: Path, results: dict[str, Any] | None = None) -> "ScoredRun":
        run_dir = Path(run_dir)
        if results is None:
            from .results import load_results

            results = load_results(run_dir)
        if hasattr(results, "model_dump"):  # the typed RunResults; this module reads its JSON form
            results = results.model_dump(mode="json")
        samples = {p.name[len("samples_"):-len(".jsonl")]: read_jsonl(p) for p in sorted(run_dir.glob("samples_*.jsonl"))}
        plan: dict[tuple[str, str], dict[str, Any]] = {}
        if (run_dir / "plan.jsonl").exists():
            for entry in read_jsonl(run_dir / "plan.jsonl"):
                plan[(entry["task"], entry["sample"]["id"])] = entry
        return cls(run_dir, results, samples, plan)

    @property
    def model(self) -> str:
        return str(self.results.get("model", {}).get("name", "?"))

    @property
    def protocol(self) -> str:
        return str(self.results.get("protocol", {}).get("name", "?"))

    def sample(self, task: str, sample_id: str) -> dict[str, Any]:
        return self.plan.get((task, sample_id), {}).get("sample", {})

    def rows(self) -> dict[str, FamilyRow]:
        """The run's family rows (computed once: pooled sets bootstrap their intervals)."""
        cached = self.__dict__.get("_rows")
        if cached is None:
            cached = self.__dict__["_rows"] = self._compute_rows()
        return cached

    def _compute_rows(self) -> dict[str, FamilyRow]:
        out: dict[str, FamilyRow] = {}
        tasks = self.results.get("tasks", {})
        if "detection" in tasks:
            out["detection"] = detection_row(tasks["detection"], self.samples.get("detection", []), self, seed=self.seed)
        if "tl_size" in tasks:
            out["tl_size"] = tl_row(tasks["tl_size"])
        if "ad_measure" in tasks:
            out["ad_measure"] = ad_row(tasks["ad_measure"], self.samples.get("ad_measure", []), self, seed=self.seed)
        return out

    @property
    def seed(self) -> int:
        return int(self.results.get("config", {}).get("seed", 0) or 0)


def detection_set_of(sample: dict[str, Any]) -> str | None:
    image = sample.get("image", {})
    plane = G.plane_letter(sample.get("plane", ""), image.get("slice_axis"))
    return G.detection_set(G.detection_group(sample.get("label", ""), sample.get("modality", ""), plane))


def _metric_array(rows: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    return np.array([np.nan if (r.get("metrics") or {}).get(name) is None else float(r["metrics"][name])
                     for r in rows], dtype=np.float64)


def detection_row(task: dict[str, Any], rows: Sequence[dict[str, Any]], run: ScoredRun, *, seed: int = 0) -> FamilyRow:
    row = FamilyRow("detection")
    metrics = task.get("metrics", {})
    table2 = {r["set"]: r for r in task.get("tables", {}).get("table2", [])}
    rows = sorted(rows, key=lambda r: r["id"])
    sets = [detection_set_of(run.sample("detection", r["id"])) for r in rows]
    for kind in ("anatomy", "T/L"):
        t2 = table2.get(kind)
        if t2 and t2.get("total_samples"):
            row.n[kind] = int(t2["total_samples"])
            row.sets[kind] = {m: _cell(metrics.get(f"{kind}/{m}"), t2.get(TABLE2_COLUMN.get(m, m)))
                              for m in DETECTION_METRICS}
            continue
        members = [r for r, s in zip(rows, sets) if s == kind]
        if not members:
            continue
        per = {m: _metric_array(members, m) for m in ("Recall", "Precision", "F1", "IoU")}
        per["SR"] = _metric_array(members, "SR") if "SR" in (members[0].get("metrics") or {}) else _metric_array(members, "success")
        iou = per["IoU"]
        per["IoU>=0.5"] = np.where(np.isnan(iou), 0.0, (iou >= 0.5).astype(np.float64))
        ivs = mean_intervals(per, seed=seed)
        row.sets[kind] = {m: Cell(_finite(ivs[m].value), _finite(ivs[m].low), _finite(ivs[m].high)) for m in DETECTION_METRICS}
        row.n[kind] = len(members)
        row.pooled.append(kind)
    return row


def tl_row(task: dict[str, Any]) -> FamilyRow:
    row = FamilyRow("tl_size")
    metrics = task.get("metrics", {})
    row.sets["all"] = {m: _cell(metrics.get(f"all/{m}", metrics.get(m))) for m in MEASURE_METRICS}
    row.n["all"] = int(task.get("n_samples", 0))
    return row


def ad_set_order(name: str) -> tuple[int, int, str]:
    return ("feta" in name.lower(), "angle" in name.lower(), name)


def ad_row(task: dict[str, Any], rows: Sequence[dict[str, Any]], run: ScoredRun, *, seed: int = 0) -> FamilyRow:
    row = FamilyRow("ad_measure")
    metrics = task.get("metrics", {})
    labels = {r["label"]: r.get("group") for r in task.get("tables", {}).get("labels", [])}
    groups = [r for r in task.get("tables", {}).get("table4", []) if r.get("group") != "Overall"]
    by_group: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        s = run.sample("ad_measure", r["id"])
        from .tasks.ad_measure import ad_label  # local: tasks import the heavy schema only when needed
        from .schema import Sample

        try:
            lab = ad_label(Sample.model_validate(s)) if s else None
        except ValueError:
            lab = None
        by_group.setdefault(labels.get(lab, "?"), []).append(r)
    for g in sorted(groups, key=lambda r: ad_set_order(r["group"])):
        name = g["group"]
        row.n[name] = int(g.get("num_samples", 0))
        cells = {m: _cell(metrics.get(f"{name}/{m}"), g.get(m)) for m in AD_METRICS}
        members = sorted(by_group.get(name, []), key=lambda r: r["id"])
        if members:  # the interval of MRE<0.1 (a rate over all samples of the group) from the samples
            mre = _metric_array(members, "MRE")
            hit = np.where(np.isnan(mre), 0.0, (mre < 0.1).astype(np.float64))
            iv = mean_intervals({"MRE<0.1": hit}, seed=seed)["MRE<0.1"]
            cells["MRE<0.1"] = Cell(cells["MRE<0.1"].value, _finite(iv.low), _finite(iv.high))
        row.sets[name] = cells
    return row


def family_sets(rows: Iterable[FamilyRow], family: str) -> list[str]:
    if family == "detection":
        return ["anatomy", "T/L"]
    if family == "tl_size":
        return ["all"]
    names: set[str] = set()
    for r in rows:
        names.update(r.sets)
    return sorted(names, key=ad_set_order)


def family_metrics(family: str) -> tuple[str, ...]:
    return {"detection": DETECTION_METRICS, "tl_size": MEASURE_METRICS, "ad_measure": AD_METRICS}[family]


def fmt_value(metric: str, value: float | None, *, digits: int = 1) -> str:
    """Paper style: rates and MRE in %, MAE as is; one decimal; large numbers without decimals."""
    if value is None:
        return "—"
    v = value * 100 if is_percent(metric) else value
    if abs(v) >= 10000:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def fmt_interval(metric: str, cell: Cell) -> str:
    if cell.low is None or cell.high is None:
        return ""
    return f"[{fmt_value(metric, cell.low)}, {fmt_value(metric, cell.high)}]"


# -- comparability -----------------------------------------------------------------------------

def data_identity(data_root: Any, data_files: Any = None) -> str:
    """``demo-1`` for the bundled demo data (its version is the directory name), ``demo`` for a
    copy of it elsewhere (its datasets are the ``Demo*`` ones), else ``MedVision``."""
    import re

    if not data_root:
        return "unknown"
    name = Path(str(data_root)).name
    m = re.fullmatch(r"demo-(\d+)", name)
    if m:
        return f"demo-{m.group(1)}"
    datasets = {f.split("/")[1] for f in (data_files or {}) if f.startswith("Datasets/") and f.count("/") >= 2}
    if datasets and all(d.startswith("Demo") for d in datasets):
        return "demo"
    return "MedVision"


def comparability(results: dict[str, Any]) -> dict[str, str]:
    """What must be equal for two runs to be ranked together."""
    selection = results.get("selection") or {}
    limit = selection.get("limit", results.get("config", {}).get("limit"))
    env = results.get("environment") or {}
    harness = (env.get("packages") or {}).get("medvision-eval") or results.get("scored_with") or "?"
    return {
        "protocol": str(results.get("protocol", {}).get("name", "?")),
        "data": data_identity(selection.get("data_root") or results.get("data_root"), selection.get("data_files")),
        "limit": "none" if limit is None else str(limit),
        "harness": str(harness),
    }


def comparability_text(key: dict[str, str]) -> str:
    return f"protocol {key['protocol']} · data {key['data']} · limit {key['limit']} · harness {key['harness']}"


def incomparable_reasons(keys: Sequence[dict[str, str]]) -> list[str]:
    """Which fields differ between the runs (empty when all are comparable)."""
    out = []
    for field_name in ("protocol", "data", "limit", "harness"):
        values = sorted({k[field_name] for k in keys})
        if len(values) > 1:
            out.append(f"{field_name} differs ({', '.join(values)})")
    return out
