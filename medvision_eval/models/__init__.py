"""Built-in model adapters and presets, registered through the public plugin hook."""

from __future__ import annotations

from ..hookspecs import ModelEntry, hookimpl


@hookimpl
def medvision_eval_models() -> list[ModelEntry]:
    from .baselines import baseline_entries
    from .lora import lora_entries
    from .presets import preset_entries

    return [*baseline_entries(), *preset_entries(), *lora_entries()]
