"""Where the data directory is, without importing the data layer (nibabel, numpy).

``default_data_dir()``: ``$MEDVISION_DATA_DIR`` (or ``$MedVision_DATA_DIR``) if set, else the demo
directory under ``$MEDVISION_EVAL_CACHE`` (default ``~/.cache/medvision-eval``), which
:mod:`.demo` generates on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_VERSION = "1"
DONE_MARKER = "demo.json"


def cache_base() -> Path:
    env = os.environ.get("MEDVISION_EVAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medvision-eval"


def demo_path() -> Path:
    """Where the demo directory lives (complete when it holds :data:`DONE_MARKER`)."""
    return cache_base() / f"demo-{DEMO_VERSION}"


def default_data_dir() -> Path:
    """``$MEDVISION_DATA_DIR`` if set, else the demo directory (generated on first use)."""
    env = os.environ.get("MEDVISION_DATA_DIR") or os.environ.get("MedVision_DATA_DIR")
    if env:
        return Path(env).expanduser()
    final = demo_path()
    if (final / DONE_MARKER).is_file():
        return final
    from .demo import demo_dir

    return demo_dir()
