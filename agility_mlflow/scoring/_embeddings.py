"""Text embeddings for the metrics that compare meanings (``answer_relevancy``, ``semantic_similarity``).

The default embeds with the bundled local model (mean-pooled hidden states): offline and real,
though a 135M chat model is a weak embedder, so its similarities run high. Point
``judge.embeddings`` at an OpenAI-compatible ``/embeddings`` endpoint for a proper one.

Every embedding goes through the runner like a judge call: cached, retried, and its tokens and cost
counted with the judge's (``judge_calls``, ``judge_input_tokens``, ``judge_cost_usd``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

from agility_mlflow.backends import Backend
from agility_mlflow.config import EmbeddingsConfig
from agility_mlflow.pricing import Price
from agility_mlflow.runner import Request, Runner


class Embedder:
    """``embed(texts) -> vectors`` for one configured embedding model; safe across threads.

    Args:
        config: The ``judge.embeddings`` section.
        runner: The runner the judge uses (cache, retries, concurrency).
        price: The embedding model's price; ``None`` leaves the judge's cost unknown.
    """

    def __init__(self, config: EmbeddingsConfig, runner: Runner, price: Price | None) -> None:
        self.config = config
        self.runner = runner
        self.price = price
        self._lock = threading.Lock()
        self._backend: Backend | None = None

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text; a failed call raises :class:`~agility_mlflow.scoring.JudgeReplyError` (the sample's judge error)."""
        from agility_mlflow.scoring._judge_model import JudgeReplyError, current_usage

        vectors = []
        for text in texts:
            outcome = self.runner.call(self.backend, {}, Request("embedding", [{"role": "user", "content": text or " "}], {}))
            if outcome.generation is None:
                raise JudgeReplyError(f"embeddings {self.config.provider}:{self.config.model_id}: {outcome.error}")
            usage = current_usage.get()
            if usage is not None:
                usage.add(outcome.generation, self.price, outcome.cached)
            vectors.append(json.loads(outcome.generation.text))
        return vectors

    @property
    def backend(self) -> Backend:
        # Built on first use: a config that names an embedding endpoint but scores no metric needing it never needs its key.
        with self._lock:
            if self._backend is None:
                self._backend = _create_backend(self.config, self.runner.settings.timeout_s)
            return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def _create_backend(config: EmbeddingsConfig, timeout_s: float) -> Backend:
    if config.provider == "local":
        from agility_mlflow.backends.local import LocalEmbeddingBackend

        return LocalEmbeddingBackend(config.model_id)
    from agility_mlflow.backends.openai import OpenAIEmbeddingBackend

    return OpenAIEmbeddingBackend(config.model_id, base_url=config.base_url, api_key_env=config.api_key_env, timeout_s=timeout_s)

