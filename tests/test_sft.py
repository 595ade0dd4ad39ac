"""medvision-sft on CPU: a tiny Qwen2.5-VL fine-tuned a few steps on the demo train split, its
checkpoint loaded back as ``--model lora:PATH``, merged, and rejected when it does not fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from medvision_sft.cli import main as sft_main  # noqa: E402
from medvision_sft.cli import prompt_corpus  # noqa: E402
from medvision_sft.data import DataSpec  # noqa: E402
from medvision_sft.tiny import build_tiny_qwen  # noqa: E402
from medvision_sft.train import TrainError, TrainSpec, train  # noqa: E402

from medvision_eval.cli import main as eval_main  # noqa: E402
from medvision_eval.models.lora import CheckpointError, LoRAAdapter  # noqa: E402


@pytest.fixture(scope="module")
def tiny(demo_root, tmp_path_factory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny") / "qwen", prompt_corpus(str(demo_root), per_config=2))


def spec(tiny: Path, demo_root: Path, out: Path, **kw) -> TrainSpec:
    base = dict(output=str(out), model="hf", model_args={"pretrained": str(tiny), "dtype": "float32"},
                data=DataSpec(tasks=["tl_size"], limits={"tl_size": 24}, val={"tl_size": 4}), data_root=str(demo_root),
                max_steps=8, grad_accum=1, learning_rate=3e-3, warmup=0.0, save_steps=4, eval_steps=4,
                logging_steps=1, threads=1)
    base.update(kw)
    return TrainSpec(**base)


@pytest.fixture(scope="module")
def trained(tiny, demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    return train(spec(tiny, demo_root, out), progress=False)


def test_loss_is_finite_and_falls(trained):
    losses = [loss for _, loss in trained.manifest.losses["train"]]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert trained.manifest.losses["eval"], "validation loss is logged"


def test_label_mask_covers_exactly_answer_and_end_of_turn(tiny, trained):
    from medvision_eval.models.processors import load_processor
    from medvision_sft.collate import SFTCollator, end_of_turn_ids
    from medvision_sft.data import read_jsonl

    proc = load_processor(str(tiny), model_type="qwen2_5_vl")
    rows = read_jsonl(trained.output / "data" / "train.jsonl")[:3]
    end = end_of_turn_ids(proc)
    assert end == {proc.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    batch = SFTCollator(proc, end_ids=end)(rows)
    for i, row in enumerate(rows):
        labelled = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert proc.tokenizer.decode(labelled) == row["answer"] + "<|im_end|>"
        # exactly: the labelled positions are one contiguous run ending at the first <|im_end|> after the prompt
        pos = (batch["labels"][i] != -100).nonzero().flatten().tolist()
        assert pos == list(range(pos[0], pos[-1] + 1))
    assert rows[0]["answer"].count(",") == 1 and len(rows[0]["answer"].split(",")[0].split(".")[1]) == 3
    full = SFTCollator(proc, end_ids=end, loss="full")(rows)
    image_id = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_full = int((full["labels"][0] != -100).sum())
    assert n_full > int((batch["labels"][0] != -100).sum()) + 20  # prompt tokens are trained too
    assert not (full["labels"][0] == image_id).any()


def test_adapter_holds_lm_head_and_embedding_copies(trained):
    from safetensors import safe_open

    final = trained.final
    with safe_open(str(final / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("lm_head" in k for k in keys) and any("embed_tokens" in k for k in keys)
    assert any("lora_A" in k for k in keys)
    m = json.loads((final / "medvision_checkpoint.json").read_text())
    assert m["modules_to_save"] == ["lm_head", "embed_tokens"]
    assert m["hyperparameters"]["lora_r"] == 16 and m["hyperparameters"]["lora_alpha"] == 16
    assert m["hyperparameters"]["max_grad_norm"] == 0.3 and m["base"]["model_type"] == "qwen2_5_vl"
    assert m["image_first"] is False and m["protocol"] == "paper" and m["data"]["fingerprint"]
    assert m["versions"]["trl"] and m["versions"]["peft"]


def _batch(adapter, text="Estimate the major and minor axis lengths in mm."):
    from tiny_vlms import medical_image

    from medvision_eval.models._common import to_hf_chat
    from medvision_eval.schema import ImagePart, Message, TextPart

    msgs = [Message(role="user", content=[TextPart(text=text), ImagePart(ref="x", image=medical_image())])]
    return adapter.processor.apply_chat_template(to_hf_chat(msgs), add_generation_prompt=True, tokenize=True,
                                                 return_dict=True, return_tensors="pt")


def test_reload_gives_identical_logits(trained):
    from medvision_eval.models.hf import HFAdapter

    loaded = LoRAAdapter(path=str(trained.final), dtype="float32")
    inputs = _batch(loaded)
    trained.model.eval()
    with torch.no_grad():
        want = trained.model(**inputs).logits
        got = loaded.model(**inputs).logits
        base = HFAdapter(pretrained=loaded.settings.pretrained, dtype="float32").model(**inputs).logits
    assert torch.equal(want, got)
    assert not torch.allclose(want, base, atol=1e-3)  # the adapter does change the model


def test_merge_gives_identical_greedy_text(trained, tmp_path):
    from tiny_vlms import make_request

    from medvision_eval.models.hf import HFAdapter
    from medvision_sft.merge import merge

    merged = tmp_path / "merged"
    merge(trained.final, merged)
    assert (merged / "model.safetensors").is_file() and (merged / "medvision_merged.json").is_file()
    reqs = [make_request(text=f"Estimate the major and minor axis lengths of lesion {i} in mm.", sample_id=f"s{i}",
                         max_new_tokens=12) for i in range(3)]
    a = LoRAAdapter(path=str(trained.final), dtype="float32").generate(reqs)
    b = HFAdapter(pretrained=str(merged), dtype="float32").generate(reqs)
    assert [r.text for r in a] == [r.text for r in b] and all(r.ok for r in a)


def test_lora_and_merged_run_through_medvision_eval(trained, demo_root, tmp_path, capsys):
    common = ["--tasks", "tl_size", "--data", str(demo_root), "--limit", "2", "--quiet"]
    assert eval_main(["run", *common, "--model", f"lora:{trained.final}", "--model-args", "max_new_tokens=8",
                      "--output", str(tmp_path / "lora")]) == 0
    assert sft_main(["merge", str(trained.final), str(tmp_path / "merged")]) == 0
    assert eval_main(["run", *common, "--model", "hf", "--model-args",
                      f"pretrained={tmp_path / 'merged'},max_new_tokens=8", "--output", str(tmp_path / "m")]) == 0
    for run in ("lora", "m"):
        res = json.loads((tmp_path / run / "results.json").read_text())
        assert res["tasks"]["tl_size"]["n_samples"] == 4
    a = [json.loads(x)["response"] for x in (tmp_path / "lora" / "samples_tl_size.jsonl").read_text().splitlines()]
    b = [json.loads(x)["response"] for x in (tmp_path / "m" / "samples_tl_size.jsonl").read_text().splitlines()]
    assert a == b
    run = json.loads((tmp_path / "lora" / "run.json").read_text())
    assert run["model_identity"]["adapter"] == "lora" and run["model_identity"]["image_first"] is False


def test_wrong_base_or_missing_file_is_a_clear_error(trained, tmp_path, capsys):
    other = build_tiny_qwen(tmp_path / "other", ["a different corpus 123"], seed=1)
    with pytest.raises(CheckpointError, match="wrong base model"):
        LoRAAdapter(path=str(trained.final), pretrained=str(other))
    broken = tmp_path / "broken"
    shutil.copytree(trained.final, broken)
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing file adapter_model.safetensors"):
        LoRAAdapter(path=str(broken))
    tampered = tmp_path / "tampered"
    shutil.copytree(trained.final, tampered)
    with open(tampered / "adapter_config.json", "a") as f:
        f.write(" ")
    with pytest.raises(CheckpointError, match="adapter_config.json does not match"):
        LoRAAdapter(path=str(tampered))
    # through the CLI: one error line naming the file, exit 2, nothing answered
    capsys.readouterr()
    code = eval_main(["run", "--tasks", "tl_size", "--model", f"lora:{broken}", "--output", str(tmp_path / "r"),
                      "--quiet"])
    out = capsys.readouterr().out
    assert code == 2 and "error:" in out and "adapter_model.safetensors" in out and "Traceback" not in out
    assert not (tmp_path / "r" / "responses.jsonl").exists()
    code = eval_main(["run", "--tasks", "tl_size", "--model", f"lora:{trained.final}", "--model-args",
                      f"pretrained={other}", "--output", str(tmp_path / "r2"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 2 and "wrong base model" in out and str(other) in out.replace("\n", "")


def test_resume_and_changed_config(tiny, demo_root, tmp_path):
    out = tmp_path / "run"
    s = spec(tiny, demo_root, out, max_steps=4, save_steps=2, eval_steps=100,
             data=DataSpec(tasks=["ad_measure"], limits={"ad_measure": 8}))
    first = train(s, progress=False)
    assert first.manifest.losses["steps"] == 4 and first.resumed_from is None
    shutil.rmtree(out / "checkpoint-4")  # interrupted after step 2
    shutil.rmtree(out / "final")
    again = train(s, progress=False)
    assert again.resumed_from and again.resumed_from.endswith("checkpoint-2")
    assert again.manifest.losses["steps"] == 4
    with pytest.raises(TrainError, match="different configuration"):
        train(spec(tiny, demo_root, out, max_steps=5, data=s.data), progress=False)


def test_data_order_seed_and_image_first(tiny, demo_root, tmp_path):
    from medvision_eval.data import MedVisionData
    from medvision_eval.models.hf import HFAdapter
    from medvision_eval.plugins import Registry
    from medvision_sft.data import build_data

    reg, data = Registry.discover(), MedVisionData(demo_root)
    ad = HFAdapter(pretrained=str(tiny))
    ds = DataSpec(tasks=["tl_size", "ad_measure"], limits={"tl_size": 10}, val={"ad_measure": 3}, seed=7)
    a = build_data(ds, ad, data, reg, tmp_path / "img")
    b = build_data(ds, ad, data, reg, tmp_path / "img")
    assert a.fingerprint == b.fingerprint and [e["id"] for e in a.train] == [e["id"] for e in b.train]
    assert a.per_task["tl_size"]["train"] == 10 and a.per_task["ad_measure"]["val"] == 3
    assert all("/train/" in e["id"] for e in a.train + a.val)
    assert not {e["id"] for e in a.train} & {e["id"] for e in a.val}
    c = build_data(DataSpec(**{**ds.__dict__, "seed": 8}), ad, data, reg, tmp_path / "img")
    assert c.fingerprint != a.fingerprint
    first = build_data(DataSpec(**{**ds.__dict__, "image_first": True}), ad, data, reg, tmp_path / "img")
    conv = json.loads(first.train[0]["messages"])
    assert [p["type"] for p in conv[0]["content"]] == ["image", "text"]
    assert [p["type"] for p in json.loads(a.train[0]["messages"])[0]["content"]] == ["text", "image"]


def test_vllm_lora_path_with_a_recording_fake(trained, tmp_path, monkeypatch):
    import sys
    import types

    from tiny_vlms import make_request

    calls = []

    class Engine:
        def __init__(self, **kw):
            self.kw = kw

        def chat(self, convs, sampling_params=None, lora_request=None, use_tqdm=True):
            calls.append((self.kw, convs, lora_request))
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="12.000, 8.000")]) for _ in convs]

    vllm = types.ModuleType("vllm")
    vllm.LLM = Engine
    vllm.SamplingParams = lambda **kw: kw
    lora_mod, req_mod = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    req_mod.LoRARequest = lambda name, i, path: ("LoRARequest", name, i, path)
    for name, mod in (("vllm", vllm), ("vllm.lora", lora_mod), ("vllm.lora.request", req_mod)):
        monkeypatch.setitem(sys.modules, name, mod)

    with pytest.raises(CheckpointError, match="medvision-sft merge"):
        LoRAAdapter(path=str(trained.final), backend="vllm")
    plain = tmp_path / "plain"  # an adapter without modules_to_save, as --no-save-embeddings writes
    shutil.copytree(trained.final, plain)
    m = json.loads((plain / "medvision_checkpoint.json").read_text())
    m["modules_to_save"], m["image_first"] = [], True
    (plain / "medvision_checkpoint.json").write_text(json.dumps(m))
    ad = LoRAAdapter(path=str(plain), backend="vllm", max_new_tokens=16)
    out = ad.generate([make_request(sample_id="a"), make_request(sample_id="b")])
    assert [r.text for r in out] == ["12.000, 8.000"] * 2
    (kw, convs, lora_request), = calls
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 16 and kw["model"] == m["base"]["pretrained"]
    assert lora_request == ("LoRARequest", "plain", 1, str(plain.resolve()))
    assert [p["type"] for p in convs[0][0]["content"]] == ["image_url", "text"]  # the training order


def test_list_models_shows_checkpoints_and_help(trained, monkeypatch, capsys):
    monkeypatch.setenv("MEDVISION_CHECKPOINTS", str(trained.output))
    assert eval_main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "lora:run" in out and "lora" in out
    with pytest.raises(SystemExit) as e:
        sft_main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--paper-mix" in text and "medvision-eval --tasks tl_size --model lora:" in text


def test_qlora_trains_on_a_4bit_base_and_evaluates(tiny, demo_root, tmp_path):
    pytest.importorskip("bitsandbytes")
    from tiny_vlms import make_request

    r = train(spec(tiny, demo_root, tmp_path / "q", qlora=True, max_steps=3, eval_steps=100,
                   data=DataSpec(tasks=["ad_measure"], limits={"ad_measure": 6})), progress=False)
    assert any(type(m).__name__ == "Linear4bit" for m in r.model.modules())
    assert all(torch.isfinite(torch.tensor([x for _, x in r.manifest.losses["train"]])))
    assert r.manifest.hyperparameters["qlora"] is True
    out = LoRAAdapter(path=str(r.final), max_new_tokens=4).generate([make_request()])
    assert out[0].ok


def test_a_finished_run_rerun_trains_nothing(tiny, demo_root, trained):
    again = train(spec(tiny, demo_root, trained.output), progress=False)
    assert again.already_done and again.manifest.losses == trained.manifest.losses
    assert again.final == trained.final


def test_a_base_whose_processor_differs_is_a_clear_error(trained, tiny, tmp_path):
    """A hub base (no local content hash) whose tokenizer or chat template changed since training."""
    base = tmp_path / "base"
    shutil.copytree(tiny, base)
    template = base / "chat_template.jinja"
    template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained.final, ckpt)
    m = json.loads((ckpt / "medvision_checkpoint.json").read_text())
    m["base"]["local_content"] = None
    (ckpt / "medvision_checkpoint.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="processor of base .* differs .*chat_template"):
        LoRAAdapter(path=str(ckpt), pretrained=str(base))
    LoRAAdapter(path=str(ckpt), pretrained=str(tiny))  # the unchanged processor passes


def test_trainer_config_is_the_papers_and_passes_fsdp_through(tmp_path):
    from medvision_sft.train import sft_config

    cfg_file = tmp_path / "fsdp.json"
    cfg_file.write_text(json.dumps({"min_num_params": 1000}))
    c = sft_config(TrainSpec(output=str(tmp_path), model="hf", fsdp="full_shard auto_wrap", fsdp_config=str(cfg_file),
                             report_to="tensorboard"), tmp_path, has_val=True)
    assert c.fsdp and c.fsdp_config["min_num_params"] == 1000 and c.report_to == ["tensorboard"]
    assert (c.learning_rate, c.warmup_steps, c.max_grad_norm) == (2e-4, 0.03, 0.3) and c.lr_scheduler_type == "linear"
    assert "fused" in str(c.optim).lower() and c.gradient_accumulation_steps == 12 and c.num_train_epochs == 10
    assert c.eval_strategy == "steps" and c.save_steps == 50 and c.save_total_limit == 10
    assert not c.bf16 and not c.activation_checkpointing  # CPU: fp32, no checkpointing


def test_bad_training_input_is_one_error_line(tmp_path, capsys):
    cases = [
        (["--model", "hf", "--model-args", f"pretrained={tmp_path / 'nowhere'}", "--tasks", "tl_size"], "nowhere"),
        (["--model", "prior", "--tasks", "tl_size"], "not a transformers model"),
        (["--model", "hf", "--model-args", f"pretrained={tmp_path}", "--tasks", "tl_size", "--limit", "tl=5"],
         "unknown task family 'tl'"),
    ]
    for args, needle in cases:
        code = sft_main(["train", *args, "--output", str(tmp_path / "out"), "--quiet"])
        out = capsys.readouterr().out
        assert code == 2 and out.startswith("error:") and needle in out and "Traceback" not in out
    assert not (tmp_path / "out").exists()


def test_a_base_folder_that_does_not_exist_is_one_clear_error(trained, tmp_path, capsys):
    capsys.readouterr()
    code = eval_main(["run", "--tasks", "tl_size", "--model", f"lora:{trained.final}", "-M", "pretrained=/nonexistent/base",
                      "--output", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out and "Repo id" not in out
    assert "pretrained=/nonexistent/base: no such folder" in errors[0]
    assert not (tmp_path / "r" / "responses.jsonl").exists()


def test_running_on_other_tasks_or_protocol_warns_once_at_load(trained, demo_root, tmp_path, capsys):
    def run(*extra):
        capsys.readouterr()
        code = eval_main(["run", "--data", str(demo_root), "--limit", "1", "--model", f"lora:{trained.final}",
                          "-M", "max_new_tokens=4", "--output", str(tmp_path / "r"), "--overwrite", *extra])
        return code, [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]

    code, warnings = run("--tasks", "tl_size")
    assert code == 0 and warnings == []
    code, warnings = run("--tasks", "tl_size,detection", "--protocol", "corrected")
    assert code == 0 and warnings == [
        f"warning: lora:{trained.final} was trained on tasks tl_size under protocol paper; this run asks for "
        "tasks tl_size, detection under protocol corrected"]
