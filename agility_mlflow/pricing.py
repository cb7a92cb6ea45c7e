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


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens, and where the numbers came from."""

    input_per_mtok: float
    output_per_mtok: float
    source: str


def lookup_price(provider: str, model_id: str, overrides: Mapping[str, Mapping[str, float]]) -> Price | None:
    """The price of ``model_id`` served by ``provider``; ``None`` when no catalog knows it.

    Args:
        provider: ``local``, ``openai``, ``bedrock`` or ``replay`` (the recorded source model,
            looked up in every provider's catalog).
        model_id: The provider's id; Bedrock cross-region profiles (``us.anthropic...``) are priced
            as their base model.
        overrides: The config's ``pricing:`` section, ``{model_id: {input: ..., output: ...}}``.
    """
    if model_id in overrides:
        entry = overrides[model_id]
        return Price(float(entry["input"]), float(entry["output"]), "config")
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
    return Price(float(result.input_price), float(result.output_price), "genai-prices")


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


def cost_usd(price: Price | None, input_tokens: int | None, output_tokens: int | None) -> float | None:
    """USD for one call; ``None`` when the price or a token count is unknown."""
    if price is None or input_tokens is None or output_tokens is None:
        return None
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1_000_000
