"""What a result was produced with: package versions, Python, platform, git revision."""

from __future__ import annotations

import platform
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


def git_revision(path: Path | None = None) -> str | None:
    """The commit of the medvision-eval checkout, when running from one."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    if out.returncode != 0 or not rev:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return rev + ("-dirty" if dirty.stdout.strip() else "")


def environment_info() -> dict:
    versions = {name: distribution_version(name) for name in PACKAGES}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {k: v for k, v in versions.items() if v is not None},
        "git_revision": git_revision(),
    }
