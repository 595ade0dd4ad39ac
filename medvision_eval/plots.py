"""Plots for the leaderboard and the per-run page (matplotlib, offline, byte-stable SVG).

Every function returns SVG bytes. The same inputs give the same bytes: a fixed ``svg.hashsalt``
(element ids), no date and a fixed creator in the metadata, text kept as text.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .summary import ScoredRun, ad_set_order, fmt_value
from .tasks.groups import BOX_RATIO_BINS

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({
        "svg.hashsalt": "medvision-eval",
        "svg.fonttype": "none",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.dpi": 100,
    })
    return plt


def _svg(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "medvision-eval"})
    plt.close(fig)
    return buf.getvalue()


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def _scale(metric: str) -> float:
    return 1.0 if metric == "MAE" else 100.0


def bars(runs: Sequence[ScoredRun], names: Sequence[str] | None = None) -> bytes:
    """Per task, the headline metrics per model with their 95 % intervals (error bars)."""
    plt = _pyplot()
    names = list(names or [r.model for r in runs])
    rows = [r.rows() for r in runs]
    panels: list[tuple[str, str, list[tuple[str, str]]]] = [
        ("detection", "F1 (%)", [("anatomy", "F1"), ("T/L", "F1")]),
        ("tl_size", "MRE (%)", [("all", "MRE")]),
    ]
    ad_sets = sorted({s for rr in rows if "ad_measure" in rr for s in rr["ad_measure"].sets}, key=ad_set_order)
    panels.append(("ad_measure", "MRE (%)", [(s, "MRE") for s in ad_sets]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    titles = {"detection": "Detection", "tl_size": "Tumour/lesion size", "ad_measure": "Angle/distance"}
    for ax, (family, ylabel, series) in zip(np.atleast_1d(axes), panels):
        ax.set_title(titles[family])
        if not series or not any(family in rr for rr in rows):
            _empty(ax)
            continue
        width = 0.8 / max(1, len(names))
        x = np.arange(len(series))
        for i, (name, rr) in enumerate(zip(names, rows)):
            row = rr.get(family)
            vals, lo, hi = [], [], []
            for set_name, metric in series:
                cell = row.cell(set_name, metric) if row else None
                v = cell.value if cell and cell.value is not None else math.nan
                s = _scale(metric)
                vals.append(v * s)
                lo.append(max(0.0, (v - cell.low) * s) if cell and cell.low is not None else 0.0)
                hi.append(max(0.0, (cell.high - v) * s) if cell and cell.high is not None else 0.0)
            ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2,
                   color=COLOURS[i % len(COLOURS)], label=name, error_kw={"elinewidth": 0.8})
        ax.set_xticks(x, [f"{s} {m}" if s != "all" else m for s, m in series], rotation=15, ha="right")
        ax.set_ylabel(ylabel)
        if family != "detection":  # relative errors span orders of magnitude (angles near 0 degrees)
            ax.set_yscale("symlog", linthresh=10.0)
    np.atleast_1d(axes)[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Headline metrics with 95 % bootstrap intervals", fontsize=10)
    fig.tight_layout()
    return _svg(fig)


def _ratio_rows(run: ScoredRun) -> list[dict[str, Any]]:
    return run.results.get("tasks", {}).get("detection", {}).get("tables", {}).get("box_ratio", [])


def box_ratio(runs: Sequence[ScoredRun], names: Sequence[str] | None = None, *, per_label: bool = False) -> bytes:
    """Detection Recall / Precision / F1 against the box-to-image area ratio (the paper's label figure).

    ``per_label``: one line per label (one run); else one line per run over all labels.
    """
    plt = _pyplot()
    names = list(names or [r.model for r in runs])
    order = {b: i for i, b in enumerate(BOX_RATIO_BINS)}
    metrics = ("Recall", "Precision", "F1")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    lines: list[tuple[str, list[dict[str, Any]]]] = []
    if per_label:
        rows = _ratio_rows(runs[0]) if runs else []
        for label in sorted({r["label"] for r in rows if r["label"] != "all labels"}):
            lines.append((label, [r for r in rows if r["label"] == label]))
    else:
        for name, run in zip(names, runs):
            lines.append((name, [r for r in _ratio_rows(run) if r["label"] == "all labels"]))
    used = sorted({r["box_img_group"] for _, rows in lines for r in rows}, key=lambda b: order.get(b, 99))
    pos = {b: i for i, b in enumerate(used)}
    for ax, metric in zip(axes, metrics):
        ax.set_title(metric)
        if not used:
            _empty(ax)
            continue
        for i, (name, rows) in enumerate(lines):
            rows = sorted(rows, key=lambda r: order.get(r["box_img_group"], 99))
            xs = [pos[r["box_img_group"]] for r in rows]
            ys = [100 * r[metric] if r.get(metric) is not None else math.nan for r in rows]
            sizes = [max(8.0, min(80.0, 4.0 * r.get("sample_size", 1))) for r in rows]
            ax.plot(xs, ys, "-", color=COLOURS[i % len(COLOURS)], lw=1, label=name)
            ax.scatter(xs, ys, s=sizes, color=COLOURS[i % len(COLOURS)], zorder=3)
        ax.set_xticks(range(len(used)), used, rotation=30, ha="right")
        ax.set_xlabel("box / image area")
        ax.set_ylim(-2, 102)
    axes[0].set_ylabel("%  (marker size: samples)")
    axes[-1].legend(fontsize=7, frameon=False, loc="best")
    fig.tight_layout()
    return _svg(fig)


def tl_scatter(runs: Sequence[ScoredRun], names: Sequence[str] | None = None) -> bytes:
    """Tumour/lesion size: predicted against true diameter (major and minor), one panel per run."""
    plt = _pyplot()
    names = list(names or [r.model for r in runs])
    n = max(1, len(runs))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.4), squeeze=False)
    for ax, name, run in zip(axes[0], names, runs):
        ax.set_title(name)
        rows = [r for r in run.samples.get("tl_size", []) if r.get("values") and r.get("target")]
        if not rows:
            _empty(ax, "no parsed answers")
            continue
        true = np.array([r["target"][:2] for r in rows], dtype=float)
        pred = np.array([r["values"][:2] for r in rows], dtype=float)
        hi = float(np.nanmax(true)) * 1.3 if true.size else 1.0
        ax.plot([0, hi], [0, hi], color="#999", lw=0.8, ls="--")
        ax.scatter(true[:, 0], np.clip(pred[:, 0], 0, hi), s=10, color=COLOURS[0], label="major")
        ax.scatter(true[:, 1], np.clip(pred[:, 1], 0, hi), s=10, color=COLOURS[1], label="minor", marker="^")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("true diameter (mm)")
        ax.set_ylabel("predicted (mm, clipped to the axes)")
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _svg(fig)


def ad_error(runs: Sequence[ScoredRun], names: Sequence[str] | None = None) -> bytes:
    """Angle/distance: mean absolute error per measurement (landmark pair / triple), per run."""
    plt = _pyplot()
    names = list(names or [r.model for r in runs])
    labels = sorted({r["label"] for run in runs for r in run.samples.get("ad_measure", [])})
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.4))
    if not labels:
        _empty(ax)
        return _svg(fig)
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(runs))
    for i, (name, run) in enumerate(zip(names, runs)):
        means = []
        for lab in labels:
            errs = [r["metrics"]["MAE"] for r in run.samples.get("ad_measure", [])
                    if r["label"] == lab and (r.get("metrics") or {}).get("MAE") is not None]
            means.append(float(np.mean(errs)) if errs else math.nan)
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, means, width, color=COLOURS[i % len(COLOURS)], label=name)
    ax.set_xticks(x, labels, rotation=25, ha="right")
    ax.set_ylabel("MAE (mm or degrees)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title("Angle/distance error by measurement (parsed answers)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _svg(fig)


def reported_bars(table2: dict[str, Any]) -> bytes:
    """The paper's Table 2 F1 per model (reported numbers, no intervals: the paper gives none)."""
    plt = _pyplot()
    rows = table2["rows"]
    f1 = table2["metrics"].index("F1")
    fig, ax = plt.subplots(figsize=(9, 3.6))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["anatomy"][f1] for r in rows], 0.4, color=COLOURS[0], label="anatomy F1")
    ax.bar(x + 0.2, [r["T/L"][f1] for r in rows], 0.4, color=COLOURS[1], label="tumour/lesion F1")
    ax.set_xticks(x, [r["model"] for r in rows], rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("F1 (%)")
    ax.set_title("Reported: Table 2 detection F1 (arXiv 2511.18676v1)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _svg(fig)


__all__ = ["bars", "box_ratio", "tl_scatter", "ad_error", "reported_bars", "fmt_value"]
