"""A tiny, randomly initialised but real Qwen2.5-VL, built offline in code (no hub access).

For the CPU experiment and the tests: hidden size 128, 2 text layers, one vision block, 56-px
image tiles (4 image tokens), and a byte-level BPE tokenizer trained on the given texts (the
harness's own prompts) whose pre-tokenizer splits digits one by one, so numbers are spelled
digit by digit as in real Qwen tokenizers. Such a model can learn the answer *format* and
per-label constants from the prompt in a few hundred CPU steps; it is far too small to read
measurements off the image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
BASE_TEXTS = [
    "0 1 2 3 4 5 6 7 8 9 . , : ; ( ) [ ] { } - mm cm degree %",
    "user assistant system You are an expert radiologist.",
]


def build_tiny_qwen(out: str | Path, texts: Iterable[str] = (), *, hidden: int = 128, layers: int = 2,
                    vocab_size: int = 700, seed: int = 0) -> Path:
    """Write a tiny Qwen2.5-VL (model + processor) to ``out``; returns the folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from medvision_eval.models.processors import image_only_processor_class, torchvision_available

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [*BASE_TEXTS, *texts]
    tok.train_from_iterator(corpus * 2, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     image_token="<|image_pad|>", video_token="<|video_pad|>")
    ip = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 56 * 56, "longest_edge": 56 * 56})
    if torchvision_available():  # pragma: no cover - never on the project's CPU machines
        from transformers import Qwen2_5_VLProcessor as cls
    else:
        cls = image_only_processor_class("qwen2_5_vl")
    proc = cls(image_processor=ip, tokenizer=hf_tok, chat_template=QWEN_TEMPLATE)
    ids = hf_tok.convert_tokens_to_ids
    heads = max(2, hidden // 32)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(hf_tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [hidden // heads // 8, hidden // heads * 3 // 16,
                                                            hidden // heads * 3 // 16]},
                         bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
