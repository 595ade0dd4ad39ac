"""One vocabulary of metric names, shared by every task family, ``report`` and ``compare``.

Per-sample metrics (``samples_<task>.jsonl``) use the bare names below. Headline metrics
(``results.json`` → ``tasks.<task>.metrics``) are keyed ``<scope>/<name>``: the scope ``all``
is the task-wide number as the paper defines it (detection: every sample pooled; T/L and A/D:
the paper's "Overall" line), any other scope is a set or group of the paper's tables
(``anatomy``, ``T/L``, ``DemoCeph-Angle``). A scope may itself contain ``/``; the name is the
part after the last ``/``.

The paper-style tables keep the paper's column headings; :func:`canonical` maps those
(``IoU>0.5`` — which v1 computed as IoU ≥ 0.5) and the names of older results onto this list.
"""

from __future__ import annotations

import re

ALL = "all"

METRICS: dict[str, str] = {
    "IoU": "intersection over union of the answered box and the true box (0 for a failed answer)",
    "Precision": "share of the answered box inside the true box (0 for a failed answer)",
    "Recall": "share of the true box inside the answered box (0 for a failed answer)",
    "F1": "harmonic mean of precision and recall (0 for a failed answer)",
    "SR": "success rate: share of samples whose answer parsed",
    "MAE": "mean absolute error over parsed answers (mm, degrees, or relative box units)",
    "MRE": "mean relative error |answer - truth| / truth over parsed answers",
    "MAE_cov": "MAE over all samples, a failed answer counted as answering 0",
    "MRE_cov": "MRE over all samples, a failed answer counted as answering 0",
    "SR_cov": "SR pooled over all samples (the 'all' SR of T/L and A/D weights groups as the paper)",
    "IoU>=t": "share of samples with IoU >= t (t = 0.50 … 0.95)",
    "F1>=t": "share of samples with F1 >= t",
    "Precision>=t": "share of samples with precision >= t",
    "Recall>=t": "share of samples with recall >= t",
    "MRE<k": "share of all samples with MRE below k (v1 bins: k = 0.1 … 1.0)",
}

_THRESHOLD = re.compile(r"^(IoU|F1|Precision|Recall)>=?(\d+(?:\.\d+)?)$")
_BELOW = re.compile(r"^MRE<(\d+(?:\.\d+)?)$")
_ALIASES = {"success": "SR", "SR_all": "SR_cov"}


def canonical(name: str) -> str:
    """The vocabulary name of a metric: ``success`` -> ``SR``, ``IoU>0.5`` -> ``IoU>=0.5``."""
    name = _ALIASES.get(name, name)
    m = _THRESHOLD.match(name)
    return f"{m.group(1)}>={m.group(2)}" if m else name


def family(name: str) -> str | None:
    """The vocabulary entry a bare metric name belongs to (``IoU>=0.5`` -> ``IoU>=t``), or None."""
    if name in METRICS:
        return name
    m = _THRESHOLD.match(name)
    if m and ">=" in name:
        return f"{m.group(1)}>=t"
    if _BELOW.match(name):
        return "MRE<k"
    return None


def key(scope: str, name: str) -> str:
    """``key("all", "IoU")`` -> ``"all/IoU"``."""
    return f"{scope}/{name}"


def split(metric_key: str) -> tuple[str, str]:
    """``"T/L/IoU"`` -> (``"T/L"``, ``"IoU"``); a bare name has scope ``all``."""
    scope, sep, name = metric_key.rpartition("/")
    return (scope, name) if sep else (ALL, name)


def matches(metric_key: str, wanted: str) -> bool:
    """Whether a headline key is what a user asked for: the full key, or its name in scope ``all``."""
    if metric_key == wanted:
        return True
    scope, name = split(metric_key)
    return "/" not in wanted and scope == ALL and name == canonical(wanted)
