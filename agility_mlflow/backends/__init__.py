"""Model providers behind one protocol: :class:`Backend` returning :class:`Generation`.

Example:
    >>> from agility_mlflow.config import ModelConfig
    >>> backend = create_backend(ModelConfig(provider="replay", model_id="gpt-4o-mini"))
    >>> backend.provider
    'replay'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agility_mlflow.backends._base import Backend, Generation, Message
from agility_mlflow.config import ModelConfig, RunSettings


def create_backend(model: ModelConfig, settings: RunSettings | None = None, recorded: Mapping[str, Mapping[str, Any]] | None = None) -> Backend:
    """The backend a model config names; providers' SDKs are imported only when used.

    ``recorded``: a replayed model's rows of its ``path:`` file by ``sample_id`` (see :mod:`agility_mlflow.recorded`).
    """
    settings = settings or RunSettings()
    if model.provider == "replay":
        from agility_mlflow.backends.replay import ReplayBackend
        from agility_mlflow.recorded import replay_columns

        return ReplayBackend(model.model_id, replay_columns(model), recorded)
    if model.provider == "local":
        from agility_mlflow.backends.local import LocalBackend

        return LocalBackend(model.model_id)
    if model.provider == "openai":
        from agility_mlflow.backends.openai import OpenAIBackend

        return OpenAIBackend(
            model.model_id,
            base_url=model.base_url,
            api_key=model.api_key,
            api_key_env=model.api_key_env,
            stream=model.stream,
            timeout_s=settings.timeout_s,
        )
    if model.provider == "bedrock":
        from agility_mlflow.backends.bedrock import BedrockBackend

        return BedrockBackend(model.model_id, region=model.region, stream=model.stream, timeout_s=settings.timeout_s,
                              prompt_caching=model.prompt_caching)
    raise ValueError(f"unknown provider {model.provider!r}")  # unreachable: the config validates providers


__all__ = ["Backend", "Generation", "Message", "create_backend"]
