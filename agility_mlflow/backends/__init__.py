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
from agility_mlflow.backends._batch import BatchBackend, JobStore, run_batch
from agility_mlflow.config import ModelConfig, RunSettings


def create_backend(model: ModelConfig, settings: RunSettings | None = None, recorded: Mapping[str, Mapping[str, Any]] | None = None) -> Backend:
    """The backend a model config names; providers' SDKs are imported only when used.

    ``recorded``: a replayed model's rows of its ``path:`` file by ``sample_id`` (see :mod:`agility_mlflow.recorded`).
    """
    settings = settings or RunSettings()
    if model.mode == "batch":
        return _batch_backend(model, settings)
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


def _batch_backend(model: ModelConfig, settings: RunSettings) -> Backend:
    if model.provider == "bedrock":
        from agility_mlflow.backends.bedrock_batch import BedrockBatchBackend

        assert model.s3_uri and model.role_arn  # the config requires both
        return BedrockBatchBackend(model.model_id, s3_uri=model.s3_uri, role_arn=model.role_arn, region=model.region, poll_s=model.poll_s,
                                   timeout_s=settings.timeout_s)
    from agility_mlflow.backends.openai_batch import OpenAIBatchBackend

    return OpenAIBatchBackend(model.model_id, base_url=model.base_url, api_key=model.api_key, api_key_env=model.api_key_env,
                              poll_s=model.poll_s, timeout_s=settings.timeout_s)


def check_batch_size(model: ModelConfig, records: int) -> None:
    """For a ``mode: batch`` model: an :class:`~agility_mlflow.errors.InputError` when ``records`` samples do not fit one job.

    Example:
        >>> check_batch_size(ModelConfig(provider="openai", model_id="gpt-4o-mini", mode="batch"), 3)
        >>> check_batch_size(ModelConfig(provider="bedrock", model_id="m", mode="batch", s3_uri="s3://b", role_arn="r"), 3)
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.InputError: mode: batch needs at least 100 samples per job (Amazon Bedrock batch inference quotas: ...
    """
    from agility_mlflow.backends._batch import check_size

    if model.mode != "batch":
        return
    if model.provider == "bedrock":
        from agility_mlflow.backends.bedrock_batch import LIMITS
    else:
        from agility_mlflow.backends.openai_batch import LIMITS
    check_size(LIMITS, records)


__all__ = ["Backend", "BatchBackend", "Generation", "JobStore", "Message", "check_batch_size", "create_backend", "run_batch"]
