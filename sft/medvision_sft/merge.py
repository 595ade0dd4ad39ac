"""``medvision-sft merge``: a checkpoint's adapter folded into its base model's weights.

The base is loaded exactly as ``--model lora:PATH`` loads it (all checkpoint checks apply),
``merge_and_unload`` folds the LoRA weights in and replaces the LM head / embeddings by their
trained copies, and the result is written with the base processor (2 GB shards, as the paper
pushed its merged models) plus ``medvision_merged.json`` (the manifest, and the message order
the merged model must be evaluated in).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MergeError(RuntimeError):
    pass


def merge(checkpoint: str | Path, output: str | Path, *, dtype: str | None = None, overwrite: bool = False,
          base: str | None = None) -> dict[str, Any]:
    from medvision_eval.models.lora import LoRAAdapter

    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MergeError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    args: dict[str, Any] = {"path": str(checkpoint)}
    if dtype:
        args["dtype"] = dtype
    if base:
        args["pretrained"] = base
    adapter = LoRAAdapter(**args)  # checks files, base and processor before loading weights
    model = adapter.model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="2GB")
    adapter.processor.save_pretrained(out)
    record = {"merged_from": adapter.path, "image_first": adapter.image_first,
              "manifest": json.loads(adapter.manifest.model_dump_json())}
    (out / "medvision_merged.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    adapter.close()
    return record
