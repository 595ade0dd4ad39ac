"""The lmms bridge running lmms-eval model classes that wrap the tiny Gemma3 (chat and simple)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

pytest.importorskip("lmms_eval")

from lmms_eval.api.model import lmms  # noqa: E402
from lmms_eval.protocol import ChatMessages  # noqa: E402

from tiny_vlms import make_request, medical_image, tiny_model_dir  # noqa: E402

from medvision_eval.models.errors import ModelArgsError  # noqa: E402
from medvision_eval.models.lmms import LmmsAdapter  # noqa: E402

SEEN: dict[str, list] = {"chat": [], "simple": []}


def _tiny():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    d = tiny_model_dir("gemma3")
    return AutoProcessor.from_pretrained(d), AutoModelForImageTextToText.from_pretrained(d).eval()


def _greedy(proc, model, hf_messages, max_new_tokens):
    inputs = proc.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                      return_tensors="pt")
    seq = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return proc.decode(seq[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True), inputs


class TinyGemmaChat(lmms):
    """An lmms-eval chat-protocol model (as lmms_eval/models/chat/*) around the tiny Gemma3."""

    is_simple = False

    def __init__(self, tag: str = "x", batch_size: int = 1, **kw) -> None:
        super().__init__()
        self.tag = tag
        self.proc, self.model = _tiny()

    def generate_until(self, requests):
        out = []
        for ctx, doc_to_messages, gen_kwargs, doc_id, task, split in [r.args for r in requests]:
            msgs = ChatMessages(messages=doc_to_messages(self.task_dict[task][split][doc_id]))
            hf = msgs.to_hf_messages()
            images, _, _ = msgs.extract_media()
            SEEN["chat"].append((ctx, [c["type"] for c in hf[-1]["content"]], len(images), gen_kwargs))
            text, _ = _greedy(self.proc, self.model, hf, gen_kwargs["max_new_tokens"])
            out.append(f"{self.tag}:{text}")
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError


class TinyGemmaSimple(TinyGemmaChat):
    """The simple protocol (as lmms_eval/models/simple/*): context string + doc_to_visual."""

    is_simple = True

    def generate_until(self, requests):
        out = []
        for ctx, gen_kwargs, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            SEEN["simple"].append((ctx, len(visuals), visuals[0].size))
            hf = [{"role": "user", "content": [{"type": "image", "image": visuals[0]}, {"type": "text", "text": ctx}]}]
            text, _ = _greedy(self.proc, self.model, hf, gen_kwargs["max_new_tokens"])
            out.append(text)
        return out


def test_chat_class_end_to_end():
    SEEN["chat"].clear()
    ad = LmmsAdapter(class_path="test_models_lmms:TinyGemmaChat", model_args="tag=tiny", max_new_tokens="5")
    reqs = [make_request(text=f"lesion {i} axes?", image=medical_image(80 + 8 * i, 96), sample_id=f"s{i}",
                         max_new_tokens=5) for i in range(3)]
    out = ad.generate(reqs)
    assert all(r.error is None and r.text.startswith("tiny:") for r in out), [r.error for r in out]
    assert [s[0] for s in SEEN["chat"]] == ["lesion 0 axes?", "lesion 1 axes?", "lesion 2 axes?"]
    assert all(s[1] == ["text", "image"] and s[2] == 1 for s in SEEN["chat"])  # order kept, image delivered
    assert SEEN["chat"][0][3]["max_new_tokens"] == 5 and SEEN["chat"][0][3]["do_sample"] is False
    # the bridge's answer is exactly what the wrapped model generates for that prompt
    proc, model = _tiny()
    hf = [{"role": "user", "content": [{"type": "text", "text": "lesion 1 axes?"},
                                       {"type": "image", "image": reqs[1].messages[0].content[1].image}]}]
    assert out[1].text == "tiny:" + _greedy(proc, model, hf, 5)[0]
    info = ad.info()
    assert info["protocol"] == "chat" and info["lmms-eval"] == "0.7.3"


def test_simple_class_end_to_end():
    SEEN["simple"].clear()
    ad = LmmsAdapter(class_path="test_models_lmms:TinyGemmaSimple")
    out = ad.generate([make_request(text="how long?", image=medical_image(70, 90), max_new_tokens=3)])
    assert out[0].error is None and isinstance(out[0].text, str)
    assert SEEN["simple"] == [("how long?", 1, (70, 90))]


def test_resolution_errors_are_clear():
    with pytest.raises(ModelArgsError, match="exactly one of model="):
        LmmsAdapter()
    bad = LmmsAdapter(model="no_such_lmms_model_xyz")
    r = bad.generate([make_request()])[0]
    assert r.text is None and "no_such_lmms_model_xyz" in r.error


def test_cli_model_lmms_suffix_runs_the_class_on_demo_data(demo_root, tmp_path, capsys):
    """``--model lmms:pkg.mod:Class`` with an lmms-eval argument passed through --model-args."""
    import json

    from medvision_eval.cli import main

    run_dir = tmp_path / "run"
    code = main(["--tasks", "tl_size", "--model", "lmms:test_models_lmms:TinyGemmaChat", "--model-args",
                 "tag=viacli,max_new_tokens=3", "--data", str(demo_root), "--limit", "2", "--output", str(run_dir),
                 "--quiet"])
    assert code == 0, capsys.readouterr().out
    rows = [json.loads(line) for line in (run_dir / "samples_tl_size.jsonl").read_text().splitlines()]
    assert len(rows) >= 2 and all(r["response"].startswith("viacli:") for r in rows)
    identity = json.loads((run_dir / "run.json").read_text())["model_identity"]
    assert identity["class_path"] == "test_models_lmms:TinyGemmaChat" and identity["model_args"] == "tag=viacli"
