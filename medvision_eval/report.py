"""The report step: tables from one or many ``results.json`` files (terminal, Markdown, CSV)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .metric_names import matches
from .results import RunResults, TaskResult, load_results

__all__ = ["load_results", "print_results", "leaderboard_rows", "rows_table", "to_csv", "to_markdown"]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def parse_line(stats: dict[str, int]) -> str:
    total = sum(stats.values())
    parts = [f"{k} {v}" for k, v in stats.items() if v]
    return f"{total} samples: " + ", ".join(parts) if parts else f"{total} samples"


def task_table(name: str, task: TaskResult) -> Table:
    table = Table(title=f"{name}  [{task.protocol}]  {parse_line(task.parse_stats)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for metric, iv in task.metrics.items():
        table.add_row(metric, fmt(iv.value), f"[{fmt(iv.low)}, {fmt(iv.high)}]")
    return table


def rows_table(title: str, rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title=title)
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[fmt(row.get(c)) for c in columns])
    return table


def print_results(results: RunResults, console: Console, *, tables: bool = False) -> None:
    counts = results.counts
    console.print(
        f"[bold]{results.model.name}[/bold]  protocol={results.protocol.get('name')}  "
        f"planned={counts.planned} answered={counts.answered} "
        f"errors={counts.errors} no_response={counts.no_response}"
    )
    for name, task in results.tasks.items():
        console.print(task_table(name, task))
        if tables:
            for title, rows in task.tables.items():
                if rows:
                    console.print(rows_table(f"{name}: {title}", rows))
        for note in task.notes:
            console.print(f"  [dim]{note}[/dim]")


def leaderboard_rows(all_results: Sequence[tuple[str, RunResults]], metrics: Sequence[str] | None) -> list[dict]:
    """One row per run; ``metrics`` selects headline keys (``all/IoU``) or names in scope all (``IoU``)."""
    rows = []
    for source, res in all_results:
        row: dict[str, Any] = {"run": source, "model": res.model.name, "protocol": res.protocol.get("name")}
        for task_name, task in res.tasks.items():
            for metric, iv in task.metrics.items():
                if metrics and not any(matches(metric, m) for m in metrics):
                    continue
                finite = iv.value is not None and math.isfinite(iv.value)
                row[f"{task_name}:{metric}"] = iv.value if finite else None
        rows.append(row)
    return rows


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(out) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return buf.getvalue()


# -- the multi-run report: one table per task family in the paper's layout --------------------

SET_SHORT = {"anatomy": "anat", "T/L": "T/L", "all": ""}


def _set_short(name: str) -> str:
    """Column header for a set, at most 6 characters: ``anat``, ``T/L``, ``CephD``, ``CephA``, ``FeTAD``."""
    if name in SET_SHORT:
        return SET_SHORT[name]
    base, _, kind = name.rpartition("-")
    base = base.removeprefix("Demo") or base
    return f"{base[:4]}{(kind[:1] or '?').upper()}"


def family_table(family: str, runs: Sequence[Any], metrics: Sequence[str] | None = None) -> Table | None:
    """Models as rows, the paper's set x metric columns; n and protocol per row. None if no run has it."""
    from rich import box

    from .summary import FAMILY_TITLES, family_metrics, family_sets, fmt_value

    rows = [(run, run.rows().get(family)) for run in runs]
    rows = [(run, row) for run, row in rows if row is not None]
    if not rows:
        return None
    sets = family_sets([r for _, r in rows], family)
    columns = [m for m in family_metrics(family) if not metrics or m in metrics]
    if not columns:
        return None
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("model", no_wrap=True, overflow="fold")
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("protocol", no_wrap=True)
    for s in sets:
        for m in columns:
            head = SHORT_HEAD.get(m, m)
            label = _set_short(s)
            table.add_column(f"{label}\n{head}" if label else head, justify="right", no_wrap=True)
    for run, row in rows:
        pooled = any(s in row.pooled for s in sets)
        cells = [escape_cell(run.model) + ("*" if pooled else ""), str(row.total_n()), run.protocol]
        for s in sets:
            for m in columns:
                cells.append(fmt_value(m, row.cell(s, m).value))
        table.add_row(*cells)
    return table


def family_heading(family: str) -> str:
    from .summary import FAMILY_TITLES

    unit = "MAE in mm (degrees for angles), other metrics in %" if family != "detection" else "all metrics in %"
    return f"[bold]{FAMILY_TITLES[family]}[/bold]  {unit}"


def family_notes(family: str, runs: Sequence[Any]) -> list[str]:
    from .summary import family_sets

    rows = [r.rows().get(family) for r in runs]
    rows = [r for r in rows if r is not None]
    notes = []
    if any(row.pooled for row in rows):
        notes.append("* a set whose groups all have < 50 samples: pooled per-sample mean over its samples "
                     "(the paper's Table 2 leaves such a set empty)")
    if family == "ad_measure":
        sets = family_sets(rows, family)
        notes.append("sets: " + ", ".join(f"{_set_short(s)} = {s}" for s in sets))
    return notes


SHORT_HEAD = {"Recall": "R", "Precision": "P", "IoU>=0.5": "IoU>.5", "MRE<0.1": "<0.1", "MRE<0.2": "<0.2",
              "MRE<0.3": "<0.3"}


def escape_cell(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_multi_report(paths: Sequence[Path], console: Console, metrics: Sequence[str] | None = None) -> None:
    """The terminal report of several runs: a warning line when they are not comparable."""
    from .summary import ScoredRun, comparability, comparability_text, incomparable_reasons

    runs = [ScoredRun.load(Path(p).parent if Path(p).is_file() else Path(p)) for p in paths]
    keys = [comparability(r.results) for r in runs]
    reasons = incomparable_reasons(keys)
    if reasons:
        console.print(f"[yellow]warning: these runs are not comparable: {'; '.join(reasons)} — "
                      "do not rank them against each other[/yellow]", highlight=False)
    else:
        console.print(f"runs comparable: {comparability_text(keys[0])}", highlight=False)
    for family in ("detection", "tl_size", "ad_measure"):
        table = family_table(family, runs, metrics)
        if table is not None:
            console.print(family_heading(family), highlight=False)
            console.print(table)
            for note in family_notes(family, runs):
                console.print(f"  [dim]{note}[/dim]", highlight=False)
    ns = {r.model: sorted({row.total_n() for row in r.rows().values()}) for r in runs}
    if len({tuple(v) for v in ns.values()}) > 1:
        console.print("[yellow]warning: runs differ in sample counts (n); compare like with like[/yellow]")
