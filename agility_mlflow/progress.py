"""The terminal progress bar of model calls, shared by the runner and batch jobs."""

from __future__ import annotations

from typing import Any


class _NoProgress:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def progress_bar(total: int, description: str, enabled: bool | None) -> Any:
    """A tqdm bar on stderr; by default (``enabled=None``) only when stderr is a terminal.

    Example:
        >>> bar = progress_bar(3, "demo", enabled=False)
        >>> bar.update(3); bar.close()
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, desc=description, unit="sample", disable=None if enabled is None else not enabled, leave=False)
