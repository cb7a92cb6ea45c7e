"""Prices per million tokens, and the cost of a call, from offline catalogs.

Lookup order: the config's ``pricing:`` overrides, the ``genai-prices`` catalog, then MLflow's
bundled model catalog. The ``local`` provider costs nothing. An unknown model gets ``None`` —
cost unknown — never a price of 0.

Example:
    >>> price = lookup_price("openai", "gpt-4o-mini", {})
    >>> price.source, cost_usd(price, 1_000_000, 0) == price.input_per_mtok
    ('genai-prices', True)
    >>> lookup_price("openai", "my-private-model", {}) is None
    True
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_GENAI_PRICES_PROVIDER = {"openai": "openai", "bedrock": "aws", "replay": None}
_MLFLOW_PROVIDER = {"openai": "openai", "bedrock": "bedrock", "replay": None}
LOCAL_SOURCE = "local (no API charge)"
BATCH_DISCOUNT = 0.5
"""Off on-demand rates for batch jobs when the config states no batch price: OpenAI's Batch API and Bedrock
batch inference both publish 50% for the models they batch."""


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens, and where the numbers came from."""

    input_per_mtok: float
    output_per_mtok: float
    source: str
    cached_input_per_mtok: float | None = None
    """Input tokens read from the prompt cache; None: not known."""
    cache_write_per_mtok: float | None = None
    """Input tokens written to the prompt cache; None: not known."""


def lookup_price(provider: str, model_id: str, overrides: Mapping[str, Mapping[str, float]], mode: str = "on_demand") -> Price | None:
    """The price of ``model_id`` served by ``provider``; ``None`` when no catalog knows it.

    Args:
        provider: ``local``, ``openai``, ``bedrock`` or ``replay`` (the recorded source model,
            looked up in every provider's catalog).
        model_id: The provider's id; Bedrock cross-region profiles (``us.anthropic...``) are priced
            as their base model.
        overrides: The config's ``pricing:`` section, ``{model_id: {input: ..., output: ...}}``.
        mode: ``batch`` prices the provider's batch engine (see :func:`batch_price`).
    """
    price = _on_demand_price(provider, model_id, overrides)
    if mode == "batch" and price is not None:
        return batch_price(price, overrides.get(model_id) or {})
    return price


def batch_price(price: Price, entry: Mapping[str, float | None]) -> Price:
    """``price`` at batch rates: the entry's ``batch_input``/``batch_output``, else less its ``batch_discount``
    (default :data:`BATCH_DISCOUNT`). Cache rates get the same discount; the source says how it was derived.

    Example:
        >>> p = batch_price(Price(3.0, 15.0, "genai-prices"), {})
        >>> p.input_per_mtok, p.output_per_mtok, p.source
        (1.5, 7.5, 'genai-prices, batch at 50% off')
        >>> batch_price(Price(3.0, 15.0, "config"), {"batch_input": 1.0, "batch_output": 4.0}).output_per_mtok
        4.0
    """
    if entry.get("batch_input") is not None and entry.get("batch_output") is not None:
        return Price(float(entry["batch_input"]), float(entry["batch_output"]), f"{price.source}, batch price")  # type: ignore[arg-type]
    discount = BATCH_DISCOUNT if entry.get("batch_discount") is None else float(entry["batch_discount"])  # type: ignore[arg-type]
    keep = 1.0 - discount
    scaled = lambda rate: None if rate is None else round(rate * keep, 9)  # noqa: E731
    return Price(round(price.input_per_mtok * keep, 9), round(price.output_per_mtok * keep, 9),
                 f"{price.source}, batch at {discount:.0%} off", scaled(price.cached_input_per_mtok), scaled(price.cache_write_per_mtok))


def _on_demand_price(provider: str, model_id: str, overrides: Mapping[str, Mapping[str, float]]) -> Price | None:
    if model_id in overrides:
        entry = overrides[model_id]
        optional = lambda key: float(entry[key]) if entry.get(key) is not None else None  # noqa: E731
        return Price(float(entry["input"]), float(entry["output"]), "config", optional("cached_input"), optional("cache_write"))
    if provider == "local":
        return Price(0.0, 0.0, LOCAL_SOURCE)
    return _catalog_price(provider, model_id)


@functools.lru_cache(maxsize=256)
def _catalog_price(provider: str, model_id: str) -> Price | None:
    return _genai_prices(provider, model_id) or _mlflow_catalog(provider, model_id)


def _genai_prices(provider: str, model_id: str) -> Price | None:
    from genai_prices import Usage, calc_price

    million = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    try:  # the bundled snapshot only: no auto-update is started, so nothing goes on the network
        result = calc_price(million, model_ref=model_id, provider_id=_GENAI_PRICES_PROVIDER.get(provider))
    except LookupError:
        return None
    prices = result.model.prices  # a plain ModelPrice, or tiered/conditional prices without one set of cache rates
    cached, write = getattr(prices, "cache_read_mtok", None), getattr(prices, "cache_write_mtok", None)
    return Price(float(result.input_price), float(result.output_price), "genai-prices",
                 float(cached) if cached is not None else None, float(write) if write is not None else None)


def _mlflow_catalog(provider: str, model_id: str) -> Price | None:
    from mlflow.utils.providers import cost_per_token

    try:
        result = cost_per_token(model=model_id, prompt_tokens=1_000_000, completion_tokens=1_000_000,
                                custom_llm_provider=_MLFLOW_PROVIDER.get(provider))
    except Exception as exc:  # an unknown provider name raises; treat as unknown model
        logger.debug("MLflow catalog has no price for %s/%s: %s", provider, model_id, exc)
        return None
    if result is None:
        return None
    return Price(float(result[0]), float(result[1]), "mlflow-catalog")


def cost_usd(
    price: Price | None, input_tokens: int | None, output_tokens: int | None, cached_input_tokens: int | None = None, cache_write_tokens: int | None = None
) -> float | None:
    """USD for one call; ``None`` when the price, a token count, or the rate of tokens that were billed apart is unknown.

    ``input_tokens`` counts every input token; those read from (``cached_input_tokens``) or written to
    (``cache_write_tokens``) the prompt cache are billed at their own rates, the rest at the input rate.
    Reasoning tokens are output tokens and billed as such.

    Example:
        >>> cost_usd(Price(0.15, 0.60, "x", cached_input_per_mtok=0.075), 1_000_000, 0, cached_input_tokens=400_000)
        0.12
        >>> cost_usd(Price(0.15, 0.60, "x"), 1_000, 10, cached_input_tokens=500) is None
        True
    """
    if price is None or input_tokens is None or output_tokens is None:
        return None
    cached, written = cached_input_tokens or 0, cache_write_tokens or 0
    if (cached and price.cached_input_per_mtok is None) or (written and price.cache_write_per_mtok is None):
        return None
    usd = (input_tokens - cached - written) * price.input_per_mtok + output_tokens * price.output_per_mtok
    usd += cached * (price.cached_input_per_mtok or 0.0) + written * (price.cache_write_per_mtok or 0.0)
    return round(usd / 1_000_000, 12)
