"""The Python API: ``evaluate`` and ``score`` for notebooks and scripts.

Both return a typed :class:`~medvision_eval.results.RunResults`, never call ``sys.exit`` and
print nothing unless ``verbose=True``. Errors are exceptions whose message is the one line the
CLI would print (:class:`~medvision_eval.errors.RunError`, ``ValueError``, ``FileNotFoundError``,
:class:`~medvision_eval.plugins.PluginError`)::

    import medvision_eval as mv
    r = mv.evaluate(model="prior", tasks=["tl_size"])
    r.tasks["tl_size"].metrics["all/MAE"].value
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .results import RunResults

__all__ = ["evaluate", "score"]


def evaluate(
    model: str,
    tasks: Sequence[str] | str,
    model_args: Mapping[str, Any] | None = None,
    data: str | Path | None = None,
    output: str | Path | None = None,
    limit: int | None = None,
    protocol: str = "paper",
    *,
    batch_size: int | None = None,
    seed: int = 0,
    shard: tuple[int, int] | None = None,
    no_cache: bool = False,
    verbose: bool = False,
) -> RunResults:
    """Run (or resume) an evaluation and score it, exactly as ``medvision-eval run`` does.

    ``tasks`` are task specs (``"detection"``, ``"detection:KiTS23"``) as a list or a comma-separated
    string; ``model_args`` are the adapter's arguments (any JSON-able values); ``data`` defaults to
    ``$MEDVISION_DATA_DIR`` or the bundled demo data; ``output`` to ``runs/<model>``. Re-running into
    the same ``output`` sends only what is missing.
    """
    from .config import RunConfig
    from .runner import Runner
    from .scoring import cached_results, score_run

    if model_args is not None and not isinstance(model_args, Mapping):
        raise TypeError(f"model_args must be a mapping such as {{'pretrained': 'PATH', 'dtype': 'bfloat16'}}, "
                        f"not {type(model_args).__name__}")
    specs = [t for t in (tasks.split(",") if isinstance(tasks, str) else list(tasks))]
    config = RunConfig(
        tasks=specs, model=model, model_args=dict(model_args or {}), data=str(data) if data is not None else None,
        output=str(output) if output is not None else None, limit=limit, batch_size=batch_size, protocol=protocol,
        seed=seed, no_cache=no_cache, shard=shard,
    )
    runner = Runner(config)
    finished = runner.finished_results() if runner.dist.is_main else None
    if finished is not None:  # finished, scored, inputs unchanged: nothing to plan, send or score
        if verbose:
            _print(finished)
        return finished
    summary = runner.execute(progress=_progress_printer() if verbose else None)
    if not runner.dist.is_main:  # other ranks of a data-parallel launch: rank 0 scores
        return None  # type: ignore[return-value]
    results = (summary.sent == 0 and summary.errors == 0 and cached_results(summary.output)) or score_run(
        summary.output, registry=runner.registry
    )
    if verbose:
        _print(results)
    return results


def score(run_dir: str | Path, *, verbose: bool = False) -> RunResults:
    """Re-parse and re-score the stored answers of a run directory (no model, no data directory)."""
    from .scoring import score_run

    results = score_run(Path(run_dir))
    if verbose:
        _print(results)
    return results


def _print(results: RunResults) -> None:
    from rich.console import Console

    from .report import print_results

    print_results(results, Console())


def _progress_printer():
    def update(task: str, done: int, total: int) -> None:
        if done == total:
            print(f"{task}: {done}/{total}", flush=True)

    return update
