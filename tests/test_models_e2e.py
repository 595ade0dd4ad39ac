"""A tiny random Qwen2.5-VL through the real CLI on demo data: batch sizes and shards agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_vlms import tiny_model_dir


@pytest.fixture
def demo_dir(demo_root) -> Path:
    """The demo data directory, built once per test session (``data_fixtures.demo_root``)."""
    return demo_root


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    p = subprocess.run([sys.executable, "-m", "medvision_eval.cli", *args], capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def answers(run: Path) -> dict[str, tuple]:
    out = {}
    for line in (run / "samples_tl_size.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["id"]] = (r["response"], r["status"], r["values"])
    return out


def test_hf_tiny_qwen_batch_sizes_and_shards_agree(demo_dir, tmp_path):
    model = tiny_model_dir("qwen2_5_vl")
    base = ["--tasks", "tl_size", "--model", "hf", "--data", str(demo_dir), "--limit", "3"]
    args = f"pretrained={model},max_new_tokens=4"
    cli(*base, "--model-args", args + ",batch_size=1", "--output", str(tmp_path / "b1"))
    cli(*base, "--model-args", args + ",batch_size=3", "--output", str(tmp_path / "b3"))
    a1, a3 = answers(tmp_path / "b1"), answers(tmp_path / "b3")
    assert len(a1) >= 3 and a1 == a3
    assert all(isinstance(v[0], str) for v in a1.values())  # stored model text, parsed into a status
    info = json.loads((tmp_path / "b3" / "results.json").read_text())
    assert '"batch_size": 3' in json.dumps(info) and '"backend": "hf"' in json.dumps(info)
    shards = []
    for i in range(3):
        d = tmp_path / f"s{i}"
        cli(*base, "--model-args", args + ",batch_size=2", "--shard", f"{i}/3", "--output", str(d))
        shards.append(str(d))
    cli("merge", str(tmp_path / "merged"), *shards)
    assert answers(tmp_path / "merged") == a1
    assert metrics(tmp_path / "merged") == metrics(tmp_path / "b1") == metrics(tmp_path / "b3")


def metrics(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["tasks"]


def test_hf_data_parallel_under_accelerate_launch_matches_one_process(demo_dir, tmp_path):
    """Two ranks (torch.distributed on CPU/gloo) split the samples by id; rank 0 scores all of them."""
    model = tiny_model_dir("qwen2_5_vl")
    base = ["--tasks", "tl_size,ad_measure", "--model", "hf", "--data", str(demo_dir), "--limit", "3",
            "--model-args", f"pretrained={model},max_new_tokens=4,batch_size=2", "--quiet"]
    cli(*base, "--output", str(tmp_path / "one"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "medvision_eval.cli", *base, "--output", str(tmp_path / "dp")]
    p = subprocess.run(launch, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    dp = tmp_path / "dp"
    ranks = [json.loads(line)["sample_id"] for f in ("responses.jsonl", "responses.rank1.jsonl")
             for line in (dp / f).read_text().splitlines()]
    assert len(ranks) == len(set(ranks)) == 12  # every sample answered once, by one of the two ranks
    assert (dp / "responses.jsonl").read_text() and (dp / "responses.rank1.jsonl").read_text()
    assert answers(dp) == answers(tmp_path / "one")
    assert metrics(dp) == metrics(tmp_path / "one")
    assert json.loads((dp / "run.json").read_text())["world_size"] == 2
