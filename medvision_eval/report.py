"""The report step: tables from one or many ``results.json`` files (terminal, Markdown, CSV)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
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
