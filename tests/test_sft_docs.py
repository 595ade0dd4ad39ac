"""The commands of docs/sft.md run as written: the CPU loop verbatim, the GPU command parsed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("trl")

DOC = Path(__file__).resolve().parents[1] / "docs" / "sft.md"


def block_after(heading: str) -> str:
    text = DOC.read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_cpu_loop_runs_as_documented(tmp_path):
    script = block_after("## The loop").replace("/tmp/", f"{tmp_path}/")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env,
                       timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert (tmp_path / "ckpt-tl" / "final" / "medvision_checkpoint.json").is_file()
    assert (tmp_path / "merged-tl" / "model.safetensors").is_file()
    assert "checkpoint:" in p.stdout and "merged" in p.stdout


def test_the_gpu_command_parses_to_the_paper_configuration():
    from medvision_sft.cli import _spec, build_parser

    cmd = block_after("## Reproducing the paper's SFT on GPUs").replace("\\\n", " ")
    line = next(x for x in cmd.splitlines() if "medvision_sft.cli train" in x)
    argv = shlex.split(line.split("-m medvision_sft.cli", 1)[1])
    spec = _spec(build_parser().parse_args(argv))
    assert spec.model == "qwen2.5-vl-7b" and spec.data.tasks == ["tl_size:train_SFT"] and spec.qlora
    assert spec.data.limits == {"detection": 11000, "tl_size": 5500, "ad_measure": 5500}
    assert spec.data.val == {"detection": 105, "tl_size": 45, "ad_measure": 50} and spec.data.seed == 1024
    assert (spec.lora_r, spec.lora_alpha, spec.lora_dropout, spec.target_modules) == (16, 16, 0.05, "all-linear")
    assert (spec.learning_rate, spec.lr_scheduler, spec.warmup, spec.max_grad_norm) == (2e-4, "linear", 0.03, 0.3)
    assert (spec.epochs, spec.batch_size, spec.grad_accum, spec.optim) == (10.0, 1, 12, "adamw_torch_fused")
    assert spec.save_embeddings and spec.loss == "answer" and spec.report_to == "wandb"
    from medvision_eval.data import load_catalogue

    configs = load_catalogue().configs("tl_size", "train_SFT")
    assert len(configs) == 10 and all(not c.name.endswith("_Test") for c in configs)
