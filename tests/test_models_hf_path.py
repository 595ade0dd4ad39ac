"""``--model hf`` is the model plus nothing: one processor and one model load per run, and the
same answers as a bare transformers loop on the same prompts, images, batches and decoding
(the comparison ``benchmarks/bench_model.py`` times)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_model  # noqa: E402
from tiny_vlms import tiny_model_dir  # noqa: E402


def test_hf_run_loads_processor_and_model_once_and_answers_as_the_bare_loop(demo_root, tmp_path, monkeypatch):
    import transformers

    from medvision_eval.models import processors

    model_dir = tiny_model_dir("qwen2_5_vl")
    loads = {"processor": 0, "model": 0}
    load_processor = processors.load_processor
    model_from_pretrained = transformers.AutoModelForImageTextToText.from_pretrained

    def counting(kind, fn):
        def wrapper(*args, **kwargs):
            loads[kind] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(processors, "load_processor", counting("processor", load_processor))
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        counting("model", model_from_pretrained))
    harness = bench_model.harness(model_dir, tmp_path / "harness", 3, 6, data=str(demo_root), limit=2)
    # planning needs the processor's geometry, generation needs it again: one load serves both
    assert loads["processor"] == 1 and loads["model"] == 1
    assert harness["sent"] == len(harness["answers"]) >= 10 and harness["errors"] == 0
    monkeypatch.undo()
    bare = bench_model.bare(model_dir, tmp_path / "bare", 3, 6, data=str(demo_root), limit=2)
    assert bare["answers"] == harness["answers"]
