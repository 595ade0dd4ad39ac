"""Plugin discovery: a pluggy manager over built-ins and ``medvision_eval`` entry points.

Nothing is discovered at import time. ``Registry.discover()`` builds a fresh manager,
registers the built-in plugin modules through the same hooks a third party uses, then
loads every entry point of the ``medvision_eval`` group. Names are unique: a clash is an
error unless the later entry sets ``override=True``, which replaces it with a warning.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import warnings
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy

from .hookspecs import PROJECT, ModelEntry, Specs, TaskEntry

BUILTIN_PLUGINS = ("medvision_eval.tasks", "medvision_eval.models")

E = TypeVar("E", TaskEntry, ModelEntry)


class PluginError(Exception):
    """A plugin could not be loaded, or two plugins claim the same name."""


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text
        return str(self.args[0])


@dataclass(frozen=True)
class Provided(Generic[E]):
    entry: E
    provider: str  # distribution name (or "medvision-eval" for built-ins)
    plugin: str  # plugin module / entry-point name


def load_target(target: str) -> Any:
    """Import ``"package.module:Attribute"`` and return the attribute."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"bad target {target!r}: expected 'module:Attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import {module_name!r} for {target!r}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise PluginError(f"{module_name!r} has no attribute {attr!r} (from {target!r})") from exc
    return obj


class Registry:
    """Tasks and models offered by all plugins, with the package providing each."""

    def __init__(self, pm: pluggy.PluginManager, providers: dict[str, str] | None = None) -> None:
        self.pm = pm
        self.tasks: dict[str, Provided[TaskEntry]] = {}
        self.models: dict[str, Provided[ModelEntry]] = {}
        providers = providers or {}
        # registration order: built-ins, then entry points, then extra plugins
        for name, plugin in pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            provider = providers.get(name) or ("medvision-eval" if name in BUILTIN_PLUGINS else name)
            self._collect(plugin, name, provider)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def discover(cls, *, entry_points: bool = True, extra_plugins: tuple[Any, ...] = ()) -> "Registry":
        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(Specs)
        for module_name in BUILTIN_PLUGINS:
            pm.register(importlib.import_module(module_name), name=module_name)
        providers: dict[str, str] = {}
        if entry_points:
            for ep in importlib.metadata.entry_points(group=PROJECT):
                dist = getattr(ep.dist, "name", None) or "unknown distribution"
                if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                    continue
                try:
                    plugin = ep.load()
                except Exception as exc:  # a broken third-party plugin must say who it is
                    raise PluginError(
                        f"the '{PROJECT}' plugin {ep.name!r} ({ep.value}) from {dist} failed to import: "
                        f"{type(exc).__name__}: {exc}. Fix or uninstall {dist}."
                    ) from exc
                pm.register(plugin, name=ep.name)
                providers[ep.name] = dist
        for plugin in extra_plugins:
            pm.register(plugin)
        return cls(pm, providers)

    def _collect(self, plugin: Any, plugin_name: str, provider: str) -> None:
        for hook_name, table in (("medvision_eval_tasks", self.tasks), ("medvision_eval_models", self.models)):
            impl = getattr(plugin, hook_name, None)
            if impl is None:
                continue
            for entry in impl() or []:
                self._add(table, Provided(entry, provider, plugin_name), hook_name)

    @staticmethod
    def _add(table: dict, item: Provided, kind: str) -> None:
        name = item.entry.name
        old = table.get(name)
        if old is not None:
            if not item.entry.override:
                what = "task" if kind.endswith("tasks") else "model"
                raise PluginError(
                    f"{what} name {name!r} is provided twice: by {old.provider} ({old.plugin}) and by "
                    f"{item.provider} ({item.plugin}). Rename one, or set override=True on the entry "
                    "that should win."
                )
            warnings.warn(
                f"{item.provider} ({item.plugin}) overrides {name!r} from {old.provider} ({old.plugin})",
                stacklevel=2,
            )
        table[name] = item

    # -- lookup -----------------------------------------------------------------------------
    def task(self, name: str) -> Provided[TaskEntry]:
        return self._get(self.tasks, name, "task", "list tasks")

    def model(self, name: str) -> Provided[ModelEntry]:
        return self._get(self.models, name, "model", "list models")

    @staticmethod
    def _get(table: dict, name: str, what: str, hint: str) -> Provided:
        try:
            return table[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(table), n=3)
            suggestion = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {what} {name!r}.{suggestion} Run 'medvision-eval {hint}' to see every name."
            ) from None


def installed(requires: tuple[str, ...]) -> bool:
    """True when every module in ``requires`` can be found (without importing it)."""
    import importlib.util

    for module in requires:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


def distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
