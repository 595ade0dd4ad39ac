"""Model presets: the paper's models by name, and the generic backends."""

from __future__ import annotations

from ..hookspecs import ModelEntry


def preset_entries() -> list[ModelEntry]:
    return []
