"""Secrets (API keys, tokens) never reach a file or the terminal.

``mask(text)`` replaces every known secret in ``text`` with ``***``. Known secrets are the values
adapters register when they read a key (:func:`register`) and the values of environment variables
whose names say they hold one (``*API_KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``; values of
at least 8 characters). Mask *before* cutting text short (:func:`truncate`): a cut through a key
would otherwise leave its prefix behind. Every writer of the run directory masks what it writes
(``store``), and the CLI masks what it prints.
"""

from __future__ import annotations

import os
import re
import threading

MASK = "***"
MIN_LENGTH = 8
SECRET_NAME = re.compile(r"API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# Environment variables whose names match but that never hold secrets.
NOT_SECRET = {"TOKENIZERS_PARALLELISM"}

_lock = threading.Lock()
_registered: set[str] = set()
_cache: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # (env snapshot, secrets longest first)
_names: tuple[int, tuple[str, ...]] | None = None  # (len(os.environ), names of secret variables)


def register(value: str | None) -> None:
    """Remember a secret value (an adapter calls this whenever it reads a key)."""
    if value and len(value) >= MIN_LENGTH and value not in _registered:
        with _lock:
            _registered.add(value)
            global _cache
            _cache = None


def _env_values() -> tuple[str, ...]:
    global _names
    names = _names
    if names is None or names[0] != len(os.environ):  # rescan names only when variables come or go
        names = _names = (len(os.environ), tuple(k for k in os.environ if k not in NOT_SECRET and SECRET_NAME.search(k)))
    values = (os.environ.get(k) for k in names[1])
    return tuple(sorted(v for v in values if v and len(v) >= MIN_LENGTH))


def known() -> tuple[str, ...]:
    """Every secret value known now, longest first (so a key containing another is masked whole)."""
    global _cache
    env = _env_values()
    cache = _cache
    if cache is not None and cache[0] == env:
        return cache[1]
    values = tuple(sorted(set(env) | _registered, key=lambda s: (-len(s), s)))
    with _lock:
        _cache = (env, values)
    return values


def mask(text: str) -> str:
    """``text`` with every known secret replaced by ``***``."""
    if not text:
        return text
    for secret in known():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def truncate(text: str, limit: int) -> str:
    """Mask, then cut to ``limit`` characters (an ellipsis marks the cut)."""
    text = mask(text)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"
