"""The vllm adapter with a fake ``vllm`` module that records what the engine is asked."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

from tiny_vlms import make_request

from medvision_eval.models.errors import BackendNotInstalledError, ModelArgsError
from medvision_eval.models.vllm import VLLMAdapter


@dataclass
class FakeEngine:
    kwargs: dict
    calls: list = field(default_factory=list)

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        self.calls.append((messages, sampling_params))
        out = []
        for conv in messages:
            text = conv[-1]["content"][0]["text"]
            o = types.SimpleNamespace(text=f"answer to {text}", token_ids=[1, 2, 3])
            out.append(types.SimpleNamespace(outputs=[o], prompt_token_ids=list(range(50))))
        return out


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.engines = []

    def LLM(**kw):
        e = FakeEngine(kw)
        mod.engines.append(e)
        return e

    mod.LLM = LLM
    mod.SamplingParams = lambda **kw: dict(kw)
    mod.__version__ = "0.0-fake"
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


def test_engine_arguments_and_chat_messages(fake_vllm):
    ad = VLLMAdapter(pretrained="Qwen/Qwen2.5-VL-7B-Instruct", tensor_parallel_size="4", data_parallel_size="2",
                     gpu_memory_utilization="0.99", max_num_seqs="80", limit_mm_per_prompt='{"image": 1}',
                     max_new_tokens="1024", geometry="qwen2_5_vl")
    reqs = [make_request(text=f"q{i}", sample_id=f"s{i}").model_copy(update={"generation": ad.generation_settings()})
            for i in range(3)]
    out = ad.generate(reqs)
    assert [r.text for r in out] == ["answer to q0", "answer to q1", "answer to q2"]
    assert out[0].usage.prompt_tokens == 50 and out[0].usage.completion_tokens == 3
    (engine,) = fake_vllm.engines
    assert engine.kwargs == {"model": "Qwen/Qwen2.5-VL-7B-Instruct", "dtype": "bfloat16", "tensor_parallel_size": 4,
                             "data_parallel_size": 2, "gpu_memory_utilization": 0.99, "max_num_seqs": 80,
                             "limit_mm_per_prompt": {"image": 1}, "trust_remote_code": False}
    (convs, params), = engine.calls  # one batched LLM.chat call
    assert len(convs) == 3
    assert params == {"temperature": 0.0, "top_p": 0.95, "max_tokens": 1024, "seed": None}
    content = convs[0][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url"]
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert ad.perceived_geometry(1935, 2400).canvas == (1932, 2408)
    assert ad.info()["vllm"] is None or isinstance(ad.info()["vllm"], str)


def test_system_prompt_goes_first(fake_vllm):
    ad = VLLMAdapter(pretrained="m", system_prompt="You are an expert radiologist.")
    ad.generate([make_request()])
    convs, _ = fake_vllm.engines[0].calls[0]
    assert convs[0][0] == {"role": "system", "content": [{"type": "text", "text": "You are an expert radiologist."}]}


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    ad = VLLMAdapter(pretrained="m")
    out = ad.generate([make_request()])
    assert out[0].text is None and "pip install 'medvision-eval[vllm]' on a GPU machine" in out[0].error
    with pytest.raises(BackendNotInstalledError):
        _ = ad.llm


def test_argument_validation():
    with pytest.raises(ModelArgsError, match="tensor_parallel_size"):
        VLLMAdapter(pretrained="m", tensor_parallel_size="0")
    with pytest.raises(ModelArgsError, match="gpu_memory_utilization"):
        VLLMAdapter(pretrained="m", gpu_memory_utilization="1.5")
    with pytest.raises(ModelArgsError, match="limit_mm_per_prompt"):
        VLLMAdapter(pretrained="m", limit_mm_per_prompt="{image: 1")
    with pytest.raises(ModelArgsError, match="unknown model argument.*tp_size"):
        VLLMAdapter(pretrained="m", tp_size="2")
