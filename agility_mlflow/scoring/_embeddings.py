"""Text embeddings for the metrics that compare meanings (``answer_relevancy``, ``semantic_similarity``).

The default embeds with the bundled local model (mean-pooled hidden states): offline and real,
though a 135M chat model is a weak embedder, so its similarities run high. Point
``judge.embeddings`` at an OpenAI-compatible ``/embeddings`` endpoint for a proper one.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from typing import Any

from agility_mlflow.config import EmbeddingsConfig
from agility_mlflow.errors import AgilityError


class Embedder:
    """``embed(texts) -> vectors`` for one configured embedding model; safe across threads."""

    def __init__(self, config: EmbeddingsConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._client: Any = None

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.config.provider == "local":
            return [_local_embed(self.config.model_id, text) for text in texts]
        return self._openai_embed(texts)

    def _openai_embed(self, texts: Sequence[str]) -> list[list[float]]:
        import openai

        with self._lock:
            if self._client is None:
                key = os.environ.get(self.config.api_key_env or "OPENAI_API_KEY")
                if not key and not self.config.base_url:
                    raise AgilityError(f"no API key for embeddings model '{self.config.model_id}': set {self.config.api_key_env or 'OPENAI_API_KEY'} or base_url")
                self._client = openai.OpenAI(base_url=self.config.base_url, api_key=key or "not-needed", max_retries=3)
        response = self._client.embeddings.create(model=self.config.model_id, input=list(texts))
        return [list(item.embedding) for item in response.data]


@functools.lru_cache(maxsize=4096)
def _local_embed(model_id: str, text: str) -> list[float]:
    from agility_mlflow.backends.local import embed

    return embed(model_id, text)
