"""``medvision-sft``: fine-tune a VLM on MedVision with LoRA; merge a checkpoint; build a tiny model."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console

TRAIN_EXAMPLES = """examples:
  # the paper's SFT of Qwen2.5-VL-7B on its T/L training list (QLoRA, 2 GPUs, paper mixing):
  accelerate launch --num_processes 2 -m medvision_sft.cli train --model qwen2.5-vl-7b \\
      --tasks tl_size:train_SFT --paper-mix --qlora --data /data/MedVision --output ckpt/qwen7b-tl
  # the three families at once, as the paper's multi-task model (22,000 examples, val 200):
  medvision-sft train --model qwen2.5-vl-7b --tasks detection:train_SFT,tl_size:train_SFT,ad_measure:train_SFT \\
      --paper-mix --qlora --data /data/MedVision --output ckpt/qwen7b-all
  # any local transformers VLM, a short CPU run on the bundled demo data:
  medvision-sft train --model hf --model-args pretrained=/models/tiny --tasks tl_size \\
      --max-steps 200 --lr 2e-3 --grad-accum 1 --output ckpt/tiny-tl
  # evaluate the checkpoint with the harness (same base, same message order):
  medvision-eval --tasks tl_size --model lora:ckpt/tiny-tl/final

Rerunning the same command resumes from the last checkpoint-N in --output.
"""


def _limits(text: str | None, what: str) -> dict[str, int]:
    from medvision_eval.plugins import Registry

    from .data import parse_limits

    return parse_limits(text, sorted(Registry.discover().tasks), what=what)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="medvision-sft",
        description="LoRA fine-tuning on MedVision with the evaluation harness's own data, prompts and protocol. "
        "Checkpoints evaluate with 'medvision-eval --model lora:PATH'.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medvision-sft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune (resumable) and write OUTPUT/final (adapter + manifest)",
                       epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = t.add_argument_group("model and data")
    g.add_argument("--model", required=True, help="medvision-eval model: a preset (qwen2.5-vl-7b, medgemma-4b, ...) "
                   "or hf with --model-args pretrained=PATH")
    g.add_argument("--model-args", default=None, help="k=v,k2=v2 as medvision-eval takes them")
    g.add_argument("--tasks", required=True, help="task specs as medvision-eval takes them, train split: "
                   "tl_size | detection:train_SFT | ad_measure:Ceph-Bio-400 | a config name")
    g.add_argument("--output", required=True, help="output directory (rerun to resume)")
    g.add_argument("--data", default=None, help="MedVision data directory (default: $MEDVISION_DATA_DIR, else demo)")
    g.add_argument("--protocol", default="paper", choices=["paper", "corrected"], help="prompts, renderer, answer "
                   "format (default paper)")
    order = g.add_mutually_exclusive_group()
    order.add_argument("--image-first", dest="image_first", action="store_const", const=True, default=None,
                       help="image before text, as the paper's SFT script (warns if the model is evaluated otherwise)")
    order.add_argument("--text-first", dest="image_first", action="store_const", const=False,
                       help="text before image (the harness's order for most models)")
    g.add_argument("--limit", default=None, help="train examples per family: N or detection=N,tl_size=N,...")
    g.add_argument("--val", default=None, help="validation examples per family: N or family=N,...")
    g.add_argument("--paper-mix", action="store_true", help="the paper's limits: train detection 11000, "
                   "tl_size 5500, ad_measure 5500; val 105/45/50 (explicit --limit/--val win)")
    g.add_argument("--decimals", type=int, default=3, help="decimals of the target values (paper: 3)")
    g.add_argument("--seed", type=int, default=1024, help="data split/shuffle and training seed (paper: 1024)")

    h = t.add_argument_group("LoRA and optimisation (defaults: the paper's)")
    h.add_argument("--lora-r", type=int, default=16)
    h.add_argument("--lora-alpha", type=int, default=16)
    h.add_argument("--lora-dropout", type=float, default=0.05)
    h.add_argument("--target-modules", default="all-linear")
    h.add_argument("--no-save-embeddings", dest="save_embeddings", action="store_false",
                   help="do not train/save LM head and embeddings (needed for vLLM's LoRA serving)")
    h.add_argument("--lr", type=float, default=2e-4)
    h.add_argument("--scheduler", default="linear")
    h.add_argument("--warmup", type=float, default=0.03, help="< 1: ratio of steps; >= 1: steps (default 0.03)")
    h.add_argument("--max-grad-norm", type=float, default=0.3)
    h.add_argument("--optim", default="adamw_torch_fused", help="falls back to adamw_torch where fused is missing")
    h.add_argument("--epochs", type=float, default=10.0)
    h.add_argument("--max-steps", type=int, default=-1, help="optimiser steps (overrides --epochs)")
    h.add_argument("--batch-size", type=int, default=1, help="per device (paper 1)")
    h.add_argument("--grad-accum", type=int, default=12, help="(paper 12)")
    h.add_argument("--loss", choices=["answer", "full"], default="answer",
                   help="answer: answer + end-of-turn tokens only (default); full: prompt tokens too (the paper)")
    h.add_argument("--qlora", action="store_true", help="4-bit NF4 base with double quantisation (bitsandbytes)")
    h.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="auto: bf16 on a GPU that has it, else fp32")
    gc = h.add_mutually_exclusive_group()
    gc.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_const", const=True,
                    default=None, help="(default: on with a GPU)")
    gc.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_const", const=False)
    h.add_argument("--max-length", type=int, default=None, help="error if a batch needs more tokens")

    r = t.add_argument_group("run")
    r.add_argument("--save-steps", type=int, default=50)
    r.add_argument("--eval-steps", type=int, default=50)
    r.add_argument("--save-total-limit", type=int, default=10)
    r.add_argument("--logging-steps", type=int, default=5)
    r.add_argument("--report-to", default="none", help="none | wandb | tensorboard | ...")
    r.add_argument("--run-name", default=None)
    r.add_argument("--deepspeed", default=None, help="DeepSpeed config JSON, passed to the trainer")
    r.add_argument("--fsdp", default=None, help="FSDP options, e.g. 'full_shard auto_wrap'")
    r.add_argument("--fsdp-config", default=None, help="FSDP config JSON")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 was fastest for tiny models)")
    r.add_argument("--overwrite", action="store_true", help="start over in --output instead of resuming")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    m = sub.add_parser("merge", help="fold a checkpoint's adapter into its base weights",
                       epilog="example:\n  medvision-sft merge ckpt/tiny-tl/final merged/tiny-tl\n"
                       "  medvision-eval --tasks tl_size --model hf --model-args pretrained=merged/tiny-tl",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("checkpoint", type=Path)
    m.add_argument("output", type=Path)
    m.add_argument("--dtype", default=None, choices=["auto", "bfloat16", "float16", "float32"])
    m.add_argument("--base", default=None, help="base model folder/hub id if it moved since training")
    m.add_argument("--overwrite", action="store_true")

    k = sub.add_parser("tiny", help="build a tiny random Qwen2.5-VL (offline; for CPU trials)",
                       epilog="example:\n  medvision-sft tiny /tmp/tiny-qwen",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("output", type=Path)
    k.add_argument("--data", default=None, help="train its tokenizer on this data directory's prompts")
    return parser


def _spec(args: argparse.Namespace) -> Any:
    from medvision_eval.cli import parse_model_args

    from .data import PAPER_TRAIN_LIMITS, PAPER_VAL_LIMITS, DataSpec
    from .train import TrainSpec

    limits = dict(PAPER_TRAIN_LIMITS) if args.paper_mix else {}
    val = dict(PAPER_VAL_LIMITS) if args.paper_mix else {}
    limits.update(_limits(args.limit, "--limit"))
    val.update(_limits(args.val, "--val"))
    data = DataSpec(tasks=[t.strip() for t in args.tasks.split(",") if t.strip()], protocol=args.protocol,
                    seed=args.seed, decimals=args.decimals, limits=limits, val=val)
    return TrainSpec(
        output=args.output, model=args.model, model_args=parse_model_args(args.model_args), data=data,
        data_root=args.data, image_first=args.image_first, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, target_modules=args.target_modules, save_embeddings=args.save_embeddings,
        learning_rate=args.lr, lr_scheduler=args.scheduler, warmup=args.warmup, max_grad_norm=args.max_grad_norm,
        optim=args.optim, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, loss=args.loss, qlora=args.qlora, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing, max_length=args.max_length, save_steps=args.save_steps,
        eval_steps=args.eval_steps, save_total_limit=args.save_total_limit, logging_steps=args.logging_steps,
        report_to=args.report_to, run_name=args.run_name, deepspeed=args.deepspeed, fsdp=args.fsdp,
        fsdp_config=args.fsdp_config, seed=args.seed, threads=args.threads)


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from .train import train

    spec = _spec(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = train(spec, overwrite=args.overwrite, console=console, progress=not args.quiet)
    for w in caught:
        if "image-first" in str(w.message) or "text-first" in str(w.message):
            console.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False)
    if result.manifest is None:  # pragma: no cover - non-zero ranks
        return 0
    losses = result.manifest.losses.get("train") or []
    first = f"{losses[0][1]:.4f}" if losses else "–"
    last = f"{losses[-1][1]:.4f}" if losses else "–"
    resumed = f", resumed from {result.resumed_from}" if result.resumed_from else ""
    if result.already_done:
        resumed = " (already finished earlier: nothing to do; --overwrite trains again)"
    console.print(f"trained on {result.n_train} examples (val {result.n_val}), {result.manifest.losses.get('steps')} "
                  f"steps, loss {first} -> {last}, {result.seconds:.1f}s{resumed}")
    console.print(f"checkpoint: {result.final}  (evaluate: medvision-eval --tasks "
                  f"{','.join(spec.data.tasks)} --model lora:{result.final})", highlight=False)
    return 0


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from .merge import merge

    record = merge(args.checkpoint, args.output, dtype=args.dtype, overwrite=args.overwrite, base=args.base)
    order = ",image_first=true" if record["image_first"] else ""
    console.print(f"merged {record['merged_from']} into {args.output}; evaluate with: medvision-eval --model hf "
                  f"--model-args pretrained={args.output}{order}", highlight=False)
    if record["image_first"]:
        console.print("[yellow]warning:[/yellow] this checkpoint was trained image-first; evaluate the merged "
                      "weights image-first too", highlight=False)
    return 0


def cmd_tiny(args: argparse.Namespace, console: Console) -> int:
    from .tiny import build_tiny_qwen

    out = build_tiny_qwen(args.output, prompt_corpus(args.data))
    console.print(f"tiny Qwen2.5-VL written to {out}", highlight=False)
    return 0


def prompt_corpus(data_root: str | None, per_config: int = 3) -> list[str]:
    """Prompts of the first train samples of every config of a data directory (tokenizer corpus)."""
    from medvision_eval.data import MedVisionData, default_data_dir
    from medvision_eval.models.base import PerceivedGeometry
    from medvision_eval.plugins import Registry
    from medvision_eval.protocol import PROTOCOLS
    from medvision_eval.runner import build_task

    data = MedVisionData(Path(data_root) if data_root else default_data_dir())
    registry = Registry.discover()
    texts: list[str] = []
    for family in ("detection", "tl_size", "ad_measure"):
        for protocol in PROTOCOLS.values():
            task = build_task(registry, family, protocol)
            for cfg in task.configs(data.catalogue, None):
                for s in data.samples(cfg, "train")[:per_config]:
                    g = PerceivedGeometry.identity(*s.image_size)
                    texts.extend(m.text() for m in task.messages(s, g))
    return texts


COMMANDS = {"train": cmd_train, "merge": cmd_merge, "tiny": cmd_tiny}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.command:
        parser.print_help()
        return 2
    console = Console(width=None if sys.stdout.isatty() else 140)
    from medvision_eval.models.errors import ModelArgsError
    from medvision_eval.plugins import PluginError, UnknownNameError
    from medvision_eval.runner import RunError

    from .collate import TemplateError
    from .data import DataBuildError
    from .merge import MergeError
    from .train import TrainError

    started = time.perf_counter()
    try:
        return COMMANDS[args.command](args, console)
    except (TrainError, DataBuildError, MergeError, TemplateError, ModelArgsError, RunError, PluginError,
            UnknownNameError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted after {time.perf_counter() - started:.1f}s; rerun the same command to "
                      "resume from the last checkpoint.[/yellow]")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
