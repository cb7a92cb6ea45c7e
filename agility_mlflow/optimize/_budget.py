"""The optimization's call and spend limits, checked before every model call and kept on disk.

Every call the runner makes (target, judge, reflection, retries included) first reserves one call
and its worst-case price (input at 2 characters per token, output at ``max_tokens``); the reservation
is settled to the actual price when the answer comes back. A call that would cross ``max_calls`` or
``--budget-usd`` is never made. The counts are written to a file after every change, so a killed
optimization resumes with what it already spent (a call in flight at the kill counts at its worst case).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agility_mlflow.backends import Backend, Generation
from agility_mlflow.errors import BudgetExhausted
from agility_mlflow.pricing import Price, cost_usd

CHARS_PER_TOKEN_WORST = 2


@dataclass(frozen=True)
class _Ticket:
    role: str
    usd: float
    price: Price | None


def worst_call_usd(price: Price | None, params: Mapping[str, Any], messages: Sequence[Mapping[str, str]]) -> float:
    """The most one call can cost: every 2 characters an input token, ``max_tokens`` output tokens.

    Example:
        >>> worst_call_usd(Price(1.0, 2.0, "config"), {"max_tokens": 100}, [{"role": "user", "content": "x" * 200}])
        0.000308
    """
    if price is None:
        return 0.0
    chars = sum(len(m.get("content") or "") for m in messages) + 16 * len(messages)
    return cost_usd(price, -(-chars // CHARS_PER_TOKEN_WORST), int(params.get("max_tokens") or 4096)) or 0.0


class Budget:
    """The :class:`~agility_mlflow.runner.CallGuard` of one optimization.

    Args:
        path: The file the counts live in (read back on resume).
        max_calls: Calls in all, for every model; never crossed.
        max_usd: Spend in all, at worst-case prices until settled; ``None``: no limit.

    Example:
        >>> import pathlib, tempfile
        >>> from agility_mlflow.backends.replay import ReplayBackend
        >>> budget = Budget(pathlib.Path(tempfile.mkdtemp()) / "budget.json", max_calls=1, max_usd=None)
        >>> target = ReplayBackend("m"); budget.register(target, "target", None)
        >>> budget.settle(budget.reserve(target, {}, []), None)
        >>> budget.reserve(target, {}, [])
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.BudgetExhausted: max_calls reached: 1 of 1 calls made
    """

    def __init__(self, path: Path, max_calls: int, max_usd: float | None) -> None:
        self.path = path
        self.max_calls = max_calls
        self.max_usd = max_usd
        self.call_limit = max_calls
        """The calls that may be made now: lower than ``max_calls`` while the final test run's share is held back."""
        self.calls: dict[str, int] = {}
        self.usd = 0.0
        self.refused = False
        self._backends: dict[int, tuple[str, Price | None]] = {}
        self._lock = threading.Lock()
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.calls, self.usd = {k: int(v) for k, v in saved["calls"].items()}, float(saved["usd"])

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def register(self, backend: Backend, role: str, price: Price | None) -> None:
        """Count ``backend``'s calls as ``role`` (target, judge, reflection) at ``price``."""
        self._backends[id(backend)] = (role, price)

    def reserve(self, backend: Backend, params: Mapping[str, Any], messages: Sequence[Mapping[str, str]]) -> _Ticket:
        role, price = self._backends.get(id(backend), ("other", None))
        worst = worst_call_usd(price, params, messages)
        with self._lock:
            if self.total_calls + 1 > self.call_limit:
                self.refused = True
                raise BudgetExhausted(f"max_calls reached: {self.total_calls} of {self.call_limit} calls made")
            if self.max_usd is not None and self.usd + worst > self.max_usd:
                self.refused = True
                raise BudgetExhausted(f"--budget-usd: ${self.usd:.4f} spent; a call could cost ${worst:.4f} more, over ${self.max_usd:.4f}")
            self.calls[role] = self.calls.get(role, 0) + 1
            self.usd += worst
            self._save()
        return _Ticket(role, worst, price)

    def settle(self, ticket: _Ticket | None, generation: Generation | None) -> None:
        """Replace a call's worst-case price by its actual one (kept at worst when the tokens are unknown)."""
        if ticket is None or generation is None or generation.input_tokens is None or generation.output_tokens is None:
            return
        actual = cost_usd(ticket.price, generation.input_tokens, generation.output_tokens) if ticket.price else 0.0
        with self._lock:
            self.usd += (actual or 0.0) - ticket.usd
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".budget-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"calls": self.calls, "usd": self.usd, "max_calls": self.max_calls, "max_usd": self.max_usd}, handle)
        os.replace(tmp, self.path)
