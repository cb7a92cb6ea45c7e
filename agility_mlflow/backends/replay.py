"""Recorded answers of any model, replayed from the golden dataset (or a file joined to it) without any call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

    def __init__(self, model_id: str, columns: ReplayColumns | None = None, recorded: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__(model_id)
        self.columns = columns or ReplayColumns()
        self.recorded = recorded
        """Rows of a recorded-outputs file by ``sample_id``; None: the outputs are columns of the sample itself."""

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        c = self.columns
        if sample is not None and self.recorded is not None:
            sample = self.recorded.get(str(sample.get("sample_id")))
        if sample is None or sample.get(c.output) is None:
            raise ProviderError(f"replay needs a value in the dataset column '{c.output}'")
        value = lambda column: sample.get(column) if column else None  # noqa: E731 - numbers already, as the dataset converts them
        return Generation(
            text=str(sample[c.output]),
            latency_s=value(c.latency),
            ttft_s=value(c.ttft),
            input_tokens=value(c.input_tokens),
            output_tokens=value(c.output_tokens),
            finish_reason="recorded",
        )


@dataclass(frozen=True)
class ReplayColumns:
    """Where a replayed model's outputs, latency and tokens are recorded (default: the source model's columns)."""

    output: str = "answer_source_llm"
    latency: str | None = "latency_source_llm"
    ttft: str | None = "ttft_source_llm"
    input_tokens: str | None = "input_token_source_llm"
    output_tokens: str | None = "output_token_source_llm"
