"""Errors of the data layer."""

from __future__ import annotations


class SampleDataError(Exception):
    """A problem with one sample's files; the message names the file and the problem.

    The runner records it for that sample and goes on with the others.
    """


class DataNotFoundError(FileNotFoundError):
    """A config, dataset or plan file is missing from the data root; the message says what to do."""
