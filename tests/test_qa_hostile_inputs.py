"""Hostile inputs found in QA of issues 8 and 11: each is one clear error (or the documented parse),
never a silently swallowed argument or a traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from medvision_eval.cli import parse_model_args
from medvision_eval.hookspecs import hookimpl
from medvision_eval.plugins import PluginError, Registry


@pytest.mark.parametrize("text,expected", [
    # an apostrophe in a plain value is a character, not a quote that swallows the next arguments
    ("system_prompt=Don't guess,max_new_tokens=10", {"system_prompt": "Don't guess", "max_new_tokens": "10"}),
    # an escaped backslash right before the closing quote of a JSON string
    ('x={"a":"b\\\\"},y=1', {"x": {"a": "b\\"}, "y": "1"}),
    # unbalanced brackets in a plain value do not hide the following arguments
    ("a=(1,b=2", {"a": "(1", "b": "2"}),
    ("a=1)],b=2", {"a": "1)]", "b": "2"}),
    # JSON values keep their commas, as documented
    ('extra_body={"a":1,"b":2},stop=["x,y"],n=3', {"extra_body": {"a": 1, "b": 2}, "stop": ["x,y"], "n": "3"}),
    ('x = {"a": ","} , y=z', {"x": {"a": ","}, "y": "z"}),
])
def test_model_args_split(text, expected):
    assert parse_model_args(text) == expected


@pytest.mark.parametrize("text", ['x={"a":1}junk,y=2', "x=[1,2", 'x="open'])
def test_model_args_bad_json_is_one_error_naming_the_key(text):
    with pytest.raises(ValueError, match=r"--model-args: x: .* is not valid JSON"):
        parse_model_args(text)


class RaisingPlugin:
    @hookimpl
    def medvision_eval_models(self):
        raise RuntimeError("boom")


class BadSignaturePlugin:
    @hookimpl
    def medvision_eval_models(self, extra):
        return []


def test_plugin_hook_that_raises_is_an_error_naming_plugin_and_hook():
    with pytest.raises(PluginError, match=r"RaisingPlugin.*medvision_eval_models\(\) raised RuntimeError: boom"):
        Registry.discover(entry_points=False, extra_plugins=(RaisingPlugin(),))


def test_plugin_hook_with_wrong_arguments_is_an_error_naming_plugin():
    with pytest.raises(PluginError, match=r"BadSignaturePlugin.*extra"):
        Registry.discover(entry_points=False, extra_plugins=(BadSignaturePlugin(),))


def test_lora_manifest_missing_fields_is_one_line(tmp_path):
    from medvision_eval.models.lora import MANIFEST, CheckpointError, read_manifest

    (tmp_path / MANIFEST).write_text(json.dumps({}), encoding="utf-8")
    with pytest.raises(CheckpointError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "unreadable manifest" in message and "base" in message and "protocol" in message


def test_api_model_args_as_a_string_is_a_clear_type_error(tmp_path):
    import medvision_eval as mv

    with pytest.raises(TypeError, match="model_args must be a mapping"):
        mv.evaluate(model="prior", tasks=["tl_size"], model_args="seed=3", output=tmp_path / "r", limit=1)


@pytest.mark.parametrize("value", ['{"a":NaN}', "[Infinity]", '{"a":[-Infinity]}'])
def test_model_args_non_finite_json_is_one_error_exit_2(value, tmp_path, capsys):
    from medvision_eval.cli import main

    with pytest.raises(ValueError, match=r"--model-args: x: .* is not valid JSON \(.*Infinity.*NaN.*not JSON"):
        parse_model_args(f"x={value}")
    code = main(["run", "--tasks", "tl_size", "--model", "prior", "--model-args", f"x={value}",
                 "--output", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 2
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "x:" in errors[0] and "Traceback" not in out


def test_unknown_selector_names_datasets_lists_and_configs_apart(tmp_path, capsys):
    from medvision_eval.cli import main

    code = main(["run", "--tasks", "detection:Nope", "--model", "prior", "--output", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out
    datasets = errors[0].split("a dataset (", 1)[1].split(")", 1)[0]
    assert "KiTS23" in datasets and "paper" not in datasets.split(", ") and "planeOOD" not in datasets
    lists = errors[0].split("a named task list (", 1)[1].split(")", 1)[0].split(", ")
    assert {"paper", "planeOOD"} <= set(lists) and "KiTS23" not in lists
    assert "a config name such as '" in errors[0] and "_BoxSize_Task01_" in errors[0] and "list configs" in errors[0]
