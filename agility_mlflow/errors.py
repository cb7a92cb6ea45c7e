"""Errors that the CLI turns into one clear line and an exit code."""

from __future__ import annotations


class AgilityError(Exception):
    """Base class of every error agility_mlflow raises on purpose."""


class InputError(AgilityError):
    """Bad user input: a config key, a dataset cell, a template, a CLI argument.

    The message is one line that names the file and, where it applies, the row, column or key.
    The CLI prints it on stderr and exits with code 2.

    Example:
        >>> str(InputError("golden.csv, row 3, column 'sample_id': duplicate value 'q1'"))
        "golden.csv, row 3, column 'sample_id': duplicate value 'q1'"
    """


class ProviderError(AgilityError):
    """A model provider failed in a way that retrying will not fix (bad model id, access denied)."""


class RetryableError(AgilityError):
    """A transient provider failure (throttling, 5xx, timeout, a broken stream): worth another try.

    Args:
        message: The provider's own message.
        throttled: True when the provider asked us to slow down, so the runner lowers concurrency.
    """

    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled
