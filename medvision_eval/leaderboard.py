"""``medvision-eval leaderboard``: LEADERBOARD.md and a static site from run directories.

Inputs (under ``--dir``, default ``leaderboard/``):

- ``runs/<name>/``: run directories as ``run`` writes them. Only what scoring reads is used
  (``run.json``, ``plan.jsonl``, ``responses*.jsonl``); every run is **re-scored from its stored
  answers with the current code** in a scratch directory, so all rows share one parser and one
  metric version. A run is *rejected*, with the reason printed and shown on the page, when its
  answers are missing (no response file, or a planned sample without any stored answer) or its
  fingerprint does not match (a plan entry's cache key is not what the current task definition
  gives for that model, sample, prompt and generation settings: the answers were produced for
  other prompts), or when a stored prompt does not hash to its ``prompt_hash``.
- ``reported/*.json``: numbers reported in papers (the MedVision paper's Tables 2-4), each
  table with its citation. They are shown as they are, marked *reported*, never re-computed.

Outputs: ``LEADERBOARD.md`` (next to ``--dir``), ``<dir>/index.html``, ``<dir>/plots/*.svg``,
``<dir>/leaderboard.json``. The build is deterministic (no timestamps; seeded bootstrap;
byte-stable SVG), so ``--check`` can compare the committed files with what the inputs produce.

Rows are grouped by what makes them comparable (protocol, data identity, ``--limit``, the
harness version that planned the run); only rows of one group are ranked against each other.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .summary import (
    FAMILIES,
    FAMILY_TITLES,
    LOWER_IS_BETTER,
    SHORT,
    ScoredRun,
    comparability,
    comparability_text,
    family_metrics,
    family_sets,
    fmt_interval,
    fmt_value,
)

MARKDOWN = "LEADERBOARD.md"
INDEX = "index.html"
DATA = "leaderboard.json"
PLOTS = "plots"
RUNS = "runs"
REPORTED = "reported"
RANK_BY = {"detection": ("anatomy", "F1"), "tl_size": ("all", "MRE"), "ad_measure": (None, "MRE")}
PAPER_GROUP = {"protocol": "paper", "data": "MedVision", "limit": "1000"}


class LeaderboardError(ValueError):
    """Bad leaderboard input (missing directory, unreadable reported file)."""


@dataclass
class Rejected:
    name: str
    reason: str


@dataclass
class Entry:
    name: str
    run: ScoredRun
    key: dict[str, str]

    @property
    def label(self) -> str:
        return self.run.model if self.run.model == self.name else f"{self.run.model} ({self.name})"


@dataclass
class Board:
    entries: list[Entry] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    reported: list[dict[str, Any]] = field(default_factory=list)

    def groups(self) -> list[tuple[dict[str, str], list[Entry]]]:
        out: dict[str, tuple[dict[str, str], list[Entry]]] = {}
        for e in self.entries:
            out.setdefault(json.dumps(e.key, sort_keys=True), (e.key, []))[1].append(e)
        return [out[k] for k in sorted(out)]


# -- validating and re-scoring runs ------------------------------------------------------------

def validate_run(run_dir: Path, registry: Any) -> str | None:
    """The reason a run directory cannot enter the leaderboard, or None."""
    from .protocol import Protocol
    from .runner import build_task
    from .schema import stable_hash
    from .store import PLAN, RUN_CONFIG, cache_key, load_plan, load_responses, read_json, response_files

    if not (run_dir / RUN_CONFIG).exists():
        return f"no {RUN_CONFIG}: not a medvision-eval run directory"
    if not (run_dir / PLAN).exists():
        return f"no {PLAN}: the run's samples are missing"
    if not response_files(run_dir):
        return "answers missing: no responses.jsonl"
    try:
        record = read_json(run_dir / RUN_CONFIG)
        protocol = Protocol.model_validate(record["protocol"])
        plan = load_plan(run_dir)
        responses = load_responses(run_dir)
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable run files: {str(exc).splitlines()[0]}"
    if not plan:
        return f"{PLAN} plans no sample"
    missing = [e for e in plan if e.key not in responses]
    if missing:
        return (f"answers missing: {len(missing)} of {len(plan)} planned samples have no stored answer "
                f"(first: {missing[0].task} {missing[0].sample.id})")
    fingerprints: dict[str, str] = {}
    for entry in plan:
        if entry.task not in fingerprints:
            try:
                fingerprints[entry.task] = build_task(registry, entry.task, protocol).fingerprint()
            except Exception as exc:  # unknown task (plugin not installed) and the like
                return f"task {entry.task!r} cannot be scored here: {exc}"
        if entry.prompt is not None and stable_hash(entry.prompt) != entry.prompt_hash:
            return f"sample {entry.task} {entry.sample.id}: the stored prompt does not hash to its prompt_hash"
        key = cache_key(record.get("model_identity") or {}, fingerprints[entry.task], entry.sample.id,
                        entry.prompt_hash, record.get("generation") or {})
        if key != entry.key:
            return (f"fingerprint mismatch: sample {entry.task} {entry.sample.id} was answered under another "
                    f"task definition, model identity or generation settings than run.json and this "
                    f"medvision-eval give (task fingerprint now {fingerprints[entry.task]}); re-run it")
    return None


def rescore(run_dir: Path, scratch: Path, registry: Any) -> ScoredRun:
    """Score a copy of the run's inputs with the current code; the committed directory is untouched."""
    from .scoring import score_run
    from .store import PLAN, RUN_CONFIG, response_files

    scratch.mkdir(parents=True)
    for path in [run_dir / RUN_CONFIG, run_dir / PLAN, *response_files(run_dir)]:
        shutil.copyfile(path, scratch / path.name)
    results = score_run(scratch, registry=registry)
    return ScoredRun.load(scratch, results)


def load_reported(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("*.json")) if directory.exists() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise LeaderboardError(f"{path}: not JSON ({exc})") from None
        for field_name in ("citation", "tables"):
            if field_name not in data:
                raise LeaderboardError(f"{path}: field {field_name!r} missing (every reported row needs its citation)")
        data["_file"] = path.name
        out.append(data)
    return sorted(out, key=lambda d: (d.get("order", 0), d["_file"]))  # "order": the file's place on the page


def collect(directory: Path, *, scratch: Path) -> Board:
    from .plugins import Registry

    registry = Registry.discover()
    board = Board(reported=load_reported(directory / REPORTED))
    runs_dir = directory / RUNS
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.exists() else []:
        reason = validate_run(run_dir, registry)
        if reason is not None:
            board.rejected.append(Rejected(run_dir.name, reason))
            continue
        run = rescore(run_dir, scratch / run_dir.name, registry)
        board.entries.append(Entry(run_dir.name, run, comparability(run.results)))
    return board


# -- ranking -----------------------------------------------------------------------------------

def rank_key(entry: Entry, family: str) -> tuple[int, float, str]:
    row = entry.run.rows().get(family)
    set_name, metric = RANK_BY[family]
    if row is not None and set_name is None:
        set_name = family_sets([row], family)[0] if row.sets else None
    value = row.cell(set_name, metric).value if row is not None and set_name else None
    if value is None:
        return (1, 0.0, entry.name)
    return (0, value if metric in LOWER_IS_BETTER else -value, entry.name)


def rank_text(family: str) -> str:
    set_name, metric = RANK_BY[family]
    where = f"{set_name} " if set_name and set_name != "all" else ("first set's " if set_name is None else "")
    return f"ranked by {where}{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)"


# -- Markdown ----------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _reported_rows(reported: dict[str, Any], family: str) -> tuple[str, list[str], list[str], list[tuple[str, list[float]]]] | None:
    table = reported["tables"].get({"detection": "table2", "tl_size": "table3", "ad_measure": "table4"}[family])
    if not table:
        return None
    metrics = table["metrics"]
    sets = table.get("sets") or ["all"]
    rows = []
    for r in table["rows"]:
        values: list[float] = []
        for s in sets:
            values += r[s] if s != "all" else r["values"]
        rows.append((r["model"], values))
    return table["title"], sets, metrics, rows


def _num(v: Any) -> str:
    return "—" if v is None else str(v)


def markdown(board: Board) -> str:
    out = ["# MedVision leaderboard", ""]
    out.append(f"Generated by `medvision-eval leaderboard` (medvision-eval {__version__}) from "
               f"`leaderboard/runs/*` ({len(board.entries)} runs, each re-scored from its stored answers "
               f"with this version) and `leaderboard/reported/*.json`. Do not edit by hand: CI runs "
               "`medvision-eval leaderboard --check`. The page with plots: `leaderboard/index.html`.")
    out.append("")
    out.append("Rows are grouped by what makes them comparable — protocol, data (the bundled demo data or "
               "MedVision), `--limit`, and the harness version that planned the run. Rows of different "
               "groups are never ranked together: different prompts/parsers, images or sample sets give "
               "numbers that cannot be compared. Reported rows are the paper's numbers as published "
               "(marked *reported*, with their citation); n and 95 % intervals are shown where per-sample "
               "data exists (reproduced runs).")
    out.append("")
    for family in FAMILIES:
        out.append(f"## {FAMILY_TITLES[family]}")
        out.append("")
        for rep in board.reported:
            got = _reported_rows(rep, family)
            if got is None:
                continue
            title, sets, metrics, rows = got
            out.append(f"### Reported — {_md_escape(title)}")
            out.append("")
            out.append(f"Source: {_md_escape(rep['citation'])} Group: protocol {rep.get('protocol', '?')} · "
                       f"data {_md_escape(rep.get('data', '?'))}. Units: {_md_escape(rep.get('units', ''))}")
            out.append("")
            heads = [f"{s} {SHORT.get(m, m)}" if s != "all" else SHORT.get(m, m) for s in sets for m in metrics]
            out.append("| model | source | " + " | ".join(_md_escape(h) for h in heads) + " |")
            out.append("|---|---|" + "---:|" * len(heads))
            for name, values in rows:
                out.append(f"| {_md_escape(name)} | reported | " + " | ".join(_num(v) for v in values) + " |")
            for e in paper_comparable(board, rep):
                row = e.run.rows().get(family)
                if row is not None:
                    cells = [fmt_value(m, row.cell(s, m).value) for s in sets for m in metrics]
                    out.append(f"| {_md_escape(e.label)} | reproduced, n={row.total_n()} | " + " | ".join(cells) + " |")
            out.append("")
        for i, (key, entries) in enumerate(board.groups(), 1):
            present = [e for e in entries if family in e.run.rows()]
            if not present:
                continue
            rows = [e.run.rows()[family] for e in present]
            sets = family_sets(rows, family)
            metrics = family_metrics(family)
            out.append(f"### Group {i}: {comparability_text(key)}")
            out.append("")
            out.append(f"Reproduced runs, {rank_text(family)}; values with 95 % bootstrap intervals; "
                       f"{'MAE in mm (degrees for angles), ' if family != 'detection' else ''}other metrics in %.")
            out.append("")
            heads = [f"{s} {SHORT.get(m, m)}" if s != "all" else SHORT.get(m, m) for s in sets for m in metrics]
            out.append("| # | model | run | n | " + " | ".join(_md_escape(h) for h in heads) + " |")
            out.append("|---:|---|---|---:|" + "---:|" * len(heads))
            for rank, e in enumerate(sorted(present, key=lambda e: rank_key(e, family)), 1):
                row = e.run.rows()[family]
                cells = []
                for s in sets:
                    for m in metrics:
                        c = row.cell(s, m)
                        cells.append(f"{fmt_value(m, c.value)} {fmt_interval(m, c)}".strip())
                mark = "*" if row.pooled else ""
                out.append(f"| {rank} | {_md_escape(e.run.model)}{mark} | `{e.name}` | {row.total_n()} | " + " | ".join(cells) + " |")
            if any(r.pooled for r in rows):
                out.append("")
                out.append("\\* set rows pooled over the set's samples: every group has fewer than 50 samples, "
                           "where the paper's Table 2 row would be empty.")
            out.append("")
    if board.rejected:
        out.append("## Rejected runs")
        out.append("")
        for r in board.rejected:
            out.append(f"- `{r.name}`: {_md_escape(r.reason)}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def paper_comparable(board: Board, reported: dict[str, Any]) -> list[Entry]:
    """Runs reproducing a reported setting (``protocol: paper``, MedVision, ``--limit 1000``): shown
    beside those reported rows, not ranked with them. Other reported sets get no reproduced rows."""
    if reported.get("protocol") != PAPER_GROUP["protocol"]:
        return []
    return [e for e in board.entries if all(e.key[k] == v for k, v in PAPER_GROUP.items())]


# -- HTML --------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1f24;background:#fafbfc}
main{max-width:1280px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 8px} h2{margin-top:36px;border-bottom:2px solid #d0d7de;padding-bottom:4px}
h3{margin:22px 0 6px;font-size:16px}
table{border-collapse:collapse;margin:8px 0 4px;font-variant-numeric:tabular-nums;background:#fff}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f0f3f6} td.l,th.l{text-align:left}
tr.reported td{color:#57606a} tr.reproduced td{background:#eef6ff}
.ci{color:#6e7781;font-size:11px;display:block}
.note{color:#57606a;font-size:13px;max-width:1000px}
.group{border-left:4px solid #0969da;padding-left:12px;margin:14px 0}
.rejected{color:#a40e26}
img.plot{max-width:100%;background:#fff;border:1px solid #d0d7de;margin:6px 0}
.scroll{overflow-x:auto}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_page(board: Board, plot_files: dict[str, list[tuple[str, str]]]) -> str:
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    '<meta name="viewport" content="width=device-width, initial-scale=1">',
                    "<title>MedVision leaderboard</title>", f"<style>{CSS}</style></head><body><main>"]
    p.append("<h1>MedVision leaderboard</h1>")
    p.append(f'<p class="note">Generated by <code>medvision-eval leaderboard</code> (medvision-eval {_h(__version__)}) '
             f"from {len(board.entries)} run directories, each re-scored from its stored answers with this version, "
             "and from the numbers reported in the MedVision paper. Rows are grouped by what makes them comparable "
             "(protocol, data, <code>--limit</code>, harness version); rows of different groups are never ranked "
             "together, because different prompts and parsers, images or sample sets give numbers that cannot be "
             "compared. Reported rows are shown as published, with their citation.</p>")
    groups = board.groups()
    if groups:
        p.append('<h2 id="groups">Comparability groups</h2><ul>')
        for i, (key, entries) in enumerate(groups, 1):
            p.append(f"<li><b>Group {i}</b>: {_h(comparability_text(key))} — runs: "
                     + ", ".join(f"<code>{_h(e.name)}</code>" for e in entries) + "</li>")
        for rep in board.reported:
            p.append(f"<li><b>Reported</b> ({_h(rep['_file'])}): protocol {_h(rep.get('protocol', '?'))} · "
                     f"data {_h(rep.get('data', '?'))} — numbers as published, no per-sample data</li>")
        p.append("</ul>")
        if len(groups) > 1 or board.reported:
            p.append('<p class="note">Why separate: ' + "; ".join(_why(groups, board)) + "</p>")
    for family in FAMILIES:
        p.append(f'<h2 id="{family}">{_h(FAMILY_TITLES[family])}</h2>')
        for rep in board.reported:
            got = _reported_rows(rep, family)
            if got is None:
                continue
            title, sets, metrics, rows = got
            p.append(f'<h3>Reported — {_h(title)}</h3><p class="note">Source: {_h(rep["citation"])} '
                     f'<br>Transcribed from: {_h(rep.get("transcribed_from", ""))}<br>Units: {_h(rep.get("units", ""))}</p>')
            p.append('<div class="scroll"><table><thead><tr><th class="l" rowspan="2">model</th><th class="l" rowspan="2">source</th>')
            p.append("".join(f'<th colspan="{len(metrics)}">{_h(s)}</th>' for s in sets if s != "all") + "</tr><tr>")
            p.append("".join(f"<th>{_h(SHORT.get(m, m))}</th>" for _ in sets for m in metrics) + "</tr></thead><tbody>")
            for name, values in rows:
                p.append(f'<tr class="reported"><td class="l">{_h(name)}</td><td class="l">reported</td>'
                         + "".join(f"<td>{_h(_num(v))}</td>" for v in values) + "</tr>")
            for e in paper_comparable(board, rep):
                row = e.run.rows().get(family)
                if row is not None:
                    p.append(f'<tr class="reproduced"><td class="l">{_h(e.label)}</td><td class="l">reproduced, n={row.total_n()}</td>'
                             + "".join(_html_cell(m, row.cell(s, m)) for s in sets for m in metrics) + "</tr>")
            p.append("</tbody></table></div>")
        for i, (key, entries) in enumerate(groups, 1):
            present = [e for e in entries if family in e.run.rows()]
            if not present:
                continue
            rows = [e.run.rows()[family] for e in present]
            sets = family_sets(rows, family)
            metrics = family_metrics(family)
            p.append(f'<div class="group"><h3>Group {i}: {_h(comparability_text(key))}</h3>')
            p.append(f'<p class="note">Reproduced runs, {_h(rank_text(family))}; 95 % bootstrap intervals under each value; '
                     f"{'MAE in mm (degrees for angles), ' if family != 'detection' else ''}other metrics in %.</p>")
            p.append('<div class="scroll"><table><thead><tr><th rowspan="2">#</th><th class="l" rowspan="2">model</th>'
                     '<th class="l" rowspan="2">run</th><th rowspan="2">n</th>')
            p.append("".join(f'<th colspan="{len(metrics)}">{_h(s)}</th>' if s != "all" else f'<th colspan="{len(metrics)}">all</th>'
                             for s in sets) + "</tr><tr>")
            p.append("".join(f"<th>{_h(SHORT.get(m, m))}</th>" for _ in sets for m in metrics) + "</tr></thead><tbody>")
            for rank, e in enumerate(sorted(present, key=lambda e: rank_key(e, family)), 1):
                row = e.run.rows()[family]
                p.append(f'<tr><td>{rank}</td><td class="l">{_h(e.run.model)}{"*" if row.pooled else ""}</td>'
                         f'<td class="l"><code>{_h(e.name)}</code></td><td>{row.total_n()}</td>'
                         + "".join(_html_cell(m, row.cell(s, m)) for s in sets for m in metrics) + "</tr>")
            p.append("</tbody></table></div>")
            if any(r.pooled for r in rows):
                p.append('<p class="note">* set rows pooled over the set\'s samples: every group has fewer than 50 '
                         "samples, where the paper's Table 2 row would be empty.</p>")
            p.append("</div>")
    if plot_files:
        p.append('<h2 id="plots">Plots</h2>')
        for title, files in plot_files.items():
            p.append(f"<h3>{_h(title)}</h3>")
            for alt, rel in files:
                p.append(f'<img class="plot" src="{_h(rel)}" alt="{_h(alt)}">')
    if board.rejected:
        p.append('<h2 id="rejected">Rejected runs</h2><ul class="rejected">')
        for r in board.rejected:
            p.append(f"<li><code>{_h(r.name)}</code>: {_h(r.reason)}</li>")
        p.append("</ul>")
    p.append("</main></body></html>")
    return "\n".join(p) + "\n"


def _why(groups: list[tuple[dict[str, str], list[Entry]]], board: Board) -> list[str]:
    from .summary import incomparable_reasons

    out = []
    keys = [k for k, _ in groups]
    if len(keys) > 1:
        out += incomparable_reasons(keys)
    if board.reported:
        out.append("reported rows come from the paper's MedVision runs (--limit 1000, official code); a run on the demo "
                   "data or with another limit or protocol measures something else")
    return out


def _html_cell(metric: str, cell: Any) -> str:
    ci = fmt_interval(metric, cell)
    return f"<td>{_h(fmt_value(metric, cell.value))}" + (f'<span class="ci">{_h(ci)}</span>' if ci else "") + "</td>"


# -- build and check ---------------------------------------------------------------------------

def build(directory: Path, markdown_path: Path | None = None) -> tuple[dict[Path, bytes], Board]:
    """Every output file (path -> bytes), computed in memory."""
    from . import plots

    directory = Path(directory)
    if not directory.exists():
        raise LeaderboardError(f"{directory} not found: expected a leaderboard directory with runs/ and reported/")
    markdown_path = markdown_path or directory.parent / MARKDOWN
    with tempfile.TemporaryDirectory(prefix="medvision-leaderboard-") as tmp:
        board = collect(directory, scratch=Path(tmp))
        files: dict[Path, bytes] = {}
        plot_files: dict[str, list[tuple[str, str]]] = {}
        for i, (key, entries) in enumerate(board.groups(), 1):
            runs = [e.run for e in entries]
            names = [e.name for e in entries]
            made = []
            for stem, alt, fn in (("bars", "headline metrics with 95 % intervals per task and model", plots.bars),
                                  ("box-ratio", "detection recall/precision/F1 against box-to-image ratio", plots.box_ratio),
                                  ("tl-scatter", "tumour/lesion predicted against true diameter", plots.tl_scatter),
                                  ("ad-error", "angle/distance error by measurement", plots.ad_error)):
                rel = f"{PLOTS}/group{i}-{stem}.svg"
                files[directory / rel] = fn(runs, names)
                made.append((alt, rel))
            plot_files[f"Group {i}: {comparability_text(key)}"] = made
        for rep in board.reported:
            t2 = rep["tables"].get("table2")
            if t2:
                rel = f"{PLOTS}/reported-{Path(rep['_file']).stem}-table2.svg"
                files[directory / rel] = plots.reported_bars(t2)
                plot_files.setdefault("Reported", []).append(("the paper's Table 2 F1 per model", rel))
        files[markdown_path] = markdown(board).encode()
        files[directory / INDEX] = html_page(board, plot_files).encode()
        files[directory / DATA] = (json.dumps(data_json(board), indent=1, sort_keys=True, allow_nan=False) + "\n").encode()
    return files, board


def data_json(board: Board) -> dict[str, Any]:
    groups = []
    for key, entries in board.groups():
        groups.append({
            "comparability": key,
            "runs": [{
                "run": e.name, "model": e.run.model,
                "families": {f: {"n": row.n, "pooled_sets": row.pooled,
                                 "sets": {s: {m: c.as_json() for m, c in cells.items()} for s, cells in row.sets.items()}}
                             for f, row in e.run.rows().items()},
            } for e in entries],
        })
    return {"medvision_eval": __version__, "groups": groups,
            "rejected": [{"run": r.name, "reason": r.reason} for r in board.rejected],
            "reported": [r["_file"] for r in board.reported]}


def managed(directory: Path, markdown_path: Path) -> list[Path]:
    """Files the leaderboard owns on disk (to detect stale extras in --check)."""
    out = [markdown_path, directory / INDEX, directory / DATA]
    if (directory / PLOTS).exists():
        out += sorted((directory / PLOTS).glob("*"))
    return [p for p in out if p.exists()]


def write(files: dict[Path, bytes], directory: Path, markdown_path: Path) -> list[Path]:
    for stale in set(managed(directory, markdown_path)) - set(files):
        stale.unlink()
    changed = []
    for path, data in sorted(files.items()):
        if not path.exists() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            changed.append(path)
    return changed


def check(files: dict[Path, bytes], directory: Path, markdown_path: Path) -> list[str]:
    problems = []
    for path, data in sorted(files.items()):
        if not path.exists():
            problems.append(f"{path}: missing (the inputs produce it)")
        elif path.read_bytes() != data:
            problems.append(f"{path}: differs from what the inputs produce")
    for extra in sorted(set(managed(directory, markdown_path)) - set(files)):
        problems.append(f"{extra}: not produced by the inputs (stale)")
    return problems
