"""``medvision-eval``: run, score, report, compare, merge, list, leaderboard, view.

The bare form ``medvision-eval --tasks … --model …`` means ``medvision-eval run …``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from . import __version__

SUBCOMMANDS = ("run", "score", "judge", "report", "compare", "merge", "list", "leaderboard", "view")

RUN_EXAMPLES = """examples:
  medvision-eval --tasks detection,tl_size,ad_measure --model prior --output runs/prior
  medvision-eval --tasks tl_size --model medgemma-27b --limit 1000
  medvision-eval --tasks detection:KiTS23 --model hf --model-args pretrained=/models/my-vlm,dtype=bfloat16
  medvision-eval --tasks ad_measure --model openai --model-args base_url=http://127.0.0.1:8000/v1,model=qwen
  medvision-eval --tasks tl_size --model openai -M model=qwen -M 'extra_body={"top_k":1,"seed":0}'
  medvision-eval run --tasks detection --model oracle --model-args noise=0.05 --protocol corrected
  medvision-eval run --tasks detection --model qwen2.5-vl-7b --shard 0/4 --output runs/q/shard0

Re-running the same command resumes: answered samples are never sent again; failed ones are retried.
"""


def split_top_level(text: str) -> list[str]:
    """Split ``k=v,k2=v2`` on commas outside brackets, braces and quotes."""
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == "\\":
                continue
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def parse_model_arg(item: str, where: str) -> tuple[str, Any]:
    """``key=value``: a value starting with ``{``, ``[`` or ``"`` is JSON; any other stays a string
    (each adapter validates and converts its own)."""
    key, sep, value = item.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise ValueError(f"{where}: {item.strip()!r} is not key=value")
    if value[:1] in ("{", "[", '"'):
        try:
            return key, json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {key}: {value!r} is not valid JSON ({exc})") from None
    return key, value


def parse_model_args(text: str | None, pairs: Sequence[str] = ()) -> dict[str, Any]:
    """``--model-args k=v,k2=v2`` plus every ``-M key=value`` (later wins)."""
    out: dict[str, Any] = {}
    for item in split_top_level(text or ""):
        if item.strip():
            key, value = parse_model_arg(item, "--model-args")
            out[key] = value
    for item in pairs:
        key, value = parse_model_arg(item, "-M")
        out[key] = value
    return out


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", required=True, help="comma-separated task families, optionally narrowed: "
                   "detection | tl_size | ad_measure | detection:KiTS23 | ad_measure:Ceph-Bio-400")
    p.add_argument("--model", required=True, help="model or preset name ('medvision-eval list models'), "
                   "e.g. prior, oracle, random, hf, openai, qwen2.5-vl-7b, medgemma-27b")
    p.add_argument("--model-args", "--model_args", dest="model_args", default=None,
                   help="adapter arguments k=v,k2=v2, e.g. pretrained=PATH,dtype=bfloat16 or delay_s=0.01; "
                   "a value starting with { [ or \" is JSON: extra_body={\"a\":1,\"b\":2}")
    p.add_argument("-M", dest="model_arg", action="append", default=[], metavar="KEY=VALUE",
                   help="one adapter argument, repeatable (-M a=1 -M b=x); its value may contain commas")
    p.add_argument("--output", "--output_path", dest="output", default=None,
                   help="run directory (default: runs/<model>); rerunning into it resumes")
    p.add_argument("--data", default=None, help="MedVision data directory (default: $MEDVISION_DATA_DIR, "
                   "else the bundled demo data, generated on first use)")
    p.add_argument("--limit", type=int, default=None,
                   help="first N samples of each config in dataset order (the paper used 1000)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
                   help="requests per adapter call (default: the adapter's)")
    from .protocol import protocol_names

    p.add_argument("--protocol", default="paper", choices=protocol_names(),
                   help="paper: the v1 code exactly (default); corrected: fixed prompts, parser, windows; "
                        "v2: the later official protocol (its LLM-judge step: medvision-eval judge)")
    p.add_argument("--seed", type=int, default=0, help="seed for baselines and bootstrap intervals (default 0)")
    p.add_argument("--shard", type=parse_shard, default=None,
                   help="run shard i of n (by sample id); combine shard dirs with 'medvision-eval merge'")
    p.add_argument("--no-cache", action="store_true", help="send every sample again, ignoring stored answers")
    p.add_argument("--tables", action="store_true", help="also print the paper-style group tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medvision-eval",
        description="Evaluate vision-language models on MedVision: detection, tumour/lesion size, "
        "angle/distance. 'medvision-eval --tasks … --model …' is short for 'medvision-eval run …'.",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medvision-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="predict (resumable), score and print metrics",
                         epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(run)

    score = sub.add_parser("score", help="re-parse and re-score the stored responses of a run (no model)",
                           epilog="example:\n  medvision-eval score runs/prior",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("run_dir", type=Path)
    score.add_argument("--tables", action="store_true", help="also print the paper-style group tables")

    judge = sub.add_parser(
        "judge", help="re-read a run's unparsed answers with an LLM judge (strict parse first), then re-score",
        epilog="example (the judge can be any registered model, e.g. --judge openai --judge-args base_url=...,model=...):\n"
               "  medvision-eval judge runs/prior --judge oracle",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    judge.add_argument("run_dir", type=Path)
    judge.add_argument("--judge", required=True, help="any registered model (see: medvision-eval list models)")
    judge.add_argument("--judge-args", "--judge_args", dest="judge_args", default=None, type=parse_model_args,
                       help="key=value[,key=value] arguments of the judge model")
    judge.add_argument("--tables", action="store_true", help="also print the paper-style group tables")

    report = sub.add_parser("report", help="tables from one or many runs (a leaderboard)",
                            epilog="examples:\n  medvision-eval report runs/*\n"
                            "  medvision-eval report runs/a runs/b --format markdown --out leaderboard.md",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("runs", nargs="+", type=Path, help="run directories or results.json files")
    report.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    report.add_argument("--metrics", default=None, help="only these metrics (one vocabulary for all tasks): "
                        "Recall (R), Precision (P), F1, IoU, SR, IoU>=0.5, MAE, MRE, MRE<0.1, MRE<0.2, MRE<0.3; "
                        "e.g. IoU,F1,MAE,MRE")
    report.add_argument("--out", type=Path, default=None, help="write to this file instead of the terminal")
    report.add_argument("--tables", action="store_true", help="with one run: print its paper-style tables")

    compare = sub.add_parser("compare", help="paired bootstrap of two runs on their shared samples",
                             epilog="example:\n  medvision-eval compare runs/prior runs/qwen2.5-vl-7b",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")

    merge = sub.add_parser("merge", help="merge shard run directories into one and score it",
                           epilog="example:\n  medvision-eval merge runs/q runs/q/shard0 runs/q/shard1 runs/q/shard2",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    merge.add_argument("output", type=Path)
    merge.add_argument("shards", nargs="+", type=Path)

    board = sub.add_parser(
        "leaderboard", help="build LEADERBOARD.md and a static site from leaderboard/runs/* and reported numbers",
        epilog="examples:\n  medvision-eval leaderboard                # rebuild LEADERBOARD.md and leaderboard/index.html\n"
        "  medvision-eval leaderboard --check        # exit 1 if the committed files are stale, 2 if a run is rejected\n\n"
        "Every run in DIR/runs/ is re-scored from its stored answers with this version; a run whose answers are\n"
        "missing or whose fingerprint does not match is rejected with the reason.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    board.add_argument("--dir", type=Path, default=Path("leaderboard"),
                       help="leaderboard directory with runs/ and reported/ (default: leaderboard)")
    board.add_argument("--markdown", type=Path, default=None, help="Markdown output (default: DIR/../LEADERBOARD.md)")
    board.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 when the committed files differ from what the inputs produce")

    view = sub.add_parser("view", help="a per-run HTML page: tables, plots and a gallery of what the model saw",
                          epilog="examples:\n  medvision-eval view runs/prior              # writes runs/prior/view/index.html\n"
                          "  medvision-eval view runs/prior --out /tmp/prior-view --max-samples 50",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    view.add_argument("run_dir", type=Path)
    view.add_argument("--out", type=Path, default=None, help="output directory (default: RUN_DIR/view)")
    view.add_argument("--data", default=None, help="data directory the run used, if it moved (default: the run's)")
    view.add_argument("--max-samples", type=int, default=200,
                      help="gallery size per task: the worst and unparsed samples first (default 200)")

    lst = sub.add_parser("list", help="list models, tasks or benchmark configs and who provides them")
    lst.add_argument("what", choices=["models", "tasks", "configs"])
    lst.add_argument("--data", default=None, help="for configs: a data directory whose catalogue to include")
    return parser


def normalise_argv(argv: list[str]) -> list[str]:
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version"):
        return ["run", *argv]
    return argv


class RateColumn(ProgressColumn):
    """Samples per second sent to the model in this run (answers found in the store excluded)."""

    def render(self, task: Any) -> Text:
        sent = task.completed - task.fields.get("cached", 0)
        elapsed = task.finished_time if task.finished else task.elapsed
        if not sent:
            return Text("all stored" if task.finished else "– samples/s", style="progress.data.speed")
        if not elapsed:
            return Text("– samples/s", style="progress.data.speed")
        return Text(f"{sent / elapsed:,.1f} samples/s", style="progress.data.speed")


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from .runner import RunConfig, Runner
    from .scoring import cached_results, score_run

    config = RunConfig(
        tasks=args.tasks.split(","),
        model=args.model,
        model_args=parse_model_args(args.model_args, args.model_arg),
        data=args.data,
        output=args.output,
        limit=args.limit,
        batch_size=args.batch_size,
        protocol=args.protocol,
        seed=args.seed,
        no_cache=args.no_cache,
        shard=args.shard,
    )
    runner = Runner(config)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=args.quiet, transient=False) as progress:
        bars: dict[str, Any] = {}

        def update(task_name: str, done: int, total: int) -> None:
            if task_name not in bars:  # the first call reports what the store already holds
                bars[task_name] = progress.add_task(task_name, total=total, completed=done, cached=done)
            progress.update(bars[task_name], completed=done, total=total)

        summary = runner.execute(progress=update)
    console.print(
        f"predicted: {summary.sent} sent, {summary.cached} already answered, {summary.errors} errors "
        f"in {summary.seconds:.1f}s -> {summary.output}"
    )
    if summary.problems:
        console.print(f"[yellow]{len(summary.problems)} data problems (all in {summary.output / 'data_problems.txt'}):[/yellow]")
        for line in summary.problems[:5]:
            console.print(f"  {escape(line)}", highlight=False)
    if runner.rank != 0:
        return 0
    # Nothing new was answered and results.json matches the stored inputs: reuse it.
    results = (summary.sent == 0 and summary.errors == 0 and cached_results(summary.output)) or score_run(
        summary.output, registry=runner.registry
    )
    from .report import print_results

    print_results(results, console, tables=args.tables)
    console.print(f"wrote {summary.output / 'results.json'} and samples_<task>.jsonl")
    if summary.errors:
        console.print(f"[yellow]{summary.errors} samples failed; rerun the same command to retry them.[/yellow]")
    return 0


def cmd_score(args: argparse.Namespace, console: Console) -> int:
    from .report import print_results
    from .scoring import score_run

    results = score_run(args.run_dir)
    print_results(results, console, tables=args.tables)
    return 0


def cmd_judge(args: argparse.Namespace, console: Console) -> int:
    from .factory import build_adapter
    from .judge import Judge, judge_run
    from .plugins import Registry
    from .report import print_results
    from .scoring import score_run

    registry = Registry.discover()
    adapter = build_adapter(registry, args.judge, dict(args.judge_args or {}))
    summary = judge_run(args.run_dir, Judge(adapter), registry=registry)
    for task, modes in summary.items():
        console.print(f"{task}: " + ", ".join(f"{k} {v}" for k, v in sorted(modes.items())))
    print_results(score_run(args.run_dir, registry=registry), console, tables=args.tables)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from .report import leaderboard_rows, load_results, print_results, rows_table, to_csv, to_markdown

    from .summary import resolve_metrics

    metrics = resolve_metrics(args.metrics)
    loaded = [(str(p), load_results(p)) for p in args.runs]
    if args.format == "table" and len(loaded) == 1 and not args.out and not metrics:
        print_results(loaded[0][1], console, tables=args.tables)
        return 0
    if args.format == "table" and not args.out:
        from .report import print_multi_report

        print_multi_report(args.runs, console, metrics)
        return 0
    rows = leaderboard_rows(loaded, metrics)
    if args.format == "markdown":
        text = to_markdown(rows)
    elif args.format == "csv":
        text = to_csv(rows)
    elif args.format == "json":
        text = json.dumps(rows, indent=2, allow_nan=False, default=str) + "\n"
    else:
        if args.out:
            text = to_markdown(rows)
        else:
            console.print(rows_table("leaderboard", rows))
            return 0
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        console.print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from .compare import compare_runs

    result = compare_runs(args.run_a, args.run_b, seed=args.seed)
    if args.json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return 0
    from .compare import comparison_table

    console.print(comparison_table(result))
    return 0


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from .merge import merge_runs
    from .report import print_results
    from .scoring import score_run

    merged = merge_runs(args.output, args.shards)
    console.print(f"merged {merged['shards']} shards: {merged['planned']} samples, {merged['responses']} responses")
    results = score_run(args.output)
    print_results(results, console)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from .plugins import Registry, installed

    registry = Registry.discover()
    if args.what == "tasks":
        table = Table(title="tasks")
        for col in ("name", "provided by", "description"):
            table.add_column(col)
        for name, p in sorted(registry.tasks.items()):
            table.add_row(escape(name), escape(p.provider), escape(p.entry.description))
    elif args.what == "models":
        table = Table(title="models")
        for col in ("name", "backend", "installed", "provided by", "description"):
            table.add_column(col)
        for name, p in sorted(registry.models.items()):
            e = p.entry
            if e.unavailable:
                state = "needs plugin"
            elif installed(e.requires):
                state = "yes"
            else:
                state = f"no: pip install 'medvision-eval[{e.extra}]'" if e.extra else "no"
            table.add_row(*(escape(str(x)) for x in (name, e.backend, state, p.provider, e.description or e.unavailable or "")))
    else:
        from .data import MedVisionData, load_catalogue

        from .data.catalogue import official_lists

        catalogue = MedVisionData(Path(args.data)).catalogue if args.data else load_catalogue()
        lists = Table(title="official task lists (tasks_list/*.json; samples = the list's counts, before --limit)")
        for col in ("task", "list", "configs", "samples"):
            lists.add_column(col, justify="right" if col in ("configs", "samples") else "left")
        for family, named in official_lists().items():
            for name, entries in named.items():
                lists.add_row(family, name, str(len(entries)), str(sum(entries.values())))
        console.print(lists)
        table = Table(title="benchmark configs")
        for col in ("name", "task", "modality", "plane", "size", "lists", "restricted"):
            table.add_column(col)
        for c in catalogue.all():
            size = "" if c.paper_count is None else str(c.paper_count)
            table.add_row(c.name, c.task, c.modality, c.plane, size, ",".join(c.lists), "yes" if c.restricted else "")
    console.print(table)
    return 0


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from .leaderboard import MARKDOWN, build, check, write

    directory = args.dir
    markdown_path = args.markdown or directory.parent / MARKDOWN
    files, board = build(directory, markdown_path)
    for r in board.rejected:
        console.print(f"[red]error:[/red] run {directory / 'runs' / r.name} rejected: {escape(r.reason)}", highlight=False)
    if args.check:
        problems = check(files, directory, markdown_path)
        for line in problems:
            console.print(f"[red]stale:[/red] {escape(line)}", highlight=False)
        if problems:
            console.print("the committed leaderboard is not what its inputs produce: run 'medvision-eval leaderboard' "
                          "and commit the result", highlight=False)
            return 1
        if board.rejected:
            return 2
        console.print(f"leaderboard up to date: {len(board.entries)} runs, {len(files)} files", highlight=False)
        return 0
    changed = write(files, directory, markdown_path)
    console.print(f"wrote {markdown_path} and {directory / 'index.html'}: {len(board.entries)} runs in "
                  f"{len(board.groups())} comparability groups, {len(board.rejected)} rejected, "
                  f"{len(changed)} files changed", highlight=False)
    return 2 if board.rejected else 0


def cmd_view(args: argparse.Namespace, console: Console) -> int:
    from .view import build_view

    out = build_view(args.run_dir, args.out, data=args.data, max_samples=args.max_samples)
    console.print(f"wrote {out / 'index.html'}", highlight=False)
    return 0


COMMANDS = {
    "leaderboard": cmd_leaderboard,
    "view": cmd_view,
    "run": cmd_run,
    "score": cmd_score,
    "judge": cmd_judge,
    "report": cmd_report,
    "compare": cmd_compare,
    "merge": cmd_merge,
    "list": cmd_list,
}


def _columns() -> int:
    """Width when not a terminal: $COLUMNS if set (as a terminal would say), else 140."""
    import os

    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 140


def main(argv: list[str] | None = None) -> int:
    argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    console = Console(stderr=False, width=None if sys.stdout.isatty() else _columns())
    from pydantic import ValidationError

    from .plugins import PluginError, UnknownNameError
    from .errors import RunError

    started = time.perf_counter()
    try:
        return COMMANDS[args.command](args, console)
    except (RunError, PluginError, UnknownNameError, FileNotFoundError, ValueError, ValidationError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted after {time.perf_counter() - started:.1f}s; every answer so far is "
                      "saved — rerun the same command to resume.[/yellow]")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
