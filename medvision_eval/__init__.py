"""medvision-eval: can vision-language models measure in medical images?

Importing this package has no side effects and is cheap: no logging setup, no plugin discovery,
no global patches, no heavy imports. The Python API is loaded on first use::

    import medvision_eval as mv
    results = mv.evaluate(model="prior", tasks=["tl_size"])   # -> RunResults
    results = mv.score("runs/prior")                          # re-score stored answers
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .api import evaluate, score
    from .results import RunResults, TaskResult, load_results

__all__ = ["RunResults", "TaskResult", "__version__", "evaluate", "load_results", "score"]

_LAZY = {
    "evaluate": "api",
    "score": "api",
    "RunResults": "results",
    "TaskResult": "results",
    "load_results": "results",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
