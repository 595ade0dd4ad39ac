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

from .store import RESULTS, read_json


def load_results(path: Path) -> dict[str, Any]:
    path = Path(path)
    file = path / RESULTS if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{file} not found (run 'medvision-eval score {path}' first?)")
    return read_json(file)


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


def task_table(name: str, task: dict[str, Any]) -> Table:
    table = Table(title=f"{name}  [{task.get('protocol', '')}]  {parse_line(task.get('parse_stats', {}))}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for metric, iv in task.get("metrics", {}).items():
        table.add_row(metric, fmt(iv.get("value")), f"[{fmt(iv.get('low'))}, {fmt(iv.get('high'))}]")
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


def print_results(results: dict[str, Any], console: Console, *, tables: bool = False) -> None:
    model = results.get("model", {}).get("name", "?")
    counts = results.get("counts", {})
    console.print(
        f"[bold]{model}[/bold]  protocol={results.get('protocol', {}).get('name')}  "
        f"planned={counts.get('planned')} answered={counts.get('answered')} "
        f"errors={counts.get('errors')} no_response={counts.get('no_response')}"
    )
    for name, task in results.get("tasks", {}).items():
        console.print(task_table(name, task))
        if tables:
            for title, rows in task.get("tables", {}).items():
                if rows:
                    console.print(rows_table(f"{name}: {title}", rows))
        for note in task.get("notes", []):
            console.print(f"  [dim]{note}[/dim]")


def leaderboard_rows(all_results: Sequence[tuple[str, dict[str, Any]]], metrics: Sequence[str] | None) -> list[dict]:
    rows = []
    for source, res in all_results:
        row: dict[str, Any] = {
            "run": source,
            "model": res.get("model", {}).get("name"),
            "protocol": res.get("protocol", {}).get("name"),
        }
        for task_name, task in res.get("tasks", {}).items():
            for metric, iv in task.get("metrics", {}).items():
                if metrics and metric not in metrics:
                    continue
                row[f"{task_name}:{metric}"] = iv.get("value")
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
