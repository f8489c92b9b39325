"""Failures a user can act on. Each message is one line: it names the key, environment variable or file at fault
and says what to do. Entry points print it without a traceback (genlab.entry.run_stage); anything else that
escapes is a bug and keeps its traceback."""

from __future__ import annotations


class GenlabError(Exception):
    """A failure with a message for the user (see the module docstring)."""


class NonFiniteError(GenlabError):
    """Training produced a NaN or infinite loss or parameter; nothing of the run was written as a result."""

    def __init__(self, message: str, *, epoch: int):
        super().__init__(message)
        self.epoch = epoch


class TrackingUnavailable(GenlabError):
    """The MLflow tracking store could not be reached or written."""
