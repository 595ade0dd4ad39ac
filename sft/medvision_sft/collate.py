"""Batches for SFT: the model's chat template and processor, and labels that train what matters.

``loss="answer"`` (default): only the answer tokens and the end-of-turn token that follows
them carry a label; the prompt, the image tokens, the template's role markers and the padding
are -100. The official collator masked the end-of-turn token (``<|im_end|>``) as well, so the
model never learnt to stop and the last-k parser read numbers from what it rambled on with.

``loss="full"`` (the paper's loss): every token is trained except padding and special tokens
(image placeholders, ``<|im_start|>`` ...) — but the end-of-turn token stays trained.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

IGNORE = -100


class TemplateError(ValueError):
    """The chat template does not render the prompt as a prefix of the full conversation."""


def end_of_turn_ids(processor: Any, model: Any = None) -> set[int]:
    """Token ids that end an answer: the generation config's eos ids and the tokenizer's eos."""
    ids: set[int] = set()
    if model is not None:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    tok = processor.tokenizer
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    for name in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
        tid = tok.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid != tok.unk_token_id and name in tok.get_vocab():
            ids.add(tid)
    return {int(i) for i in ids if i is not None}


class SFTCollator:
    """Turns dataset rows (``messages`` JSON, ``image`` PNG path) into model inputs with labels."""

    def __init__(self, processor: Any, *, end_ids: set[int], loss: Literal["answer", "full"] = "answer",
                 max_length: int | None = None) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.end_ids = set(end_ids)
        self.loss = loss
        self.max_length = max_length
        if not self.end_ids:
            raise TemplateError("no end-of-turn token id found (generation_config.eos_token_id / tokenizer eos)")
        self.special_ids = set(self.tokenizer.all_special_ids) - self.end_ids
        for attr in ("image_token_id", "video_token_id"):
            tid = getattr(processor, attr, None)
            if isinstance(tid, int):
                self.special_ids.add(tid)

    @staticmethod
    def load_image(path: str) -> Any:
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("RGB")

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        convs = [json.loads(r["messages"]) if isinstance(r["messages"], str) else r["messages"] for r in rows]
        images = [[self.load_image(r["image"])] for r in rows]
        apply = self.processor.apply_chat_template
        full = [apply(c, tokenize=False, add_generation_prompt=False) for c in convs]
        prompts = [apply(c[:-1], tokenize=False, add_generation_prompt=True) for c in convs]
        self.tokenizer.padding_side = "right"
        batch = self.processor(text=full, images=images, padding=True, return_tensors="pt")
        input_ids = batch["input_ids"]
        labels = torch.full_like(input_ids, IGNORE)
        for i, (prompt, imgs) in enumerate(zip(prompts, images)):
            p_ids = self.processor(text=[prompt], images=[imgs], return_tensors="pt")["input_ids"][0]
            n_prompt = int(p_ids.shape[0])
            row = input_ids[i]
            if not torch.equal(row[:n_prompt], p_ids):
                raise TemplateError(
                    f"sample {rows[i].get('id')}: the prompt does not tokenise as a prefix of the full conversation; "
                    "the chat template or tokenizer merges across the assistant turn boundary"
                )
            n_real = int(batch["attention_mask"][i].sum())
            end = next((j for j in range(n_prompt, n_real) if int(row[j]) in self.end_ids), None)
            stop = (end + 1) if end is not None else n_real
            if self.loss == "answer":
                labels[i, n_prompt:stop] = row[n_prompt:stop]
            else:
                labels[i, :stop] = row[:stop]
                for j in range(stop):
                    if int(row[j]) in self.special_ids:
                        labels[i, j] = IGNORE
        labels[batch["attention_mask"] == 0] = IGNORE
        out = dict(batch)
        out["labels"] = labels
        if self.max_length is not None and input_ids.shape[1] > self.max_length:
            raise TemplateError(
                f"a batch needs {input_ids.shape[1]} tokens, more than --max-length {self.max_length}; truncating "
                "would cut image tokens or the answer: raise --max-length"
            )
        return out
