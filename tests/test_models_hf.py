"""The hf adapter on tiny random Qwen2.5-VL, Gemma3 and Mllama models built in code."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from tiny_vlms import make_request, medical_image, tiny_model_dir

from medvision_eval.models.errors import ModelArgsError
from medvision_eval.models.hf import HFAdapter
from medvision_eval.models.processors import ProcessorLoadError, load_processor

ARCHES = ["qwen2_5_vl", "gemma3", "mllama"]


def requests(n: int, max_new_tokens: int = 6):
    sizes = [(96, 128), (128, 96), (80, 80), (70, 110), (120, 64)]
    return [
        make_request(text=f"Estimate lesion {i} axis lengths in mm.", image=medical_image(*sizes[i % len(sizes)]),
                     sample_id=f"s{i}", max_new_tokens=max_new_tokens)
        for i in range(n)
    ]


@pytest.mark.parametrize("arch", ARCHES)
def test_generate_through_processor_and_template(arch):
    ad = HFAdapter(pretrained=tiny_model_dir(arch), batch_size="2", dtype="float32")
    reqs = requests(3)
    out = ad.generate(reqs)
    assert len(out) == 3
    assert all(r.error is None and isinstance(r.text, str) for r in out), [r.error for r in out]
    assert all(r.usage.prompt_tokens and r.usage.prompt_tokens > 10 for r in out)
    assert all(1 <= r.usage.completion_tokens <= 6 for r in out)
    # what the adapter returns is exactly greedy decoding of the chat-templated prompt, one by one
    proc, model = ad.processor, ad.model
    conv = [{"role": "user", "content": [{"type": "text", "text": reqs[1].messages[0].content[0].text},
                                         {"type": "image", "image": reqs[1].messages[0].content[1].image}]}]
    inputs = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                      return_tensors="pt")
    seq = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out[1].text == proc.decode(seq[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    # the image really went in: image tokens in the prompt and pixel values produced
    assert "pixel_values" in inputs
    info = ad.info()
    assert info["backend"] == "hf" and info["batch_size"] == 2 and info["device"] == "cpu"
    assert info["transformers"] and info["torch"]


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "mllama"])
def test_batch_size_does_not_change_answers(arch):
    reqs = requests(5)
    one = HFAdapter(pretrained=tiny_model_dir(arch), batch_size=1).generate(reqs)
    four = HFAdapter(pretrained=tiny_model_dir(arch), batch_size=4).generate(reqs)
    assert [r.text for r in one] == [r.text for r in four]
    assert len({r.text for r in one}) > 1  # different images/prompts give different answers


def test_system_prompt_changes_the_prompt():
    d = tiny_model_dir("gemma3")
    plain = HFAdapter(pretrained=d)
    sys = HFAdapter(pretrained=d, system_prompt="You are an expert radiologist.")
    r = requests(1)
    a, b = plain.generate(r)[0], sys.generate(r)[0]
    assert b.usage.prompt_tokens > a.usage.prompt_tokens
    assert plain.identity() != sys.identity()


def test_geometry_comes_from_the_loaded_processor():
    q = HFAdapter(pretrained=tiny_model_dir("qwen2_5_vl"))
    g = q.perceived_geometry(1935, 2400)
    # tiny processor: max_pixels 112*112 -> a small multiple of 28
    assert g.canvas[0] % 28 == 0 and g.canvas[1] % 28 == 0 and g.canvas[0] * g.canvas[1] <= 112 * 112
    assert HFAdapter(pretrained=tiny_model_dir("gemma3")).perceived_geometry(182, 218).canvas == (56, 56)
    m = HFAdapter(pretrained=tiny_model_dir("mllama")).perceived_geometry(182, 218)
    assert m.canvas == (112, 112) and m.content == (93, 112)  # 2x2 tiles of 56, bottom-right padded
    # an explicit geometry overrides
    assert HFAdapter(pretrained=tiny_model_dir("gemma3"), geometry="gemma3").perceived_geometry(5, 5).canvas == (896, 896)


def test_identity_hashes_local_content_and_excludes_nothing_secret(tmp_path):
    import shutil

    d = tiny_model_dir("gemma3")
    a = HFAdapter(pretrained=d).identity()
    copy = tmp_path / "m"
    shutil.copytree(d, copy)
    assert HFAdapter(pretrained=str(copy)).identity()["local_content"] == a["local_content"]
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("1024", "2048"))
    assert HFAdapter(pretrained=str(copy)).identity()["local_content"] != a["local_content"]
    assert HFAdapter(pretrained=d, dtype="bfloat16").identity() != a


def test_unknown_and_bad_args_are_clear():
    with pytest.raises(ModelArgsError, match=r"unknown model argument\(s\) for 'hf': colour; valid: .*pretrained"):
        HFAdapter(pretrained="x", colour="red")
    with pytest.raises(ModelArgsError, match="batch_size"):
        HFAdapter(pretrained="x", batch_size="many")
    with pytest.raises(ModelArgsError, match="dtype"):
        HFAdapter(pretrained="x", dtype="int3")


def test_failures_become_responses_not_exceptions():
    ad = HFAdapter(pretrained=tiny_model_dir("gemma3"), batch_size=2)
    good = requests(2)
    bad = make_request(sample_id="bad")
    bad.messages[0].content[1].image = None  # pixels never attached
    out = ad.generate([good[0], bad, good[1]])
    assert [r.error is None for r in out] == [True, False, True]
    assert out[1].text is None and "no pixels" in out[1].error


def test_processor_without_image_part_is_an_error(tmp_path):
    # a Qwen2.5-VL folder whose processor files are gone: AutoProcessor would hand back a bare tokenizer
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(tiny_model_dir("qwen2_5_vl"), d)
    for f in d.iterdir():
        if f.name in ("processor_config.json", "preprocessor_config.json"):
            f.unlink()
    with pytest.raises(OSError, match="Can't load image processor"):
        load_processor(str(d), model_type="qwen2_5_vl")
    from transformers import AutoProcessor

    bare = AutoProcessor.from_pretrained(str(d))  # the silent failure this guards against
    assert getattr(bare, "image_processor", None) is None
    with pytest.raises(ProcessorLoadError, match="without an image processor"):
        load_processor(str(d), model_type="gemma3")  # generic path: AutoProcessor -> checked
