"""Errors that the CLI turns into one clear line and an exit code."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

MAX_PROBLEMS_SHOWN = 20
"""A validation pass reports every problem it finds; this many are shown, then how many more there are."""


class AgilityError(Exception):
    """Base class of every error agility_mlflow raises on purpose."""


class InputError(AgilityError):
    """Bad user input: a config key, a dataset cell, a template, a CLI argument.

    The message is one line that names the file and, where it applies, the row, column or key.
    The CLI prints it on stderr and exits with code 2.

    Example:
        >>> str(InputError("golden.csv, row 3, column 'sample_id': duplicate value 'q1'"))
        "golden.csv, row 3, column 'sample_id': duplicate value 'q1'"

    Several problems found in one validation pass travel together, one line each (see :class:`Problems`):

        >>> error = InputError(["golden.csv, row 2: a", "golden.csv, row 3: b"])
        >>> error.problems
        ['golden.csv, row 2: a', 'golden.csv, row 3: b']
    """

    def __init__(self, problems: str | Sequence[str], more: int = 0) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.more = more
        """Problems found beyond those kept in ``problems``."""
        lines = self.problems[:MAX_PROBLEMS_SHOWN]
        hidden = len(self.problems) - len(lines) + more
        if hidden:
            lines.append(f"... and {hidden} more problem{'s' if hidden > 1 else ''}")
        super().__init__("\n".join(lines))


class Problems:
    """Collects the problems of one validation pass, so the user fixes them all at once.

    Only the first :data:`MAX_PROBLEMS_SHOWN` messages are kept (a 100k-row file with a bad column
    stays small in memory); the rest are counted.

    Example:
        >>> problems = Problems()
        >>> with problems.collect():
        ...     raise InputError("golden.csv, row 2, column 'question': missing value")
        >>> problems.add("golden.csv, row 4, column 'sample_id': duplicate value 'q1' (first at row 1)")
        >>> problems.raise_if_any()
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.InputError: golden.csv, row 2, column 'question': missing value
        golden.csv, row 4, column 'sample_id': duplicate value 'q1' (first at row 1)
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.more = 0

    def __bool__(self) -> bool:
        return bool(self.messages or self.more)

    def add(self, message: str) -> None:
        if len(self.messages) < MAX_PROBLEMS_SHOWN:
            self.messages.append(message)
        else:
            self.more += 1

    def extend(self, error: InputError) -> None:
        for message in error.problems:
            self.add(message)
        self.more += error.more

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record an :class:`InputError` raised inside the block instead of stopping at it."""
        try:
            yield
        except InputError as exc:
            self.extend(exc)

    def raise_if_any(self) -> None:
        if self:
            raise InputError(self.messages, self.more)


class ProviderError(AgilityError):
    """A model provider failed in a way that retrying will not fix (bad model id, access denied)."""


class BudgetExhausted(ProviderError):
    """A call would cross a call or spend limit: it is not made, and the work that needed it stops.

    A run stopped this way ends KILLED (stopped on purpose, its partial result never FINISHED).
    """

    run_status = "KILLED"


class RetryableError(AgilityError):
    """A transient provider failure (throttling, 5xx, timeout, a broken stream): worth another try.

    Args:
        message: The provider's own message.
        throttled: True when the provider asked us to slow down, so the runner lowers concurrency.
    """

    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled
