"""The plugin contract.

A plugin is any module or object with functions decorated by :data:`hookimpl` (an undecorated
or misspelt ``medvision_eval_*`` function is an error at discovery). Built-in tasks, models and
sample families register through exactly these hooks; third-party packages are found
through the entry-point group ``medvision_eval``::

    # pyproject.toml of a plugin package
    [project.entry-points.medvision_eval]
    my_plugin = "my_package.plugin"

Entries name their implementation lazily as ``"module:Attribute"`` so that listing
what is available never imports torch, transformers or an API SDK.
"""

from __future__ import annotations

from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict, Field

PROJECT = "medvision_eval"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class TaskEntry(BaseModel):
    """A task family a plugin provides. ``target`` is ``"module:Class"`` of a Task subclass."""

    model_config = ConfigDict(frozen=True)

    name: str
    target: str
    description: str = ""
    override: bool = False  # replace an existing entry of this name (with a warning)


class ModelEntry(BaseModel):
    """A model a plugin provides: an adapter class plus default arguments (a preset)."""

    model_config = ConfigDict(frozen=True)

    name: str
    target: str  # "module:Class" of a ModelAdapter subclass
    defaults: dict[str, Any] = Field(default_factory=dict)
    backend: str = ""  # hf | vllm | openai | gemini | lmms | baseline | <plugin>
    extra: str | None = None  # pip extra that installs what it needs, e.g. "hf"
    requires: tuple[str, ...] = ()  # importable modules it needs, to tell if it is installed
    description: str = ""
    override: bool = False
    # ``--model NAME:SUFFIX`` passes SUFFIX as this model argument (e.g. ``lmms:qwen2_5_vl``).
    suffix_arg: str | None = None
    # If set, the model cannot run from this package; the message says how to get it.
    unavailable: str | None = None


class FamilyEntry(BaseModel):
    """A sample family: how samples are built from a MedVision data directory.

    ``target`` is ``"module:Class"`` of a :class:`~medvision_eval.data.families.SampleBuilder`.
    ``name`` is what ``BenchmarkConfig.task`` / ``Sample.task`` say and what a task's ``family`` names.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    target: str
    description: str = ""
    override: bool = False


class Specs:
    @hookspec
    def medvision_eval_tasks(self) -> list[TaskEntry]:
        """Return the task families this plugin provides."""

    @hookspec
    def medvision_eval_models(self) -> list[ModelEntry]:
        """Return the models (adapters and presets) this plugin provides."""

    @hookspec
    def medvision_eval_families(self) -> list[FamilyEntry]:
        """Return the sample families (sample builders over a data directory) this plugin provides."""


HOOK_NAMES = ("medvision_eval_tasks", "medvision_eval_models", "medvision_eval_families")
