"""Whether a process on this host is still running: how abandoned runs and trials are recognized."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True when ``pid`` runs on this host (or exists but belongs to another user).

    Example:
        >>> process_alive(os.getpid())
        True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
