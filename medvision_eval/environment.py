"""What a result was produced with: package versions, Python, platform, git revision."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

from .plugins import distribution_version

PACKAGES = (
    "medvision-eval",
    "numpy",
    "nibabel",
    "scipy",
    "pillow",
    "pydantic",
    "pluggy",
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "vllm",
    "openai",
    "google-genai",
    "lmms-eval",
)


def _git(where: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def own_checkout(package_dir: Path | None = None) -> Path | None:
    """The root of medvision-eval's own git checkout this package runs from, else None.

    An installed copy inside some other repository (a user's project, a monorepo) is not one:
    the checkout's top level must hold this package directory and a pyproject naming medvision-eval.
    """
    package_dir = (package_dir or Path(__file__).resolve().parent).resolve()
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != package_dir.parent:
        return None
    pyproject = package_dir.parent / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return package_dir.parent if re.search(r'^name\s*=\s*"medvision-eval"', text, re.M) else None


def git_revision(package_dir: Path | None = None) -> str | None:
    """The commit of medvision-eval's own checkout (``-dirty`` with uncommitted changes), else None."""
    root = own_checkout(package_dir)
    if root is None:
        return None
    rev = _git(root, "rev-parse", "HEAD")
    if not rev:
        return None
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    return rev + ("-dirty" if dirty else "")


def environment_info() -> dict:
    versions = {name: distribution_version(name) for name in PACKAGES}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {k: v for k, v in versions.items() if v is not None},
        "git_revision": git_revision(),
    }
