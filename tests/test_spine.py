"""The spine on a toy task: persistence, resume, caching, errors, scoring from stored responses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvision_eval.plugins import PluginError, Registry
from medvision_eval.runner import RunConfig, Runner
from medvision_eval.scoring import score_run
from medvision_eval.store import ResponseLog, ResponseRecord, load_responses, repair_torn_tail
from medvision_eval.schema import Response

from toy import CountingModel, ToyData, ToyPlugin


def registry() -> Registry:
    return Registry.discover(entry_points=False, extra_plugins=(ToyPlugin(),))


def make_runner(tmp_path: Path, model: CountingModel, data: ToyData | None = None, **cfg) -> Runner:
    config = RunConfig(tasks=["toy"], model="counting", output=str(tmp_path / "run"), **cfg)
    return Runner(config, registry=registry(), adapter=model, data=data or ToyData())


def read_samples(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples_toy.jsonl").read_text().splitlines()]


def test_run_persists_every_answer_and_scores(tmp_path):
    model = CountingModel()
    summary = make_runner(tmp_path, model).execute()
    assert summary.planned == 40 and summary.sent == 40 and summary.errors == 0
    records = load_responses(summary.output)
    assert len(records) == 40
    results = score_run(summary.output, registry=registry())
    assert results.tasks["toy"].metrics["all/MAE"].value == pytest.approx(0.0, abs=0.051)
    rows = read_samples(summary.output)
    assert [r["id"] for r in rows] == [f"ToyA/test/{i:04d}" for i in range(20)] + [f"ToyB/test/{i:04d}" for i in range(20)]
    assert all(r["status"] == "ok" and r["response"].startswith("The answer is") for r in rows)
    assert json.loads((summary.output / "results.json").read_text())["schema_version"] == "2.0"


def test_rerun_makes_zero_model_calls(tmp_path):
    make_runner(tmp_path, CountingModel()).execute()
    again = CountingModel()
    summary = make_runner(tmp_path, again).execute()
    assert again.calls == [] and summary.cached == 40 and summary.sent == 0


def test_no_cache_sends_everything_again(tmp_path):
    make_runner(tmp_path, CountingModel()).execute()
    again = CountingModel()
    make_runner(tmp_path, again, no_cache=True).execute()
    assert len(again.calls) == 40


def test_errors_are_recorded_not_cached_and_retried(tmp_path):
    fail = {"ToyA/test/0003", "ToyB/test/0011"}
    first = make_runner(tmp_path, CountingModel(fail_ids=fail)).execute()
    assert first.errors == 2 and first.sent == 40
    results = score_run(first.output, registry=registry())
    assert results.tasks["toy"].parse_stats["error"] == 2
    rows = {r["id"]: r for r in read_samples(first.output)}
    assert rows["ToyA/test/0003"]["status"] == "error" and "HTTP 500" in rows["ToyA/test/0003"]["error"]

    retry = CountingModel()
    second = make_runner(tmp_path, retry).execute()
    assert sorted(retry.calls) == sorted(fail)
    assert second.errors == 0
    results = score_run(second.output, registry=registry())
    assert results.tasks["toy"].parse_stats["error"] == 0
    assert results.counts.model_dump() == {"planned": 40, "answered": 40, "errors": 0, "no_response": 0}


def test_bad_sample_data_is_a_sample_error_and_the_run_goes_on(tmp_path):
    data = ToyData(bad_ids={"ToyA/test/0005"})
    summary = make_runner(tmp_path, CountingModel(), data=data).execute()
    assert summary.errors == 1
    rows = {r["id"]: r for r in read_samples_after_score(summary.output)}
    assert rows["ToyA/test/0005"]["status"] == "error"
    assert "ToyA/vol1.nii.gz: truncated gzip stream" in rows["ToyA/test/0005"]["error"]
    assert sum(r["status"] == "ok" for r in rows.values()) == 39


def read_samples_after_score(run_dir: Path) -> list[dict]:
    score_run(run_dir, registry=registry())
    return read_samples(run_dir)


def test_resume_renders_nothing_for_answered_samples(tmp_path):
    make_runner(tmp_path, CountingModel()).execute()
    data = ToyData()
    make_runner(tmp_path, CountingModel(), data=data).execute()
    assert data.images_decoded == 0


def test_cache_key_separates_models_and_prompts(tmp_path):
    class OtherModel(CountingModel):
        def identity(self):
            return {"adapter": "other", "args": {}}

    make_runner(tmp_path, CountingModel()).execute()
    other = OtherModel()
    make_runner(tmp_path, other).execute()
    assert len(other.calls) == 40  # a different model never reuses answers

    class BiggerView(CountingModel):
        def perceived_geometry(self, width, height):
            from medvision_eval.models.base import PerceivedGeometry

            return PerceivedGeometry(original=(width, height), canvas=(64, 48), content=(64, 48), v1=(64, 48))

        def identity(self):
            return {"adapter": "toy:CountingModel", "args": {}}

    bigger = BiggerView()
    make_runner(tmp_path, bigger).execute()
    assert len(bigger.calls) == 40  # same identity, different prompt text -> new key


def test_limit_takes_first_n_in_dataset_order(tmp_path):
    make_runner(tmp_path, CountingModel(), limit=3).execute()
    score_run(tmp_path / "run", registry=registry())
    ids = [r["id"] for r in read_samples(tmp_path / "run")]
    assert ids == ["ToyA/test/0000", "ToyA/test/0001", "ToyA/test/0002", "ToyB/test/0000", "ToyB/test/0001", "ToyB/test/0002"]


def test_batch_size_is_respected_and_scores_do_not_depend_on_it(tmp_path):
    a = CountingModel()
    make_runner(tmp_path / "a", a, batch_size=7).execute()
    assert max(a.batch_sizes) == 7
    b = CountingModel()
    make_runner(tmp_path / "b", b, batch_size=1).execute()
    ra = score_run(tmp_path / "a" / "run", registry=registry()).tasks
    rb = score_run(tmp_path / "b" / "run", registry=registry()).tasks
    assert ra == rb


def test_shards_partition_the_samples(tmp_path):
    ids = set()
    for i in range(3):
        model = CountingModel()
        make_runner(tmp_path / f"s{i}", model, shard=(i, 3)).execute()
        assert not ids & set(model.calls)
        ids |= set(model.calls)
    assert len(ids) == 40


def test_torn_tail_is_cut_and_never_duplicated(tmp_path):
    log = ResponseLog(tmp_path)
    for i in range(3):
        log.append(ResponseRecord(key=f"k{i}", task="toy", sample_id=f"s{i}", prompt_hash="h", response=Response(text="1")))
    log.close()
    path = tmp_path / "responses.jsonl"
    with open(path, "a") as fh:
        fh.write('{"key": "k3", "task": "to')  # killed mid-write
    assert set(load_responses(tmp_path)) == {"k0", "k1", "k2"}
    repair_torn_tail(path)
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 3
    log = ResponseLog(tmp_path)
    log.append(ResponseRecord(key="k3", task="toy", sample_id="s3", prompt_hash="h", response=Response(text="2")))
    log.close()
    assert set(load_responses(tmp_path)) == {"k0", "k1", "k2", "k3"}


def test_name_clash_is_an_error_and_override_warns():
    from medvision_eval.hookspecs import TaskEntry, hookimpl

    class Clash:
        @hookimpl
        def medvision_eval_tasks(self):
            return [TaskEntry(name="detection", target="x:Y")]

    with pytest.raises(PluginError, match="'detection' is provided twice"):
        Registry.discover(entry_points=False, extra_plugins=(Clash(),))

    class Override:
        @hookimpl
        def medvision_eval_tasks(self):
            return [TaskEntry(name="detection", target="x:Y", override=True)]

    with pytest.warns(UserWarning, match="overrides 'detection'"):
        reg = Registry.discover(entry_points=False, extra_plugins=(Override(),))
    assert reg.task("detection").entry.target == "x:Y"


def test_unknown_names_suggest_close_matches():
    reg = registry()
    with pytest.raises(KeyError, match="Did you mean: detection"):
        reg.task("detectoin")


def test_model_unavailable_stops_the_run_and_keeps_partial_answers(tmp_path):
    from medvision_eval.models.errors import ModelUnavailableError
    from medvision_eval.runner import RunError

    class GivesUp(CountingModel):
        def generate(self, requests):
            if len(self.calls) >= 6:
                err = ModelUnavailableError("10 consecutive failures from http://127.0.0.1:9/v1")
                err.responses = [Response(text="12.0"), None] + [None] * (len(requests) - 2)
                raise err
            return super().generate(requests)

    with pytest.raises(RunError, match="model unavailable, run stopped: 10 consecutive failures"):
        make_runner(tmp_path, GivesUp(), batch_size=3).execute()
    stored = load_responses(tmp_path / "run")
    assert len(stored) == 7  # two full batches, plus the one answer of the failing batch

    resumed = CountingModel()
    make_runner(tmp_path, resumed, batch_size=3).execute()
    assert len(resumed.calls) == 33


def test_model_name_suffix_fills_the_declared_argument():
    from medvision_eval.runner import RunError, split_model_spec

    reg = Registry.discover(entry_points=False)
    assert split_model_spec(reg, "lmms:qwen2_5_vl", {"device": "cpu"}) == ("lmms", {"model": "qwen2_5_vl", "device": "cpu"})
    assert split_model_spec(reg, "lmms:pkg.mod:Cls", {}) == ("lmms", {"model": "pkg.mod:Cls"})
    with pytest.raises(RunError, match="takes no ':' suffix"):
        split_model_spec(reg, "prior:x", {})


def test_a_broken_entry_point_plugin_is_named_in_the_error(monkeypatch):
    import importlib.metadata as md

    class FakeDist:
        name = "medvision-eval-broken"

    broken = md.EntryPoint(name="broken", value="no_such_module_xyz.plugin", group="medvision_eval")
    object.__setattr__(broken, "dist", FakeDist())
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda **kw: [broken] if kw.get("group") == "medvision_eval" else real(**kw))
    with pytest.raises(PluginError, match=r"plugin 'broken' \(no_such_module_xyz.plugin\) from medvision-eval-broken "
                                          r"failed to import: ModuleNotFoundError"):
        Registry.discover()
