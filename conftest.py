"""Collection rules for the whole repository (package doctests, tests, bench)."""

from __future__ import annotations

import doctest

import pytest
from _pytest.doctest import DoctestItem


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out docstrings whose every example is marked ``+SKIP``: they illustrate a call that needs a server or a
    model, and are proven by the tests that make that call; collected, each would only be reported as skipped."""
    illustrative = [item for item in items if isinstance(item, DoctestItem) and item.dtest is not None
                    and all(example.options.get(doctest.SKIP) for example in item.dtest.examples)]
    if illustrative:
        config.hook.pytest_deselected(items=illustrative)
        items[:] = [item for item in items if item not in illustrative]
