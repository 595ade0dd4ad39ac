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
from rich.table import Table

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
    """Split ``k=v,k2=v2`` into items. A value starting with ``{``, ``[`` or ``"`` runs to the end of
    its JSON value (its commas stay inside); any other value runs to the next comma, its quotes,
    apostrophes and brackets taken literally (``system_prompt=Don't guess,n=1`` is two items)."""
    decoder = json.JSONDecoder()
    items, start, n = [], 0, len(text)
    while True:
        comma, eq = text.find(",", start), text.find("=", start)
        if eq != -1 and (comma == -1 or eq < comma):
            j = eq + 1
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j] in '{["':
                try:
                    end = decoder.raw_decode(text, j)[1]
                except ValueError:  # the rest is one item: parse_model_arg names the bad JSON
                    items.append(text[start:])
                    return items
                comma = text.find(",", end)
        if comma == -1:
            items.append(text[start:])
            return items
        items.append(text[start:comma])
        start = comma + 1


def _no_non_finite(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (Infinity, -Infinity and NaN are not JSON values)")


def parse_model_arg(item: str, where: str) -> tuple[str, Any]:
    """``key=value``: a value starting with ``{``, ``[`` or ``"`` is JSON; any other stays a string
    (each adapter validates and converts its own)."""
    key, sep, value = item.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise ValueError(f"{where}: {item.strip()!r} is not key=value; write e.g. {item.strip() or 'key'}=VALUE")
    if value[:1] in ("{", "[", '"'):
        try:
            return key, json.loads(value, parse_constant=_no_non_finite)
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


def parse_model_args_flag(text: str | None, flag: str) -> dict[str, Any]:
    """``k=v,k2=v2`` of another flag (``--gen_kwargs``), parsed as ``--model-args``."""
    out: dict[str, Any] = {}
    for item in split_top_level(text or ""):
        if item.strip():
            key, value = parse_model_arg(item, flag)
            out[key] = value
    return out


def parse_limit(text: str) -> int | float:
    """``--limit N`` (first N samples of each config) or ``--limit 0.1`` (a fraction, as lmms-eval)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value >= 1 and value == int(value):
        return int(value)
    if 0 < value < 1:
        return value
    raise argparse.ArgumentTypeError(
        f"--limit {text}: give a number of samples per config of at least 1 (e.g. --limit 100) "
        "or a fraction between 0 and 1 (e.g. --limit 0.1, as in lmms-eval)")


def parse_batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--batch-size {text}: give a whole number of requests of at least 1 "
                                         "(or leave it out to use the model's own batch size)")
    return value


def parse_error_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"--max-error-rate {text}: give a fraction between 0 and 1, "
                                         "e.g. 0.01 to accept 1 % failed samples")
    return value


GEN_KWARGS = {"max_new_tokens": "max_new_tokens", "max_gen_toks": "max_new_tokens", "temperature": "temperature",
              "top_p": "top_p"}


def parse_gen_kwargs(text: str | None) -> dict[str, str]:
    """lmms-eval's ``--gen_kwargs k=v,...`` as this harness's generation settings (model args)."""
    out: dict[str, str] = {}
    for key, value in parse_model_args_flag(text, "--gen_kwargs").items():
        if key == "do_sample":
            if value.lower() in ("false", "0", "no"):
                out.setdefault("temperature", "0")
            continue
        if key not in GEN_KWARGS:
            raise argparse.ArgumentTypeError(
                f"--gen_kwargs: {key!r} is not a generation setting here; supported: "
                f"{', '.join(sorted(GEN_KWARGS))}, do_sample (other settings: --model-args)")
        out[GEN_KWARGS[key]] = value
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
    p.add_argument("--limit", type=parse_limit, default=None,
                   help="first N samples of each config in dataset order (the paper used 1000); "
                   "a fraction below 1 takes that share of each config (lmms-eval's --limit 0.1)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=parse_batch_size, default=None,
                   help="requests per adapter call (default: the adapter's)")
    from .protocol import protocol_names

    p.add_argument("--protocol", default="paper", choices=protocol_names(),
                   help="paper: the v1 code exactly (default); corrected: fixed prompts, parser, windows; "
                        "v2: the later official protocol (its LLM-judge step: medvision-eval judge)")
    p.add_argument("--seed", type=int, default=0, help="seed for baselines and bootstrap intervals (default 0)")
    p.add_argument("--shard", type=parse_shard, default=None,
                   help="run shard i of n (by sample id); combine shard dirs with 'medvision-eval merge'")
    p.add_argument("--no-cache", action="store_true", help="send every sample again, ignoring stored answers")
    p.add_argument("--max-error-rate", "--max_error_rate", dest="max_error_rate", type=parse_error_rate, default=0.0,
                   help="fraction of planned samples allowed to fail (no answer) with exit code 0; above it the "
                   "exit code is 1 (default 0: every sample must be answered)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --output (its answers are deleted) instead of refusing")
    p.add_argument("--predict-only", "--predict_only", dest="predict_only", action="store_true",
                   help="store the answers, skip scoring (score later with 'medvision-eval score DIR')")
    p.add_argument("--show-config", "--show_config", dest="show_config", action="store_true",
                   help="print the resolved run (model, arguments, generation, protocol, data) as JSON and exit")
    p.add_argument("--gen-kwargs", "--gen_kwargs", dest="gen_kwargs", default=None,
                   help="generation settings k=v (lmms-eval style): max_new_tokens, temperature, top_p, do_sample")
    p.add_argument("--log-samples", "--log_samples", dest="log_samples", action="store_true",
                   help="accepted for lmms-eval habits: samples are always logged (responses.jsonl, samples_<task>.jsonl)")
    p.add_argument("--tables", action="store_true", help="also print the paper-style group tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    # lmms-eval flags with another spelling here: answered with the flag to use instead.
    for flag, _ in LMMS_INSTEAD.items():
        p.add_argument(flag, dest=f"lmms_{flag.lstrip('-')}", nargs="?", const=True, default=None,
                       help=argparse.SUPPRESS)


# lmms-eval flags this harness spells differently: what to use instead.
LMMS_INSTEAD = {
    "--verbosity": "use --quiet for less output (progress bars off); errors and the results table are always printed",
    "--include_path": "tasks come from plugins here: install a package that registers them through the "
                      "'medvision_eval' entry point (docs/plugins.md), then --tasks NAME",
    "--use_cache": "answers are always cached in the run directory: rerun with the same --output to resume "
                   "(--no-cache sends everything again)",
    "--device": "pass the device as a model argument: --model-args device=cuda:0 (hf) or device_map=auto",
    "--num_fewshot": "MedVision is zero-shot; the prompts are the benchmark's own (see --protocol)",
    "--apply_chat_template": "chat templates are always applied by the model backend",
    "--wandb_args": "results are in --output (results.json, samples_<task>.jsonl); upload them yourself",
}


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one ``error:`` line saying what to do (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "unrecognized arguments" in message:
            message += f". See '{self.prog} --help'"
        elif "the following arguments are required" in message:
            message += f", e.g. {self.prog} --tasks tl_size --model prior"
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="medvision-eval",
        description="Evaluate vision-language models on MedVision: detection, tumour/lesion size, "
        "angle/distance. 'medvision-eval --tasks … --model …' is short for 'medvision-eval run …'.",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medvision-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

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


def rate_column() -> Any:
    """A progress column: samples per second sent to the model in this run (answers found in the
    store excluded). rich's progress module is imported here, when bars are drawn, not at start-up."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            sent = task.completed - task.fields.get("cached", 0)
            elapsed = task.finished_time if task.finished else task.elapsed
            if not sent:
                return Text("all stored" if task.finished else "– samples/s", style="progress.data.speed")
            if not elapsed:
                return Text("– samples/s", style="progress.data.speed")
            return Text(f"{sent / elapsed:,.1f} samples/s", style="progress.data.speed")

    return RateColumn()


EXIT_OK, EXIT_SAMPLES_FAILED, EXIT_USAGE, EXIT_MODEL_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class ModelUnavailable(Exception):
    """The model could not load or connect (preflight), or gave up mid-run: exit code 3."""


def lmms_habits(args: argparse.Namespace, console: Console) -> dict[str, str]:
    """lmms-eval flags: refuse those spelled differently here (saying what to use), note the rest;
    returns generation settings from ``--gen_kwargs``."""
    for flag, instead in LMMS_INSTEAD.items():
        if getattr(args, f"lmms_{flag.lstrip('-')}", None) is not None:
            raise argparse.ArgumentTypeError(f"{flag} is an lmms-eval flag; here {instead}")
    if args.log_samples:
        console.print("note: --log_samples is always on here: every answer is in responses.jsonl and every "
                      "scored sample in samples_<task>.jsonl", highlight=False)
    return parse_gen_kwargs(args.gen_kwargs)


def preflight(adapter: Any, name: str, console: Console, quiet: bool) -> float:
    """Load or connect once, before any sample; the real error stops the run (exit 2 or 3)."""
    from .models.errors import BackendNotInstalledError, ModelArgsError, ModelUnavailableError

    check = getattr(adapter, "preflight", None)
    if check is None:
        return 0.0
    t0 = time.perf_counter()
    if not quiet:
        console.print(f"loading/connecting {escape(name)} once before any sample …", highlight=False)
    try:
        check()
    except (ModelArgsError, BackendNotInstalledError) as exc:
        from .runner import RunError

        raise RunError(f"model {name!r}: {exc}") from None
    except ModelUnavailableError as exc:
        raise ModelUnavailable(f"model {name!r} is unavailable: {exc}") from None
    except Exception as exc:  # a plugin adapter's own failure: still the real error, one line
        raise ModelUnavailable(f"model {name!r} is unavailable: {type(exc).__name__}: {exc}") from None
    return time.perf_counter() - t0


def warn_trained_elsewhere(adapter: Any, config: Any, protocol: str, console: Console) -> None:
    """One warning line when a fine-tuned checkpoint (``lora:``) runs on tasks or a protocol it was
    not trained on: allowed (that is how generalisation is measured), but never silent."""
    from .config import parse_task_spec

    info = adapter.info()
    trained_tasks, trained_protocol = info.get("trained_tasks"), info.get("trained_protocol")
    if trained_tasks is None and trained_protocol is None:
        return
    trained = {parse_task_spec(t)[0] for t in trained_tasks or []}
    asked = list(dict.fromkeys(parse_task_spec(t)[0] for t in config.tasks))
    if set(asked) <= trained and trained_protocol in (None, protocol):
        return
    console.print(escape(f"warning: {config.model} was trained on tasks {', '.join(trained_tasks or [])} under "
                         f"protocol {trained_protocol}; this run asks for tasks {', '.join(asked)} under protocol "
                         f"{protocol}"), highlight=False, soft_wrap=True)


def answered_counts(output: Path) -> dict[str, int]:
    """planned / answered / failed from the run directory (when scoring is skipped)."""
    from .store import load_plan, load_responses

    plan = load_plan(output)
    done = load_responses(output)
    answered = sum(1 for e in plan if e.key in done and done[e.key].completed)
    return {"planned": len(plan), "answered": answered, "failed": len(plan) - answered}


def exit_code(counts: dict[str, int], max_error_rate: float, console: Console) -> int:
    """0 when every planned sample is answered (or the failures are within --max-error-rate), else 1."""
    planned, failed = counts["planned"], counts["failed"]
    if not failed:
        return EXIT_OK
    rate = failed / planned if planned else 1.0
    if rate <= max_error_rate:
        console.print(f"[yellow]{failed} of {planned} samples failed ({rate:.1%}), within --max-error-rate "
                      f"{max_error_rate:g}; rerun the same command to retry them.[/yellow]", highlight=False)
        return EXIT_OK
    console.print(f"[red]error:[/red] {failed} of {planned} samples have no answer ({rate:.1%} > --max-error-rate "
                  f"{max_error_rate:g}); see the errors in samples_<task>.jsonl, then rerun the same command: "
                  "only those samples are sent again", highlight=False, soft_wrap=True)
    return EXIT_SAMPLES_FAILED


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from .rundir import RunDirLock, check_identity, check_output_path, clear_run, remove_stale_outputs
    from .runner import RunConfig, Runner

    generation = lmms_habits(args, console)
    model_args = parse_model_args(args.model_args, args.model_arg)
    for key, value in generation.items():
        model_args.setdefault(key, value)  # --model-args wins over --gen_kwargs
    config = RunConfig(
        tasks=args.tasks.split(","),
        model=args.model,
        model_args=model_args,
        data=args.data,
        output=args.output,
        limit=args.limit,
        batch_size=args.batch_size,
        protocol=args.protocol,
        seed=args.seed,
        no_cache=args.no_cache,
        shard=args.shard,
    )
    check_output_path(config.output_dir())
    runner = Runner(config)
    adapter = runner.adapter  # built (arguments validated), nothing loaded yet
    if args.show_config:
        from .store import strict_dumps

        sys.stdout.write(strict_dumps(runner.run_record(), indent=2) + "\n")
        return EXIT_OK
    lock = RunDirLock(runner.output)
    if runner.rank == 0:
        lock.acquire()  # a second run on this directory is refused here
    try:
        if runner.rank == 0:
            from .store import clean_temp_files

            clean_temp_files(runner.output)  # temp files a SIGKILL left between write and rename
            if args.overwrite:
                clear_run(runner.output)
            identity = {"config": {"model": config.model, "tasks": config.tasks}, "model_identity": adapter.identity(),
                        "generation": adapter.generation_settings().model_dump(), "protocol": {"name": config.protocol}}
            check_identity(runner.output, identity)
            remove_stale_outputs(runner.output, config.tasks)
        if runner.rank == 0:
            warn_trained_elsewhere(adapter, config, runner.protocol.name, console)
            if not args.predict_only:
                finished = _finished_rerun(args, console, runner)
                if finished is not None:
                    return finished
        seconds = preflight(adapter, config.model, console, args.quiet)
        if seconds and not args.quiet:
            console.print(f"model ready in {seconds:.1f}s", highlight=False)
        from .scoring import cached_results, score_run

        return _run_and_score(args, console, runner, cached_results, score_run)
    finally:
        lock.release()


def _run_and_score(args: argparse.Namespace, console: Console, runner: Any, cached_results: Any, score_run: Any) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .runner import RunError

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), rate_column(), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console, disable=args.quiet, transient=False) as progress:
            bars: dict[str, Any] = {}

            def update(task_name: str, done: int, total: int) -> None:
                if task_name not in bars:  # the first call reports what the store already holds
                    bars[task_name] = progress.add_task(task_name, total=total, completed=done, cached=done)
                progress.update(bars[task_name], completed=done, total=total)

            summary = runner.execute(progress=update)
    except RunError as exc:
        from .models.errors import ModelUnavailableError

        if isinstance(exc.__cause__, ModelUnavailableError):  # gave up mid-run
            raise ModelUnavailable(str(exc)) from None
        raise
    _print_predicted(console, summary.output, summary.sent, summary.cached, summary.errors, summary.seconds,
                     summary.problems)
    if runner.rank != 0:
        return EXIT_OK  # rank 0 scores and decides the exit code for the whole launch
    if args.predict_only:
        console.print(f"answers stored in {escape(str(summary.output))}; --predict_only: not scored "
                      f"(score with: medvision-eval score {escape(str(summary.output))})", highlight=False)
        return exit_code(answered_counts(summary.output), args.max_error_rate, console)
    # Nothing new was answered and results.json matches the stored inputs: reuse it.
    results = (summary.sent == 0 and summary.errors == 0 and cached_results(summary.output)) or score_run(
        summary.output, registry=runner.registry
    )
    return _print_scored(args, console, results, summary.output)


def _print_predicted(console: Console, output: Path, sent: int, cached: int, errors: int, seconds: float,
                     problems: list[str]) -> None:
    console.print(f"predicted: {sent} sent, {cached} already answered, {errors} errors in {seconds:.1f}s -> "
                  f"{escape(str(output))}", highlight=False)
    if problems:
        where = escape(str(output / "data_problems.txt"))
        console.print(f"[yellow]{len(problems)} data problems (all in {where}):[/yellow]")
        for line in problems[:5]:
            console.print(f"  {escape(line)}", highlight=False)


def _print_scored(args: argparse.Namespace, console: Console, results: Any, output: Path) -> int:
    from .report import print_results

    print_results(results, console, tables=args.tables)
    console.print(f"wrote {escape(str(output / 'results.json'))} and samples_<task>.jsonl")
    planned, answered = results.counts.planned, results.counts.answered
    return exit_code({"planned": planned, "answered": answered, "failed": planned - answered}, args.max_error_rate, console)


def _finished_rerun(args: argparse.Namespace, console: Console, runner: Any) -> int | None:
    """A rerun of a finished, scored run with unchanged inputs (manifest in run.json): report the
    stored results without planning, loading the model, sending or scoring. None: run as usual."""
    started = time.perf_counter()
    results = runner.finished_results()
    if results is None:
        return None
    problems_file = runner.output / "data_problems.txt"
    problems = problems_file.read_text(encoding="utf-8").splitlines() if problems_file.is_file() else []
    _print_predicted(console, runner.output, 0, results.counts.planned, 0, time.perf_counter() - started, problems)
    return _print_scored(args, console, results, runner.output)


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
        from .store import strict_dumps

        text = strict_dumps(rows, indent=2) + "\n"
    else:
        if args.out:
            text = to_markdown(rows)
        else:
            console.print(rows_table("leaderboard", rows))
            return 0
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        console.print(f"wrote {escape(str(args.out))}")
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


def _one_line(text: str) -> str:
    from .secrets import mask

    return " ".join(mask(text).split())


def _validation_message(exc: Any) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


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
        return EXIT_USAGE
    console = Console(stderr=False, width=None if sys.stdout.isatty() else _columns())
    from pydantic import ValidationError

    from .plugins import PluginError, UnknownNameError
    from .errors import RunError
    from .rundir import RunDirError, is_disk_full

    def fail(message: str, code: int) -> int:
        # escaped: a hint such as pip install 'medvision-eval[hf]' must keep its [extra]
        console.print(f"[red]error:[/red] {escape(_one_line(message))}", highlight=False, soft_wrap=True)
        return code

    started = time.perf_counter()
    try:
        return COMMANDS[args.command](args, console)
    except ModelUnavailable as exc:
        return fail(str(exc), EXIT_MODEL_UNAVAILABLE)
    except ValidationError as exc:
        return fail(_validation_message(exc), EXIT_USAGE)
    except (RunError, RunDirError, PluginError, UnknownNameError, FileNotFoundError, ValueError,
            argparse.ArgumentTypeError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted after {time.perf_counter() - started:.1f}s; every answer so far is "
                      "saved — rerun the same command to resume.[/yellow]")
        return EXIT_INTERRUPTED
    except OSError as exc:
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        if is_disk_full(exc):
            return fail(f"disk full{where}: free some space (or use --output on another disk) and rerun the same "
                        "command; every answer stored so far is kept", EXIT_USAGE)
        return fail(f"{exc.strerror or exc}{where}", EXIT_USAGE)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
