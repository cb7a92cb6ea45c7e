"""The source model's recorded answers, replayed from the golden dataset without any call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow.backends._base import Backend, Generation, Message
from agility_mlflow.errors import ProviderError


class ReplayBackend(Backend):
    """Answers with ``answer_source_llm`` and the recorded latency, time to first token and tokens.

    Example:
        >>> row = {"answer_source_llm": "42", "latency_source_llm": 1.5, "output_token_source_llm": 2}
        >>> ReplayBackend("gpt-4o-mini").generate([], {}, sample=row).latency_s
        1.5
    """

    provider = "replay"
    cacheable = False

    def generate(
        self,
        messages: Sequence[Message],
        params: Mapping[str, Any],
        *,
        sample: Mapping[str, Any] | None = None,
    ) -> Generation:
        if sample is None or sample.get("answer_source_llm") is None:
            raise ProviderError("replay needs the dataset column 'answer_source_llm'")
        return Generation(
            text=str(sample["answer_source_llm"]),
            latency_s=sample.get("latency_source_llm"),
            ttft_s=sample.get("ttft_source_llm"),
            input_tokens=sample.get("input_token_source_llm"),
            output_tokens=sample.get("output_token_source_llm"),
            finish_reason="recorded",
        )
