"""Errors the run and score steps raise to their callers (the CLI prints them as one line)."""

from __future__ import annotations


class RunError(Exception):
    """A run cannot start or cannot go on; the message says why and what to do."""
