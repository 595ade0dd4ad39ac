"""What planning consumed, recorded in ``run.json`` so a finished rerun can recognise itself cheaply.

A run's plan (``plan.jsonl``) is a function of

* the invocation: the resolved :class:`~medvision_eval.config.RunConfig`, the model's identity,
  generation settings and message options, the protocol, the world size and the data-selection
  environment variables;
* the code: this package's version and files, the files of every plugin package that registers
  tasks, models or sample families, Python and the versions of the libraries planning uses;
* the data: every annotation file planning read (plan files, the data root's ``catalogue.json``,
  landmark files) and every volume whose header it read (images and masks).

:func:`run_key` digests the first two (cheap: no data is read, nothing heavy is imported);
:func:`file_states` records size, ``mtime_ns`` and ``ctime_ns`` of each data file (``ctime``
cannot be set back by ``touch``/``cp -p``, so a rewritten file of the same size and mtime still
counts as changed). Both go into ``run.json`` as ``plan_manifest`` when the plan is written.

:func:`finished_run` is the fast path of a rerun: when the stored manifest matches (same key,
every file unchanged), ``results.json`` was scored from exactly the current ``run.json``,
``plan.jsonl`` and response files (its ``inputs_digest``), and every planned sample is answered,
the run is finished: nothing would be sent and scoring would reproduce ``results.json``, so the
stored results are returned without planning. Anything else (a run directory from a version
without a manifest, any changed argument, file, plugin or code) returns None and the caller plans
as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import __version__

MANIFEST_VERSION = 1
MANIFEST_FIELD = "plan_manifest"
# Libraries whose behaviour shapes the plan (header reading, float arithmetic, JSON text).
PLANNING_PACKAGES = ("numpy", "nibabel", "pydantic", "pydantic-core", "pillow", "scipy")
# Environment variables that change which samples the data layer yields (also in Selection.env).
SELECTION_ENV = (
    "MedVision_DISABLE_SAMPLE_FILTERING",
    "MEDVISION_DISABLE_SAMPLE_FILTERING",
    "MEDVISION_PLANNER_VERSION",
    "MedVision_PLANNER_VERSION",
    "MEDVISION_DATA_DIR",
    "MedVision_DATA_DIR",
)
_SKIP_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache"}


def _dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _tree_state(root: Path) -> str:
    """Digest of (relative path, size, mtime_ns) of every file under a package directory (or of
    one module file): any edit, added or removed file changes it. Bytecode caches are skipped."""
    h = hashlib.sha256()
    if root.is_file():
        st = root.stat()
        h.update(f"{root.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:32]
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _package_root(module_name: str) -> Path | None:
    """Directory of the top-level package of ``module_name`` (or the module's own file)."""
    top = module_name.partition(".")[0]
    module = sys.modules.get(top)
    where = getattr(module, "__file__", None) if module is not None else None
    if where is None:
        import importlib.util

        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
        where = spec.origin if spec is not None else None
    if not where or where in ("built-in", "frozen"):
        return None
    path = Path(where)
    return path.parent if path.name == "__init__.py" else path


def code_state(registry: Any) -> dict[str, Any]:
    """This package and every plugin package it runs with: versions and file states."""
    from .plugins import distribution_version

    modules = {"medvision_eval"}
    for name, plugin in registry.pm.list_name_plugin():
        module = getattr(plugin, "__name__", None) if plugin is not None else None
        if isinstance(module, str):
            modules.add(module)
    for table in (registry.tasks, registry.models, registry.families):
        for provided in table.values():
            modules.add(str(provided.entry.target).partition(":")[0])
    roots: dict[str, str] = {}
    for module in sorted(modules):
        root = _package_root(module)
        if root is not None and str(root) not in roots:
            roots[str(root)] = _tree_state(root)
    providers = sorted({p.provider for t in (registry.tasks, registry.models, registry.families) for p in t.values()})
    return {
        "medvision_eval": __version__,
        "python": sys.version,
        "packages": {name: distribution_version(name) for name in PLANNING_PACKAGES},
        "providers": {name: distribution_version(name) for name in providers},
        "files": roots,
    }


def run_key(config: Any, adapter: Any, protocol: Any, registry: Any, *, world_size: int, data_root: Path) -> str:
    """Digest of everything that shapes a plan and run.json except the data files themselves."""
    generation = adapter.generation_settings()
    key = {
        "manifest": MANIFEST_VERSION,
        "config": config.model_dump(mode="json"),
        "model": {
            "identity": adapter.identity(),
            "generation": generation.model_dump(mode="json") if hasattr(generation, "model_dump") else generation,
            "backend": getattr(adapter, "backend", None),
            "image_first": bool(getattr(adapter, "image_first", False)),
            "input_hw": getattr(adapter, "input_hw", None),
        },
        "protocol": protocol.model_dump(mode="json"),
        "world_size": world_size,
        "data_root": str(data_root),
        "env": {name: os.environ[name] for name in SELECTION_ENV if name in os.environ},
        "code": code_state(registry),
    }
    return hashlib.sha256(_dump(key).encode()).hexdigest()


def _stat(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # absent (recorded: a file appearing later changes the plan too)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def file_states(root: Path, paths: Iterable[Path]) -> dict[str, list[int] | None]:
    """``{path under root: [size, mtime_ns, ctime_ns] or None if absent}``."""
    out: dict[str, list[int] | None] = {}
    for path in sorted({Path(p) for p in paths}):
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:
            name = str(path)
        out[name] = _stat(path)
    return out


def build_manifest(key: str, root: Path, paths: Iterable[Path]) -> dict[str, Any]:
    return {"version": MANIFEST_VERSION, "key": key, "data_root": str(root), "files": file_states(root, paths)}


def manifest_matches(stored: Any, key: str, root: Path) -> bool:
    """The stored manifest was made with this key and every file it names is as it was."""
    if not isinstance(stored, dict) or stored.get("version") != MANIFEST_VERSION or stored.get("key") != key:
        return False
    if stored.get("data_root") != str(root):
        return False
    files = stored.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, state in files.items():
        path = Path(name) if os.path.isabs(name) else root / name
        current = _stat(path)
        if current != state:
            return False
    return True


def finished_run(output: Path, key: str, root: Path) -> Any:
    """The stored :class:`~medvision_eval.results.RunResults` of a finished run that this
    invocation would reproduce exactly (see the module docstring), else None."""
    from .store import RESULTS, RUN_CONFIG

    output = Path(output)
    results_path, record_path = output / RESULTS, output / RUN_CONFIG
    if not results_path.is_file() or not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not manifest_matches(record.get(MANIFEST_FIELD), key, root):
        return None
    try:
        stored = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    counts = stored.get("counts") if isinstance(stored, dict) else None
    if not isinstance(counts, dict) or not counts.get("planned") or counts.get("answered") != counts.get("planned"):
        return None  # failed or missing answers: a rerun retries them
    from .rundigest import inputs_digest

    if stored.get("inputs_digest") != inputs_digest(output):
        return None
    from .results import load_results

    try:
        return load_results(results_path)
    except (OSError, ValueError):
        return None
