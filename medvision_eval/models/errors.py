"""Exceptions model adapters raise to the runner (everything else becomes ``Response.error``)."""

from __future__ import annotations


class ModelArgsError(ValueError):
    """``--model-args`` do not fit the adapter (unknown key, bad value). Raised at construction."""


class BackendNotInstalledError(ImportError):
    """The optional backend library of an adapter is missing; the message says what to install."""


class ModelUnavailableError(RuntimeError):
    """The model endpoint keeps failing (failure threshold reached): stop the run.

    Raised from ``generate`` instead of returning errors, so the runner can stop cleanly, keep
    what it already stored and tell the user; resuming later re-asks only the missing samples.
    """
