"""LLM-judge re-parse (issue 10 item 7): strict parse first, a verified judge answer recovers a
failed parse, both parses recorded, judge identity in the cache key."""

from __future__ import annotations

import json

from medvision_eval.data import MedVisionData
from medvision_eval.judge import Judge, decide, decode, judge_messages, judge_run, verify
from medvision_eval.models.base import ModelAdapter
from medvision_eval.plugins import Registry
from medvision_eval.runner import RunConfig, Runner
from medvision_eval.schema import ParseStatus, Prediction, Response
from medvision_eval.scoring import score_run


class Answerer(ModelAdapter):
    """Answers the truth in three styles by sample order: tagged, untagged sentence, no answer."""

    backend = "test"
    uses_truth = True  # answers from the ground truth: gets the runner's truth channel

    def identity(self):
        return {"adapter": "test:Answerer", "args": {}}

    def prepare(self, context):
        self.truth = context.truth

    def generate(self, requests):
        out = []
        for r in requests:
            sample = self.truth.sample(r)
            v = sample.target.values[0]
            style = sample.index % 3
            text = (f"<answer>{v:.2f}</answer>" if style == 0 else
                    f"After measuring, the result is {v:.2f} in the requested unit." if style == 1 else
                    "I cannot measure this from the image.")
            out.append(Response(text=text))
        return out


class FakeJudge(ModelAdapter):
    """A judge that points at the last number of the response (or finds none)."""

    backend = "test"

    def __init__(self, lie: bool = False, **kw):
        super().__init__(**kw)
        self.lie = lie
        self.calls = 0

    def identity(self):
        return {"adapter": "test:FakeJudge", "args": {"lie": self.lie}}

    def generate(self, requests):
        out = []
        for r in requests:
            self.calls += 1
            user = r.messages[-1].text()
            response = user.split("<<<\n", 1)[1].rsplit("\n>>>", 1)[0]
            import re

            nums = re.findall(r"\d+\.\d+", response)
            if not nums:
                obj = {"final_answer": {"status": "no_conclusion", "span": "", "values": []}}
            else:
                i = response.rfind(nums[-1])
                span = response[max(0, i - 20): i + len(nums[-1])]
                value = float(nums[-1]) + (1.0 if self.lie else 0.0)
                obj = {"final_answer": {"status": "present", "span": span, "values": [value]}}
            out.append(Response(text="```json\n" + json.dumps(obj) + "\n```"))
        return out


def test_verify_and_decide_rules():
    resp = "After measuring, the result is 12.50 in the requested unit."
    good = {"final_answer": {"status": "present", "span": "the result is 12.50", "values": [12.5]}}
    assert verify(resp, good, 1) == ("present", (12.5,), "ok")
    assert verify(resp, {"final_answer": {"status": "present", "span": "result is 13.50", "values": [13.5]}}, 1)[0] == "invalid"
    assert verify(resp, {"final_answer": {"status": "present", "span": "the result is 12.50", "values": [13.5]}}, 1)[2] == \
        "values are not the numbers in the span"
    assert verify(resp, {"final_answer": "12.5"}, 1)[0] == "invalid"
    assert decode("noise {\"a\": 1} trailing") == {"a": 1} and decode("no json") is None
    strict_ok = Prediction(status=ParseStatus.ok, values=(3.0,))
    failed = Prediction(status=ParseStatus.malformed)
    assert decide(strict_ok, ("present", (9.0,), "ok")) == (strict_ok, "conclusion_in_format")  # strict first
    pred, mode = decide(failed, ("present", (12.5,), "ok"))
    assert mode == "conclusion_off_format" and pred.values == (12.5,)
    assert decide(failed, ("no_conclusion", None, ""))[1] == "no_conclusion"
    assert decide(failed, ("invalid", None, "x"))[1] == "undetermined"
    assert decide(failed, None)[1] == "undetermined"
    msgs = judge_messages("tl_size", "x" * 9000)
    assert "characters elided" in msgs[1].text() and msgs[0].role == "system"


def test_judge_recovers_untagged_answers_and_records_both_parses(tmp_path, demo_root):
    config = RunConfig(tasks=["ad_measure"], model="answerer", output=str(tmp_path / "run"), protocol="corrected")
    registry = Registry.discover(entry_points=False)
    Runner(config, registry=registry, adapter=Answerer(), data=MedVisionData(demo_root)).execute()
    run = tmp_path / "run"
    before = score_run(run, registry=registry)
    sr_before = before.tasks["ad_measure"].metrics["all/SR"].value

    judge = FakeJudge()
    summary = judge_run(run, Judge(judge), registry=registry)["ad_measure"]
    n = sum(summary.values())
    assert summary["conclusion_off_format"] > 0 and summary["no_conclusion"] > 0 and summary["conclusion_in_format"] > 0
    after = score_run(run, registry=registry)
    sr_after = after.tasks["ad_measure"].metrics["all/SR"].value
    assert sr_after > sr_before
    assert n == len((run / "samples_ad_measure.jsonl").read_text().splitlines())

    lines = (run / "judged_ad_measure.jsonl").read_text().splitlines()
    header = json.loads(lines[0])["header"]
    assert header["judge"]["model"] == {"adapter": "test:FakeJudge", "args": {"lie": False}} and header["commit"] == "2f20f64"
    rows = [json.loads(x) for x in lines[1:]]
    recovered = [r for r in rows if r["mode"] == "conclusion_off_format"]
    assert all(r["raw"]["status"] == "malformed" and r["judged"]["status"] == "ok" for r in recovered)
    samples = [json.loads(x) for x in (run / "samples_ad_measure.jsonl").read_text().splitlines()]
    rec = next(s for s in samples if s["judge_mode"] == "conclusion_off_format")
    assert rec["raw_status"] == "malformed" and rec["status"] == "ok" and rec["metrics"]["MAE"] < 0.01

    # cached: the same judge asks nothing again; another judge identity asks again
    calls = judge.calls
    judge_run(run, Judge(judge), registry=registry)
    assert judge.calls == calls
    liar = FakeJudge(lie=True)
    summary = judge_run(run, Judge(liar), registry=registry)["ad_measure"]
    assert liar.calls == calls and "conclusion_off_format" not in summary  # lying values fail verification


class SizeRecorder(ModelAdapter):
    backend = "test"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes = []
        self.texts = []

    def identity(self):
        return {"adapter": "test:SizeRecorder", "args": dict(self.args)}

    def generate(self, requests):
        from medvision_eval.schema import ImagePart

        for r in requests:
            img = next(p.image for m in r.messages for p in m.content if isinstance(p, ImagePart))
            self.sizes.append(img.size)
            self.texts.append(r.messages[-1].text())
        return [Response(text="0.1, 0.1, 0.5, 0.5") for _ in requests]


def test_medvision_v0_preset_and_reshape_input(tmp_path, kits_root):
    from medvision_eval import later
    from medvision_eval.models.presets import preset_entries

    v0 = {e.name: e for e in preset_entries()}["medvision-v0-7b"]
    assert v0.defaults["pretrained"] == "YongchengYAO/MedVision-V0-7B"
    assert v0.defaults["reshape_image_hw"] == "512x512" and v0.defaults["max_new_tokens"] == 4096
    assert v0.defaults["system_prompt"] == later.RFT_SYSTEM_PROMPT and v0.defaults["geometry"] == "qwen2_5_vl"
    assert later.RFT_SYSTEM_PROMPT.startswith("A conversation between a User and an Assistant.")
    model = SizeRecorder(reshape_image_hw="512x512")
    assert model.input_hw == (512, 512)
    config = RunConfig(tasks=["detection:KiTS23"], model="rec", output=str(tmp_path / "run"))
    Runner(config, registry=Registry.discover(entry_points=False), adapter=model, data=MedVisionData(kits_root)).execute()
    assert model.sizes and set(model.sizes) == {(512, 512)}  # every slice zoomed to 512 x 512 as v1 reshape_image_hw


def test_judge_command_end_to_end(tmp_path, demo_root):
    import subprocess
    import sys

    env = {**__import__("os").environ, "MEDVISION_DATA_DIR": str(demo_root)}
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "medvision_eval.cli", "run", "--tasks", "ad_measure", "--model", "prior",
                    "--output", str(run), "--protocol", "corrected", "--data", str(demo_root)],
                   check=True, capture_output=True, text=True, env=env, timeout=300)
    done = subprocess.run([sys.executable, "-m", "medvision_eval.cli", "judge", str(run), "--judge", "oracle"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ad_measure:" in done.stdout
    header = json.loads((run / "judged_ad_measure.jsonl").read_text().splitlines()[0])["header"]
    assert "oracle" in json.dumps(header["judge"]["model"]).lower()
    bad = subprocess.run([sys.executable, "-m", "medvision_eval.cli", "judge", str(run), "--judge", "no-such-model"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and (bad.stdout + bad.stderr).strip().startswith("error: unknown model")


def test_v2_protocol_parses_inside_the_answer_tag_and_runs(tmp_path, demo_root):
    from medvision_eval.protocol import get_protocol
    from medvision_eval.tasks.parsing import StrictRules

    v2 = get_protocol("v2")
    rules = StrictRules(k=2, unit="mm")
    assert v2.parse("<think>3 and 4</think><answer>major 1,234.5, minor 2e-3</answer> 99", rules).values == (1234.5, float(__import__("numpy").float32(0.002)))  # np.float32 as v1
    assert v2.parse("the axes are 12 and 7", rules).status == ParseStatus.malformed  # no tag
    assert v2.parse("<answer>12</answer>", rules).status == ParseStatus.malformed  # one number, two needed
    assert v2.parse("<answer>0.1</answer>", StrictRules(k=1, unit="mm")).values == (float(__import__("numpy").float32(0.1)),)
    assert v2.v1_arithmetic and v2.render == "window" and v2.perceived == "fixed" and v2.near_zero_angle == 0.1
    config = RunConfig(tasks=["ad_measure", "detection"], model="answerer", output=str(tmp_path / "run"), protocol="v2")
    registry = Registry.discover(entry_points=False)
    Runner(config, registry=registry, adapter=Answerer(), data=MedVisionData(demo_root)).execute()
    results = score_run(tmp_path / "run", registry=registry)
    assert results.protocol["name"] == "v2" if isinstance(results.protocol, dict) else results.protocol.name == "v2"
    summary = judge_run(tmp_path / "run", Judge(FakeJudge()), registry=registry)
    assert summary["ad_measure"]["conclusion_off_format"] > 0
