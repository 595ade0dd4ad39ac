"""LoRA fine-tuning with TRL's SFTTrainer and peft, the paper's configuration by default.

Defaults (MedVision ``train__SFT__qwen2_5_vl.py``): LoRA r 16, alpha 16, dropout 0.05 on all
linear layers, LM head and embeddings trained and saved (``modules_to_save``); lr 2e-4 with a
linear schedule and 3 % warm-up, max grad norm 0.3, fused AdamW, 10 epochs, batch 1 x grad-accum
12 per device, save/eval every 50 steps keeping 10; bf16 and non-reentrant gradient
checkpointing on GPUs. QLoRA (4-bit NF4, double quantisation) with ``qlora=True``.

The output directory is resumable: rerunning the same command continues from its last
``checkpoint-N``; a different configuration in the same directory is an error. The final
checkpoint (``OUTPUT/final``) is the adapter plus ``medvision_checkpoint.json``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from medvision_eval.models.lora import (
    MANIFEST,
    BaseModelRecord,
    Manifest,
    file_record,
    processor_hashes,
)

from .data import DataSpec, build_data, read_jsonl, write_jsonl

PAPER_MODULES_TO_SAVE = ["lm_head", "embed_tokens"]
SPEC_FILE = "sft_run.json"


class TrainError(RuntimeError):
    """Training cannot start (bad output dir, wrong model, missing library); the message says why."""


@dataclass
class TrainSpec:
    output: str
    model: str  # a medvision-eval model name: a preset (qwen2.5-vl-7b) or "hf"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: DataSpec = field(default_factory=lambda: DataSpec(tasks=["detection", "tl_size", "ad_measure"]))
    data_root: str | None = None
    image_first: bool | None = None  # None: the order the model is evaluated in
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    save_embeddings: bool = True  # modules_to_save = lm_head, embed_tokens
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler: str = "linear"
    warmup: float = 0.03  # < 1: a ratio of the steps; >= 1: a number of steps
    max_grad_norm: float = 0.3
    optim: str = "adamw_torch_fused"
    epochs: float = 10.0
    max_steps: int = -1
    batch_size: int = 1
    grad_accum: int = 12
    weight_decay: float = 0.0
    loss: Literal["answer", "full"] = "answer"
    qlora: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool | None = None  # None: on with a GPU
    max_length: int | None = None
    # bookkeeping
    save_steps: int = 50
    eval_steps: int = 50
    save_total_limit: int = 10
    logging_steps: int = 5
    report_to: str = "none"
    run_name: str | None = None
    deepspeed: str | None = None
    fsdp: str | None = None
    fsdp_config: str | None = None
    seed: int = 1024
    threads: int | None = None

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun into the same output directory to resume."""
        d = asdict(self)
        for k in ("output", "report_to", "run_name", "threads", "logging_steps", "save_total_limit"):
            d.pop(k, None)
        return d


def _versions() -> dict[str, Any]:
    from medvision_eval.models._common import package_version

    out = {n: package_version(n) for n in ("medvision-eval", "medvision-sft", "torch", "transformers", "peft", "trl",
                                           "accelerate", "datasets", "bitsandbytes")}
    out["python"] = platform.python_version()
    return out


def last_checkpoint(output: Path) -> Path | None:
    best: tuple[int, Path] | None = None
    for p in output.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            if best is None or int(m[1]) > best[0]:
                best = (int(m[1]), p)
    return best[1] if best else None


def prepare_output(spec: TrainSpec, *, overwrite: bool = False) -> tuple[Path, Path | None]:
    """Create or reopen the output directory; (directory, checkpoint to resume from)."""
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / SPEC_FILE
    ident = spec.identity()
    if spec_path.is_file() and not overwrite:
        old = json.loads(spec_path.read_text(encoding="utf-8"))
        if old != json.loads(json.dumps(ident)):
            diff = sorted(k for k in set(old) | set(ident) if old.get(k) != json.loads(json.dumps(ident)).get(k))
            raise TrainError(
                f"{out} holds a training run with a different configuration ({', '.join(diff)} differ); "
                "use another --output, or --overwrite to start over there"
            )
    if overwrite:
        import shutil

        for p in list(out.glob("checkpoint-*")) + [out / "final", out / "data"]:
            shutil.rmtree(p, ignore_errors=True)
    spec_path.write_text(json.dumps(ident, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return out, (None if overwrite else last_checkpoint(out))


def resolve_model(spec: TrainSpec, registry: Any) -> Any:
    """The target model's hf adapter (preset settings, perceived geometry, message order)."""
    from medvision_eval.models.hf import HFAdapter
    from medvision_eval.runner import build_adapter, split_model_spec

    name, args = split_model_spec(registry, spec.model, dict(spec.model_args))
    entry = registry.model(name).entry
    if entry.target.endswith(":AutoBackendAdapter"):
        args.setdefault("backend", "hf")
    adapter = build_adapter(registry, name, args)
    if not isinstance(adapter, HFAdapter) or type(adapter).__name__ == "LoRAAdapter":
        raise TrainError(f"model {spec.model!r} is not a transformers model; SFT needs a preset on the hf/vllm "
                         "backend or --model hf --model-args pretrained=PATH")
    try:  # config and processor now: a wrong path is one error line before any data is built
        adapter.model_type  # noqa: B018
        adapter.processor  # noqa: B018
    except Exception as exc:
        raise TrainError(f"cannot load model {adapter.settings.pretrained!r} ({spec.model}): "
                         f"{type(exc).__name__}: {exc}") from None
    return adapter


def base_record(spec: TrainSpec, adapter: Any) -> BaseModelRecord:
    s = adapter.settings
    hf_args = s.model_dump(exclude_defaults=True, exclude={"pretrained"})
    return BaseModelRecord(name=spec.model, pretrained=s.pretrained, revision=s.revision,
                           model_type=adapter.model_type, local_content=adapter._fingerprint, hf_args=hf_args)


def load_model(spec: TrainSpec, adapter: Any) -> Any:
    import torch
    from transformers import AutoModelForImageTextToText

    s = adapter.settings
    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {"revision": s.revision, "trust_remote_code": s.trust_remote_code}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(spec.precision)
    if dtype is None:
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    kwargs["dtype"] = dtype
    if s.attn_implementation:
        kwargs["attn_implementation"] = s.attn_implementation
    if spec.qlora:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as e:
            raise TrainError("--qlora needs bitsandbytes: pip install 'medvision-sft[qlora]'") from e
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
        if cuda:
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return AutoModelForImageTextToText.from_pretrained(s.pretrained, **kwargs)


def lora_config(spec: TrainSpec, model: Any) -> Any:
    from peft import LoraConfig

    tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False) or
                getattr(model.config, "tie_word_embeddings", False))
    kw: dict[str, Any] = {}
    if spec.save_embeddings and tied:
        kw["ensure_weight_tying"] = True  # one trained copy for the tied embedding / LM head
    return LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout, bias="none",
                      target_modules=spec.target_modules, task_type="CAUSAL_LM",
                      modules_to_save=list(PAPER_MODULES_TO_SAVE) if spec.save_embeddings else None, **kw)


def _optim(name: str) -> str:
    import torch

    if name == "adamw_torch_fused":
        try:  # fused AdamW exists for CUDA and (torch >= 2.4) CPU tensors
            p = torch.nn.Parameter(torch.zeros(1))
            torch.optim.AdamW([p], fused=True)
        except (RuntimeError, TypeError):
            return "adamw_torch"
    return name


def sft_config(spec: TrainSpec, out: Path, has_val: bool) -> Any:
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    bf16 = spec.precision == "bf16" or (spec.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    fp16 = spec.precision == "fp16"
    gc = spec.gradient_checkpointing if spec.gradient_checkpointing is not None else cuda
    kw: dict[str, Any] = dict(
        output_dir=str(out), per_device_train_batch_size=spec.batch_size, per_device_eval_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum, num_train_epochs=spec.epochs, max_steps=spec.max_steps,
        learning_rate=spec.learning_rate, lr_scheduler_type=spec.lr_scheduler, warmup_steps=spec.warmup,
        max_grad_norm=spec.max_grad_norm, optim=_optim(spec.optim), weight_decay=spec.weight_decay,
        bf16=bf16, fp16=fp16,
        logging_steps=spec.logging_steps, save_strategy="steps", save_steps=spec.save_steps,
        save_total_limit=spec.save_total_limit, eval_strategy="steps" if has_val else "no",
        eval_steps=spec.eval_steps if has_val else None, report_to=spec.report_to, run_name=spec.run_name,
        dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False, max_length=None,
        disable_tqdm=True, seed=spec.seed, data_seed=spec.seed, dataloader_num_workers=0, use_cpu=not cuda,
        label_names=["labels"],
    )
    import dataclasses

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    # transformers 5.x renamed gradient_checkpointing -> activation_checkpointing (the old name warns)
    prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kw[prefix] = gc
    if gc:
        kw[f"{prefix}_kwargs"] = {"use_reentrant": False}
    if spec.deepspeed:
        kw["deepspeed"] = spec.deepspeed
    if spec.fsdp:
        kw["fsdp"] = spec.fsdp
    if spec.fsdp_config:
        kw["fsdp_config"] = spec.fsdp_config
    return SFTConfig(**kw)


def write_manifest(final: Path, *, spec: TrainSpec, base: BaseModelRecord, image_first: bool, configs: list[str],
                   data_info: dict[str, Any], processor: Any, losses: dict[str, Any], modules: list[str]) -> Manifest:
    files = {p.name: file_record(p) for p in sorted(final.iterdir())
             if p.is_file() and p.name != MANIFEST and p.name != "README.md"}
    hp = {k: v for k, v in asdict(spec).items() if k not in ("output", "data", "model_args", "data_root")}
    manifest = Manifest(base=base, image_first=image_first, protocol=spec.data.protocol, tasks=spec.data.tasks,
                        configs=configs, loss=spec.loss, processor=processor_hashes(processor), files=files,
                        data=data_info, hyperparameters=hp, versions=_versions(), losses=losses,
                        modules_to_save=modules)
    tmp = final / (MANIFEST + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=1) + "\n", encoding="utf-8")
    tmp.replace(final / MANIFEST)
    return manifest


@dataclass
class TrainResult:
    output: Path
    final: Path
    manifest: Manifest
    seconds: float
    resumed_from: str | None
    n_train: int
    n_val: int
    model: Any = None  # the trained peft model (main process)
    already_done: bool = False  # OUTPUT/final existed: nothing was trained


def train(spec: TrainSpec, *, overwrite: bool = False, console: Any = None, progress: bool = True,
          registry: Any = None, data: Any = None) -> TrainResult:
    """Build the data, fine-tune, write ``OUTPUT/final`` (adapter + manifest)."""
    import warnings

    t0 = time.perf_counter()
    # transformers 5 renamed gradient -> activation checkpointing; peft/trl still call the old name
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    from medvision_eval.plugins import Registry

    registry = registry or Registry.discover()
    adapter = resolve_model(spec, registry)
    out, resume = prepare_output(spec, overwrite=overwrite)
    done = out / "final" / MANIFEST
    if done.is_file() and not overwrite:  # a finished run re-run: nothing to do
        from medvision_eval.models.lora import read_manifest

        manifest = read_manifest(done.parent)
        return TrainResult(output=out, final=done.parent, manifest=manifest, seconds=time.perf_counter() - t0,
                           resumed_from=None, n_train=int(manifest.data.get("n_train", 0)),
                           n_val=int(manifest.data.get("n_val", 0)), already_done=True)
    eval_order = bool(getattr(adapter, "image_first", False))
    image_first = eval_order if spec.image_first is None else bool(spec.image_first)
    if image_first != eval_order:
        warnings.warn(
            f"training {'image-first' if image_first else 'text-first'}, but {spec.model} is evaluated "
            f"{'image-first' if eval_order else 'text-first'}. 'lora:' checkpoints are evaluated in their training "
            "order; anything that evaluates the merged weights in the model's usual order will see a prompt order "
            "the model was not trained on (a tiny model trained image-first answered 0 % parseable text-first)",
            stacklevel=2,
        )
    if data is None:
        from medvision_eval.data import MedVisionData, default_data_dir

        data = MedVisionData(Path(spec.data_root) if spec.data_root else default_data_dir())
    data_spec = spec.data
    if data_spec.image_first != image_first or (adapter.settings.system_prompt and not data_spec.system_prompt):
        data_spec = DataSpec(**{**asdict(data_spec), "image_first": image_first,
                                "system_prompt": data_spec.system_prompt or adapter.settings.system_prompt})

    data_dir = out / "data"
    info_path = data_dir / "data.json"
    try:
        from accelerate import PartialState

        state = PartialState()
        main_first = state.main_process_first
        is_main = state.is_main_process
    except Exception:  # pragma: no cover - accelerate is a dependency
        from contextlib import nullcontext

        main_first, is_main = nullcontext, True
    with main_first():
        cached = info_path.is_file() and json.loads(info_path.read_text()).get("spec") == data_spec.describe()
        if cached:
            info = json.loads(info_path.read_text())
            train_rows, val_rows = read_jsonl(data_dir / "train.jsonl"), read_jsonl(data_dir / "val.jsonl")
        else:
            built = build_data(data_spec, adapter, data, registry, data_dir / "images")
            train_rows, val_rows = built.train, built.val
            info = {"spec": data_spec.describe(), "fingerprint": built.fingerprint, "configs": built.configs,
                    "per_task": built.per_task, "n_train": len(train_rows), "n_val": len(val_rows),
                    "skipped": built.skipped, "data_root": str(data.root)}
            if is_main:
                data_dir.mkdir(parents=True, exist_ok=True)
                write_jsonl(data_dir / "train.jsonl", train_rows)
                write_jsonl(data_dir / "val.jsonl", val_rows)
                info_path.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            if console is not None and built.skipped:
                for line in built.skipped[:5]:
                    console.print(line, highlight=False, markup=False)

    import datasets

    from .collate import SFTCollator, end_of_turn_ids
    from .progress import LossRecorder, RichProgress

    processor = adapter.processor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = load_model(spec, adapter)
    from peft import get_peft_model, prepare_model_for_kbit_training

    if spec.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(spec.gradient_checkpointing))
    peft_model = get_peft_model(model, lora_config(spec, model))
    collator = SFTCollator(processor, end_ids=end_of_turn_ids(processor, model), loss=spec.loss,
                           max_length=spec.max_length)
    train_ds = datasets.Dataset.from_list(train_rows)
    val_ds = datasets.Dataset.from_list(val_rows) if val_rows else None
    from trl import SFTTrainer

    recorder = LossRecorder()
    callbacks = [recorder]
    if progress and console is not None:
        callbacks.append(RichProgress(console))
    trainer = SFTTrainer(model=peft_model, args=sft_config(spec, out, bool(val_rows)), train_dataset=train_ds,
                         eval_dataset=val_ds, data_collator=collator, processing_class=processor, callbacks=callbacks)
    if progress and console is not None:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    final = out / "final"
    if trainer.is_world_process_zero():
        final.mkdir(parents=True, exist_ok=True)
        trainer.model.save_pretrained(final)
        history = trainer.state.log_history
        losses = {
            "train": [[h["step"], h["loss"]] for h in history if "loss" in h],
            "eval": [[h["step"], h["eval_loss"]] for h in history if "eval_loss" in h],
            "final_train_loss": next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None),
            "steps": trainer.state.global_step,
        }
        manifest = write_manifest(
            final, spec=spec, base=base_record(spec, adapter), image_first=image_first, configs=info["configs"],
            data_info={k: info[k] for k in ("fingerprint", "per_task", "n_train", "n_val", "data_root")},
            processor=processor, losses=losses, modules=list(PAPER_MODULES_TO_SAVE) if spec.save_embeddings else [])
    else:  # pragma: no cover - other ranks
        manifest = None  # type: ignore[assignment]
    return TrainResult(output=out, final=final, manifest=manifest, seconds=time.perf_counter() - t0,
                       resumed_from=str(resume) if resume else None, n_train=len(train_rows), n_val=len(val_rows),
                       model=trainer.model)
