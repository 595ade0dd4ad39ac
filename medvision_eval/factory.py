"""Build tasks and model adapters from the names plugins register (the registry's factory)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import RunError
from .plugins import PluginError, Registry, installed, load_target

if TYPE_CHECKING:  # pragma: no cover
    from .models.base import ModelAdapter
    from .protocol import Protocol
    from .tasks.base import Task


def split_model_spec(registry: Registry, name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``backend:SUFFIX`` (e.g. ``lmms:qwen2_5_vl``) means model ``backend`` with its ``suffix_arg=SUFFIX``."""
    if name in registry.models or ":" not in name:
        return name, args
    prefix, _, rest = name.partition(":")
    if prefix in registry.models:
        entry = registry.model(prefix).entry
        if entry.suffix_arg is None:
            raise RunError(f"model {prefix!r} takes no ':' suffix (got {name!r})")
        return prefix, {entry.suffix_arg: rest, **args}
    return name, args


def build_adapter(registry: Registry, name: str, args: dict[str, Any]) -> ModelAdapter:
    """The adapter ``--model NAME --model-args ARGS`` means: preset defaults overlaid by ARGS."""
    name, args = split_model_spec(registry, name, args)
    provided = registry.model(name)
    entry = provided.entry
    if entry.unavailable:
        raise RunError(f"model {name!r} cannot run from {provided.provider}: {entry.unavailable}")
    if entry.requires and not installed(entry.requires):
        extra = f"pip install 'medvision-eval[{entry.extra}]'" if entry.extra else "install its backend"
        missing = ", ".join(entry.requires)
        raise RunError(f"model {name!r} needs {missing}, which is not installed here: {extra}")
    try:
        cls = load_target(entry.target)
    except PluginError as exc:
        raise RunError(f"model {name!r} ({provided.provider}): {exc}") from exc
    from .models.errors import BackendNotInstalledError

    merged = {**entry.defaults, **args}
    try:
        return cls(**merged)
    except BackendNotInstalledError as exc:
        raise RunError(f"model {name!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise RunError(f"model {name!r}: bad --model-args: {exc}") from exc


def build_task(registry: Registry, name: str, protocol: Protocol) -> Task:
    """The task family ``name`` under ``protocol``."""
    provided = registry.task(name)
    try:
        cls = load_target(provided.entry.target)
    except PluginError as exc:
        raise RunError(f"task {name!r} ({provided.provider}): {exc}") from exc
    from .tasks.base import UnsupportedProtocolError

    try:
        return cls(protocol)
    except UnsupportedProtocolError as exc:
        raise RunError(str(exc)) from None
