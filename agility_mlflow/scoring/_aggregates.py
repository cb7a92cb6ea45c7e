"""Run-level aggregates of per-sample rows: counts, latency percentiles, tokens and cost."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from agility_mlflow.vocabulary import (
    CACHE_WRITE_TOKENS,
    CACHED_INPUT_TOKENS,
    COST,
    COST_PER_SAMPLE,
    COST_TOTAL,
    ERROR,
    INPUT_TOKENS,
    LATENCY,
    LATENCY_MEAN,
    LATENCY_P50,
    LATENCY_P95,
    N_ERRORS,
    N_SAMPLES,
    OUTPUT_TOKENS,
    PROVIDER_LATENCY,
    PROVIDER_LATENCY_P50,
    PROVIDER_LATENCY_P95,
    REASONING_TOKENS,
    TOKENS_MEAN_SUFFIX,
    TTFT,
    TTFT_P50,
    TTFT_P95,
)


def mean_score(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not ``None``; ``None`` when there are none.

    Example:
        >>> mean_score([1.0, None, 0.0])
        0.5
    """
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def run_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``n_samples``, ``n_errors``, latency, time to first token, tokens and cost over successful rows.

    Percentiles interpolate linearly (numpy's default). Metrics with nothing measured are left
    out. Cost is reported only when every successful row has a known cost: a partly known cost
    would understate the total.

    Example:
        >>> rows = [{"latency_s": 1.0, "ttft_s": None, "input_tokens": 10, "output_tokens": 2, "cost_usd": 0.5, "error": None},
        ...         {"latency_s": 3.0, "ttft_s": None, "input_tokens": 30, "output_tokens": 4, "cost_usd": 1.5, "error": None},
        ...         {"latency_s": None, "ttft_s": None, "input_tokens": None, "output_tokens": None, "cost_usd": None, "error": "x"}]
        >>> m = run_metrics(rows)
        >>> m["n_samples"], m["n_errors"], m["latency_p50_s"], m["cost_usd_total"], "ttft_p50_s" in m
        (3.0, 1.0, 2.0, 2.0, False)
    """
    ok = [r for r in rows if r.get(ERROR) is None]
    result = {N_SAMPLES: float(len(rows)), N_ERRORS: float(len(rows) - len(ok))}
    latency = _present(ok, LATENCY)
    if latency:
        result.update({LATENCY_MEAN: float(np.mean(latency)), LATENCY_P50: _pct(latency, 50), LATENCY_P95: _pct(latency, 95)})
    ttft = _present(ok, TTFT)
    if ttft:
        result.update({TTFT_P50: _pct(ttft, 50), TTFT_P95: _pct(ttft, 95)})
    provider_latency = _present(ok, PROVIDER_LATENCY)
    if provider_latency:  # the provider's own time (Bedrock latencyMs): latency_s minus this is the network
        result.update({PROVIDER_LATENCY_P50: _pct(provider_latency, 50), PROVIDER_LATENCY_P95: _pct(provider_latency, 95)})
    for key in (INPUT_TOKENS, OUTPUT_TOKENS, REASONING_TOKENS, CACHED_INPUT_TOKENS, CACHE_WRITE_TOKENS):
        values = _present(ok, key)
        if values:
            result[key + TOKENS_MEAN_SUFFIX] = float(np.mean(values))
    costs = [c for r in ok if (c := r.get(COST)) is not None]
    if ok and len(costs) == len(ok):
        total = float(sum(costs))
        result.update({COST_TOTAL: total, COST_PER_SAMPLE: total / len(ok)})
    return result


def _present(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None]


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q))
