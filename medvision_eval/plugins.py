"""Plugin discovery: a pluggy manager over built-ins and ``medvision_eval`` entry points.

Nothing is discovered at import time. ``Registry.discover()`` builds a fresh manager,
registers the built-in plugin modules through the same hooks a third party uses, then
loads every entry point of the ``medvision_eval`` group, then calls ``check_pending()``: a
hook function that is misspelt or lacks ``@hookimpl`` fails discovery with a message naming
the plugin and its distribution. Hooks are called through pluggy, one plugin at a time so
every entry keeps its provider. Names are unique: a clash is an error unless the later entry
sets ``override=True``, which replaces it with a warning.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import warnings
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy

from .hookspecs import HOOK_NAMES, PROJECT, FamilyEntry, ModelEntry, Specs, TaskEntry

BUILTIN_PLUGINS = ("medvision_eval.data.families", "medvision_eval.tasks", "medvision_eval.models")

E = TypeVar("E", TaskEntry, ModelEntry, FamilyEntry)


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
    """Tasks, models and sample families offered by all plugins, with the package providing each."""

    def __init__(self, pm: pluggy.PluginManager, providers: dict[str, str] | None = None) -> None:
        self.pm = pm
        self.providers = dict(providers or {})
        self.tasks: dict[str, Provided[TaskEntry]] = {}
        self.models: dict[str, Provided[ModelEntry]] = {}
        self.families: dict[str, Provided[FamilyEntry]] = {}
        for hook_name, table, kind in (
            ("medvision_eval_tasks", self.tasks, TaskEntry),
            ("medvision_eval_models", self.models, ModelEntry),
            ("medvision_eval_families", self.families, FamilyEntry),
        ):
            self._collect(hook_name, table, kind)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def discover(cls, *, entry_points: bool = True, extra_plugins: tuple[Any, ...] = ()) -> "Registry":
        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(Specs)
        providers: dict[str, str] = {}
        for module_name in BUILTIN_PLUGINS:
            _register(pm, importlib.import_module(module_name), module_name, "medvision-eval", providers)
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
                _register(pm, plugin, ep.name, dist, providers)
        for plugin in extra_plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            _register(pm, plugin, None, name, providers)
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(f"plugin {name!r} from {providers.get(name, name)}: {exc}") from None
        return cls(pm, providers)

    def _collect(self, hook_name: str, table: dict, kind: type) -> None:
        """Call one hook through pluggy, plugin by plugin (registration order), keeping who provided what."""
        plugins = self.pm.get_plugins()
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=[p for p in plugins if p is not plugin])
            provider = self.providers.get(name, name)
            for result in caller():
                for entry in result or []:
                    if not isinstance(entry, kind):
                        raise PluginError(f"plugin {name!r} from {provider}: {hook_name}() returned "
                                          f"{type(entry).__name__}, expected {kind.__name__}")
                    self._add(table, Provided(entry, provider, name), hook_name)

    @staticmethod
    def _add(table: dict, item: Provided, kind: str) -> None:
        name = item.entry.name
        old = table.get(name)
        if old is not None:
            if not item.entry.override:
                what = {"medvision_eval_tasks": "task", "medvision_eval_models": "model"}.get(kind, "sample family")
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

    def family(self, name: str) -> Provided[FamilyEntry]:
        return self._get(self.families, name, "sample family", "list tasks")

    def sample_builders(self) -> dict[str, Any]:
        """Every sample family's builder, instantiated (for the data reader)."""
        out = {}
        for name, provided in self.families.items():
            try:
                out[name] = load_target(provided.entry.target)()
            except PluginError as exc:
                raise PluginError(f"sample family {name!r} ({provided.provider}): {exc}") from exc
        return out

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


def _register(pm: pluggy.PluginManager, plugin: Any, name: str | None, provider: str, providers: dict[str, str]) -> None:
    """Register one plugin after checking its hook functions: each ``medvision_eval_*`` function must be
    a known hook and carry ``@hookimpl`` — a typo or a missing marker is an error naming the plugin."""
    label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    marker = f"{PROJECT}_impl"
    for attr in dir(plugin):
        if not attr.startswith(f"{PROJECT}_"):
            continue
        func = getattr(plugin, attr, None)
        if not callable(func):
            continue
        if attr not in HOOK_NAMES:
            close = difflib.get_close_matches(attr, HOOK_NAMES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PluginError(f"plugin {label!r} from {provider}: {attr!r} is not a {PROJECT} hook "
                              f"(hooks: {', '.join(HOOK_NAMES)}).{hint}")
        if not hasattr(func, marker):
            raise PluginError(f"plugin {label!r} from {provider}: {attr}() lacks the @hookimpl marker "
                              f"(from medvision_eval.hookspecs import hookimpl)")
    registered = pm.register(plugin, name=name)
    providers[registered or label] = provider


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
