"""Tiny, randomly initialised but real transformers VLMs, built in code (no hub access).

``tiny_model_dir(arch)`` builds once per test session into a temporary folder and returns the
folder, which loads with ``AutoProcessor`` / ``AutoModelForImageTextToText`` (or with
``medvision_eval.models.processors.load_processor`` for the Qwen family without torchvision).

Architectures: ``qwen2_5_vl`` (Qwen2.5-VL, Lingshu, MedVision SFT), ``gemma3`` (Gemma 3,
MedGemma), ``mllama`` (Llama-3.2-Vision). Images are shrunk (56 px tiles) so a forward pass
takes milliseconds on a CPU.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ARCHES = ("qwen2_5_vl", "gemma3", "mllama")

_CORPUS = [
    "The lesion measures 12.5 mm in the axial plane.",
    "What is the diameter of the tumour in millimetres? Answer with a number.",
    "Estimate the angle between the two lines in degrees: 37.0",
    "Bounding box: 0.1, 0.2, 0.3, 0.4. Liver, kidney, spleen, lung, brain, heart.",
    "user assistant system You are an expert radiologist.",
    "0 1 2 3 4 5 6 7 8 9 . , : ; ( ) [ ] { } mm cm deg %",
]

_lock = threading.Lock()
_root: str | None = None
_built: dict[str, str] = {}


def _tokenizer(specials: list[str], **named: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

MLLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|image|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _build_qwen(out: str) -> None:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from medvision_eval.models.processors import image_only_processor_class, torchvision_available

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                     image_token="<|image_pad|>", video_token="<|video_pad|>")
    ip = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})
    if torchvision_available():  # pragma: no cover - never on the project's CPU machines
        from transformers import Qwen2_5_VLProcessor as cls
    else:
        cls = image_only_processor_class("qwen2_5_vl")
    proc = cls(image_processor=ip, tokenizer=tok, chat_template=QWEN_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.save_pretrained(out)
    proc.save_pretrained(out)


def _build_gemma(out: str) -> None:
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok = _tokenizer(specials, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                     boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>")
    ip = Gemma3ImageProcessorPil(size={"height": 56, "width": 56})
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, chat_template=GEMMA_TEMPLATE, image_seq_length=4)
    ids = tok.convert_tokens_to_ids
    cfg = Gemma3Config(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=32,
                         max_position_embeddings=1024, bos_token_id=ids("<bos>"), eos_token_id=ids("<eos>"),
                         pad_token_id=ids("<pad>")),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=56, patch_size=14),
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = ids("<pad>")
    model.generation_config.eos_token_id = [ids("<eos>"), ids("<end_of_turn>")]
    model.save_pretrained(out)
    proc.save_pretrained(out)


def _build_mllama(out: str) -> None:
    import torch
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|image|>", "<|python_tag|>"]
    tok = _tokenizer(specials, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                     pad_token="<|finetune_right_pad_id|>", image_token="<|image|>")
    ip = MllamaImageProcessorPil(size={"height": 56, "width": 56}, max_image_tiles=4)
    proc = MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=MLLAMA_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    cfg = MllamaConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[1],
                         max_position_embeddings=1024, bos_token_id=ids("<|begin_of_text|>"),
                         eos_token_id=ids("<|eot_id|>"), pad_token_id=ids("<|finetune_right_pad_id|>"),
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_global_layers=1,
                           attention_heads=2, image_size=56, patch_size=14, max_num_tiles=4,
                           intermediate_layers_indices=[0], vision_output_dim=64),
        image_token_index=ids("<|image|>"),
    )
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = ids("<|finetune_right_pad_id|>")
    model.generation_config.eos_token_id = ids("<|eot_id|>")
    model.save_pretrained(out)
    proc.save_pretrained(out)


_BUILDERS = {"qwen2_5_vl": _build_qwen, "gemma3": _build_gemma, "mllama": _build_mllama}


def tiny_model_dir(arch: str) -> str:
    """Folder of a tiny ``arch`` model + processor, built once per process."""
    global _root
    if arch not in _BUILDERS:
        raise ValueError(f"unknown tiny arch {arch!r}; known: {', '.join(ARCHES)}")
    with _lock:
        if arch in _built:
            return _built[arch]
        if _root is None:
            _root = tempfile.mkdtemp(prefix="medvision_tiny_vlms_")
            atexit.register(shutil.rmtree, _root, True)
        out = os.path.join(_root, arch)
        os.makedirs(out, exist_ok=True)
        _BUILDERS[arch](out)
        _built[arch] = out
        return out


def medical_image(width: int = 96, height: int = 128):
    """A real MR slice (nibabel's bundled EPI brain volume), min-max rendered, RGB, resized."""
    import nibabel as nib
    import numpy as np
    from PIL import Image

    path = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "example4d.nii.gz")
    vol = np.asanyarray(nib.load(path).dataobj)[..., 0].astype(np.float32)
    sl = vol[:, :, vol.shape[2] // 2]
    sl = (255 * (sl - sl.min()) / max(float(np.ptp(sl)), 1e-6)).astype(np.uint8)
    return Image.fromarray(sl).convert("RGB").resize((width, height))


def make_request(
    text: str = "Estimate the major and minor axis lengths in mm.",
    image=None,
    sample_id: str = "s0",
    max_new_tokens: int = 6,
    image_first: bool = False,
):
    """A hand-built Request (user: text then image, unless ``image_first``) for adapter tests."""
    from medvision_eval.schema import (
        AnswerSpec, GenerationSettings, ImagePart, ImageRef, Message, Request, Sample, Target, TextPart,
    )

    image = image if image is not None else medical_image()
    sample = Sample(
        id=sample_id, task="tl_size", config="Demo_TL_Task01_Axial_Test", dataset="Demo", index=0,
        image=ImageRef(path="demo/case0.nii.gz", slice_axis=2, slice_index=12),
        image_size=image.size, pixel_spacing=(1.0, 1.0), label="lesion",
        target=Target(values=(10.0, 5.0), unit="mm", names=("major", "minor")),
    )
    parts = [TextPart(text=text), ImagePart(ref=sample.image.key(), image=image)]
    if image_first:
        parts.reverse()
    return Request(
        sample_id=sample_id, task="tl_size", messages=[Message(role="user", content=parts)],
        generation=GenerationSettings(max_new_tokens=max_new_tokens),
        answer=AnswerSpec(k=2, names=("major", "minor"), unit="mm", low=0.0, high=100.0),
        prompt_hash=f"h-{sample_id}", sample=sample,
    )
