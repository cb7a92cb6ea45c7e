"""Keeping Python's cyclic garbage collector off what lives until the end of a long command."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Leave every object alive on entering (imported modules, a loaded dataset) out of the cyclic GC's collections until exit.

    A full collection scans every tracked object, and the collector runs one each time the heap has
    grown by a quarter: a run over many samples paid for scanning MLflow's modules and the golden
    set's rows again and again. When the host process has frozen objects of its own (say, before
    forking workers), its choice is left alone.

    Example:
        >>> with long_lived_frozen():
        ...     gc.get_freeze_count() > 0
        True
        >>> gc.get_freeze_count()
        0
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()  # back into the oldest generation: collected as usual again
