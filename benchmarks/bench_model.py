"""Model path: the tiny Qwen2.5-VL through ``--model hf`` vs a bare transformers loop, side by side.

    python benchmarks/bench_model.py [--batch-size 8] [--max-new-tokens 8] [--repeat 2]

Both sides answer the demo's samples (detection, tl_size, ad_measure) with the same prompts, the
same rendered images, the same batches (the harness's volume-grouped order, cut at the same batch
size) and the same greedy decoding, each in its own process, alternating ``--repeat`` times:

* harness: ``Runner.execute()`` of a fresh run (plan, decode volumes, render, build requests,
  load the model, generate, persist every answer) - what ``medvision-eval --model hf`` does
  before scoring;
* bare: load the same processor and model, then for each batch ``apply_chat_template`` ->
  ``generate`` -> ``batch_decode``; its prompts and images are prepared before its clock starts
  (with the harness's own planning code), so it is the floor for the model work alone.

Prints both wall times (best of the repeats), harness / bare (goal <= 1.10), and whether the
answers are identical. The tiny model is random (built in code by ``tests/tiny_vlms.py``, no hub).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

TASKS = ["detection", "tl_size", "ad_measure"]


def _config(model_dir: str, out: Path, batch_size: int, max_new_tokens: int, data: str | None = None,
            limit: int | None = None):
    from medvision_eval.config import RunConfig

    return RunConfig(tasks=TASKS, model="hf", output=str(out), batch_size=batch_size, data=data, limit=limit,
                     model_args={"pretrained": model_dir, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                                 "dtype": "float32"})


def harness(model_dir: str, out: Path, batch_size: int, max_new_tokens: int, data: str | None = None,
            limit: int | None = None) -> dict:
    from medvision_eval.runner import Runner
    from medvision_eval.store import load_responses

    t0 = time.perf_counter()
    summary = Runner(_config(model_dir, out, batch_size, max_new_tokens, data, limit)).execute()
    seconds = time.perf_counter() - t0
    answers = {r.sample_id + "|" + r.task: r.response.text for r in load_responses(out).values()}
    return {"seconds": seconds, "sent": summary.sent, "errors": summary.errors, "answers": answers}


def bare(model_dir: str, out: Path, batch_size: int, max_new_tokens: int, data: str | None = None,
         limit: int | None = None) -> dict:
    from medvision_eval.runner import Runner

    # untimed: the same requests the harness sends, in the executor's order, with pixels
    runner = Runner(_config(model_dir, out, batch_size, max_new_tokens, data, limit))
    items = []
    for rank, item in enumerate(runner.plan()):
        for i, e in enumerate(item.entries):
            items.append((e.sample.image.path, rank, i, item.name, item.requests[e.key]))
    items.sort(key=lambda t: t[:3])
    prepared = []
    for _, _, _, task, planned in items:
        image = runner.protocol.render_image(runner.data, planned.sample)
        conv = [{"role": m.role, "content": [{"type": "image", "image": image} if p.type == "image"
                                              else {"type": "text", "text": p.text} for p in m.content]}
                for m in planned.messages]
        prepared.append((planned.sample.id + "|" + task, conv))
    batches = []  # the executor cuts batches within one task, so do the same
    for key, conv in prepared:
        task = key.rsplit("|", 1)[1]
        if batches and len(batches[-1]) < batch_size and batches[-1][0][0].rsplit("|", 1)[1] == task:
            batches[-1].append((key, conv))
        else:
            batches.append([(key, conv)])

    t0 = time.perf_counter()
    import torch
    from transformers import AutoModelForImageTextToText

    from medvision_eval.models.processors import load_processor  # the Qwen processor without torchvision

    processor = load_processor(model_dir, model_type="qwen2_5_vl")
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers = {}
    for batch in batches:
        inputs = processor.apply_chat_template([c for _, c in batch], add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt", processor_kwargs={"padding": True})
        with torch.inference_mode():
            seqs = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                  top_p=None, top_k=None)
        texts = processor.batch_decode(seqs[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        answers.update({k: t for (k, _), t in zip(batch, texts)})
    return {"seconds": time.perf_counter() - t0, "sent": len(answers), "errors": 0, "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "MODEL_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, model_dir, out = args.child
        fn = harness if mode == "harness" else bare
        result = fn(model_dir, Path(out), args.batch_size, args.max_new_tokens)
        Path(out + ".json").write_text(json.dumps(result))
        return
    from tiny_vlms import tiny_model_dir

    model_dir = tiny_model_dir("qwen2_5_vl")
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}; tiny Qwen2.5-VL, "
          f"batch size {args.batch_size}, greedy, max_new_tokens {args.max_new_tokens}", flush=True)
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for mode in ("harness", "bare"):  # alternate, so both see the same machine load
                out = Path(tmp) / f"{mode}-{r}"
                cmd = [sys.executable, __file__, "--child", mode, model_dir, str(out),
                       "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
                subprocess.run(cmd, check=True, capture_output=True)
                result = json.loads(Path(str(out) + ".json").read_text())
                print(f"  {mode:<8} run {r + 1}: {result['seconds']:6.2f}s for {result['sent']} samples", flush=True)
                if mode not in best or result["seconds"] < best[mode]["seconds"]:
                    best[mode] = result
    h, b = best["harness"], best["bare"]
    same = h["answers"] == b["answers"]
    print(f"harness (--model hf) {h['seconds']:.2f}s   bare transformers loop {b['seconds']:.2f}s   "
          f"harness / bare {h['seconds'] / b['seconds']:.3f}  (goal <= 1.10)   answers identical: {'yes' if same else 'NO'}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
