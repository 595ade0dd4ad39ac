"""The plugin contract as a plugin author meets it: protocol behaviour for free, supported
protocols enforced, real pluggy discovery (typos and missing markers named), new sample families."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medvision_eval.errors import RunError
from medvision_eval.factory import build_task
from medvision_eval.hookspecs import TaskEntry, hookimpl
from medvision_eval.plugins import PluginError, Registry
from medvision_eval.protocol import get_protocol
from medvision_eval.schema import PerceivedGeometry


def cli(*args: str, env_path: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_path:
        env["PYTHONPATH"] = env_path + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "medvision_eval.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def tl_sample(demo_root):
    from medvision_eval.data import MedVisionData

    data = MedVisionData(demo_root)
    return data.samples(data.catalogue.configs("tl_size", None)[0])[0]


def test_example_task_gets_each_protocols_prompt_and_parser(tl_sample):
    from medvision_eval_example.tl_area import LesionAreaTask

    geometry = PerceivedGeometry(original=tuple(tl_sample.image_size), canvas=(448, 448), content=(448, 420),
                                 v1=(448, 448))
    paper, corrected = LesionAreaTask(get_protocol("paper")), LesionAreaTask(get_protocol("corrected"))
    p_text = paper.messages(tl_sample, geometry)[0].text()
    c_text = corrected.messages(tl_sample, geometry)[0].text()
    assert "<answer>" not in p_text and "The image size is" not in p_text
    assert "<answer> </answer> tags" in c_text and "The image size is 448 pixels (width) x 448 pixels (height)." in c_text
    answer = "<think>about 12 mm by 3</think><answer>245.1 mm2</answer> so 9"
    assert paper.parse_for(tl_sample, answer).values == (9.0,)  # v1 last number
    assert corrected.parse_for(tl_sample, answer).values == (245.1,)  # strict, inside the tags
    assert corrected.answer_spec(tl_sample).render([1.5]) == "<answer>1.50</answer>"
    # the protocol's target precision reaches the plugin's derived truth
    assert paper.true_values(tl_sample) != corrected.true_values(tl_sample)


def _paper_only_registry() -> Registry:
    """A plugin task that declares it supports 'paper' only."""
    from medvision_eval_example.tl_area import LesionAreaTask

    PaperOnly = type("PaperOnly", (LesionAreaTask,), {"name": "paper_only", "protocols": ("paper",)})
    sys.modules[__name__].PaperOnly = PaperOnly

    class Plugin:
        @hookimpl
        def medvision_eval_tasks(self):
            return [TaskEntry(name="paper_only", target=f"{__name__}:PaperOnly")]

    return Registry.discover(entry_points=False, extra_plugins=(Plugin(),))


def test_task_is_refused_under_a_protocol_it_does_not_declare():
    registry = _paper_only_registry()
    assert build_task(registry, "paper_only", get_protocol("paper")).protocol.name == "paper"
    with pytest.raises(RunError, match=r"task 'paper_only' does not support protocol 'corrected'; it supports: paper"):
        build_task(registry, "paper_only", get_protocol("corrected"))


def _write_distribution(root: Path, dist: str, module: str, source: str) -> str:
    """A minimal installed distribution on a path entry: dist-info with an entry point + module."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[medvision_eval]\n{module} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    return str(root)


def test_misspelt_hook_fails_discovery_naming_plugin_and_distribution(tmp_path):
    path = _write_distribution(tmp_path, "typo-plugin", "typo_hooks", """
        from medvision_eval.hookspecs import TaskEntry, hookimpl

        @hookimpl
        def medvision_eval_task():
            return [TaskEntry(name="x", target="typo_hooks:X")]
    """)
    out = cli("list", "tasks", env_path=path)
    assert out.returncode == 2, out.stdout + out.stderr
    line = out.stdout.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in out.stderr
    assert "'typo_hooks' from typo-plugin" in line and "'medvision_eval_task'" in line
    assert "Did you mean 'medvision_eval_tasks'?" in line


def test_hook_without_marker_fails_discovery():
    class Unmarked:
        def medvision_eval_tasks(self):
            return []

    with pytest.raises(PluginError, match=r"medvision_eval_tasks\(\) lacks the @hookimpl marker"):
        Registry.discover(entry_points=False, extra_plugins=(Unmarked(),))


def test_marked_hook_with_unknown_name_fails_check_pending():
    class Odd:
        @hookimpl
        def evaluate_everything(self):
            return []

    with pytest.raises(PluginError, match="evaluate_everything"):
        Registry.discover(entry_points=False, extra_plugins=(Odd(),))


def test_builtin_families_register_through_the_hook_and_the_reader_needs_them(demo_root):
    from medvision_eval.data import DataNotFoundError, MedVisionData

    registry = Registry.discover()
    assert {"detection", "tl_size", "ad_measure", "structure_count"} <= set(registry.families)
    assert registry.families["detection"].provider == "medvision-eval"
    assert registry.families["structure_count"].provider == "medvision-eval-example"
    bare = MedVisionData(demo_root, families={})
    with pytest.raises(DataNotFoundError, match="no sample family 'detection' is registered"):
        bare.samples(bare.catalogue.configs("detection", None)[0])


def test_plugin_family_with_its_own_samples_runs_end_to_end(demo_root, tmp_path):
    runs = {}
    for model in ("oracle", "prior"):
        out = cli("--tasks", "structure_count", "--model", model, "--data", str(demo_root),
                  "--output", str(tmp_path / model), "--quiet")
        assert out.returncode == 0, out.stdout + out.stderr
        runs[model] = json.loads((tmp_path / model / "results.json").read_text())
    task = runs["oracle"]["tasks"]["structure_count"]
    assert task["n_samples"] > 20 and task["parse_stats"]["ok"] == task["n_samples"]
    assert task["metrics"]["all/MAE"]["value"] == 0.0
    assert runs["prior"]["tasks"]["structure_count"]["metrics"]["all/MAE"]["value"] > 0.1
    rows = [json.loads(x) for x in (tmp_path / "oracle" / "samples_structure_count.jsonl").read_text().splitlines()]
    assert rows[0]["id"].startswith("DemoAbdomenCT_StructureCount_Task01_Axial/test/")
    assert {r["unit"] for r in rows} == {"count"} and all(r["target"][0] >= 1 for r in rows)


def test_plugin_family_runs_through_the_python_api(demo_root, tmp_path):
    import medvision_eval as mv

    results = mv.evaluate(model="oracle", tasks=["structure_count"], data=demo_root, output=tmp_path / "api")
    cli_results = json.loads((tmp_path / "api" / "results.json").read_text())
    assert results.tasks["structure_count"].metrics["all/MAE"].value == 0.0
    assert results.tasks["structure_count"].n_samples == cli_results["tasks"]["structure_count"]["n_samples"] > 20


def test_example_task_runs_under_corrected_with_tagged_answers(demo_root, tmp_path):
    out = cli("--tasks", "tl_area", "--model", "oracle", "--protocol", "corrected", "--data", str(demo_root),
              "--output", str(tmp_path / "c"), "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [json.loads(x) for x in (tmp_path / "c" / "samples_tl_area.jsonl").read_text().splitlines()]
    assert rows and all(r["response"].startswith("<answer>") and r["status"] == "ok" for r in rows)
    results = json.loads((tmp_path / "c" / "results.json").read_text())["tasks"]["tl_area"]
    assert results["protocol"] == "corrected" and results["metrics"]["all/MAE"]["value"] < 0.01
