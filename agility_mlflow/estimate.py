"""What an evaluation may cost at most, before the first call: model calls, judge calls, USD.

The estimate is a deliberate upper bound, so a budget built on it is never crossed: every answer
is taken to use its whole ``max_tokens``, text is counted at ~3 characters per token (English runs
nearer 4), every judged metric sends its most prompts per sample and every judge reply is taken to
be malformed until the last attempt. Cache hits make the real cost lower, never higher.

Example:
    >>> from agility_mlflow.pricing import Price
    >>> e = Estimate(samples=10, model_calls=10, judge_calls=30, model_usd=0.02, judge_usd=0.05)
    >>> e.total_usd, e.describe()
    (0.07, '10 model calls ($0.0200) + 30 judge calls ($0.0500) = $0.0700 at most')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agility_mlflow.config import Config, JudgeConfig, ModelConfig
from agility_mlflow.pricing import Price, lookup_price
from agility_mlflow.prompts import Template

CHARS_PER_TOKEN = 3
"""Fewer characters per token than English text has, so token counts are over-estimated."""
JUDGE_INSTRUCTION_CHARS = 6000
"""The longest instructions and few-shot examples a judged metric's prompt adds to the sample (Ragas, DeepEval)."""

# The most judge prompts one sample takes per metric (before malformed replies are asked again),
# read from the libraries' metric implementations; a metric not listed is taken to need 6.
JUDGE_PROMPTS_PER_SAMPLE: dict[str, int] = {
    "llm_judge": 1,
    "answer_correctness": 3,      # statements of the answer, of the reference, their classification
    "faithfulness": 2,            # statements, then their verdicts against the context
    "answer_relevancy": 3,        # one generated question per strictness step (3)
    "context_precision": 1,       # per retrieved context (the context column is one)
    "context_recall": 1,
    "factual_correctness": 4,     # claims of each side, then NLI both ways
    "semantic_similarity": 0,     # embeddings only
    "deepeval_answer_relevancy": 3,
    "deepeval_faithfulness": 4,
    "deepeval_summarization": 6,
    "deepeval_hallucination": 2,
    "deepeval_bias": 3,
    "deepeval_toxicity": 3,
    "geval": 2,                   # evaluation steps, then the score
}
UNLISTED_JUDGE_PROMPTS = 6


@dataclass(frozen=True)
class Estimate:
    """The most an evaluation may call and cost; ``unpriced`` names models whose cost is left out."""

    samples: int
    model_calls: int
    judge_calls: int
    model_usd: float
    judge_usd: float
    unpriced: tuple[str, ...] = ()

    @property
    def total_usd(self) -> float:
        return round(self.model_usd + self.judge_usd, 12)

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(
            self.samples + other.samples, self.model_calls + other.model_calls, self.judge_calls + other.judge_calls,
            self.model_usd + other.model_usd, self.judge_usd + other.judge_usd,
            tuple(dict.fromkeys(self.unpriced + other.unpriced)),
        )

    def describe(self) -> str:
        """One line: calls and USD of the model and of the judge, and what could not be priced."""
        text = (f"{self.model_calls} model calls (${self.model_usd:.4f}) + {self.judge_calls} judge calls "
                f"(${self.judge_usd:.4f}) = ${self.total_usd:.4f} at most")
        if self.unpriced:
            text += f"; no price known for {', '.join(self.unpriced)}: left out"
        return text


NOTHING = Estimate(0, 0, 0, 0.0, 0.0)


def estimate_evaluation(
    config: Config,
    model: ModelConfig,
    template: Template,
    rows: Sequence[Mapping[str, Any]],
    judged_metrics: Sequence[str],
    *,
    max_tokens: int | None = None,
    steps: Sequence[Any] = (),
    judge_instruction_chars: int = 0,
) -> Estimate:
    """The most evaluating ``model`` with ``template`` on ``rows`` may call and cost, judge included.

    Args:
        config: The project config (its ``pricing:`` overrides and ``judge:``).
        model: The evaluated model (a ``replay`` model makes no call).
        template: The prompt (the migrated step's, with ``steps``).
        rows: The samples.
        judged_metrics: Names of the judged metrics scored on each answer.
        max_tokens: The answer's token limit, when a sweep may raise it above ``model.params``.
        steps: A multi-step application's planned steps (replayed ones make no call).
        judge_instruction_chars: Text the judge's prompts carry besides the sample (criteria, a style guide).

    Example:
        >>> from agility_mlflow.config import CandidateConfig
        >>> cfg = Config.model_validate({"experiment": "x", "dataset": {"path": "d.csv"}, "prompts": [{"name": "qa", "template": "Q"}],
        ...     "pricing": {"m": {"input": 3.0, "output": 15.0}}})
        >>> model = CandidateConfig(name="c", provider="openai", model_id="m", params={"max_tokens": 100})
        >>> e = estimate_evaluation(cfg, model, Template.from_text("qa", "Q: {{question}}"), [{"question": "x" * 85}], [])
        >>> e.model_calls, round(e.model_usd, 6)   # 300 characters with chat formatting: 100 input tokens; 100 output
        (1, 0.0018)
    """
    pricing = config.price_overrides()
    answer_tokens = max(max_tokens or 0, model.params.max_tokens)
    unpriced: list[str] = []
    model_calls, model_usd = 0, 0.0
    planned = list(steps) or [None]
    for step in planned:
        if step is not None and step.replay is not None:
            continue
        step_model = step.model if step is not None and step.model is not None else model
        if step_model.provider == "replay":
            continue
        step_template = step.template if step is not None else template
        step_tokens = step_model.params.max_tokens if step is not None and step.model is not None else answer_tokens
        price = lookup_price(step_model.provider, step_model.model_id, pricing, step_model.mode)
        model_calls += len(rows)
        if price is None:
            unpriced.append(step_model.model_id)
            continue
        input_tokens = sum(_prompt_chars(step_template, row, step_tokens) for row in rows) / CHARS_PER_TOKEN
        model_usd += _usd(price, input_tokens, len(rows) * step_tokens)
    judge_calls, judge_usd = _judge_worst_case(config, rows, judged_metrics, answer_tokens, judge_instruction_chars, unpriced)
    return Estimate(len(rows), model_calls, judge_calls, model_usd, judge_usd, tuple(dict.fromkeys(unpriced)))


def judge_prompts_per_sample(metric_name: str) -> int:
    """The most judge prompts ``metric_name`` sends for one sample (GEval criteria count as ``geval``)."""
    key = "geval" if metric_name.startswith("geval_") else metric_name
    return JUDGE_PROMPTS_PER_SAMPLE.get(key, UNLISTED_JUDGE_PROMPTS)


def _judge_worst_case(
    config: Config, rows: Sequence[Mapping[str, Any]], judged_metrics: Sequence[str], answer_tokens: int, instruction_chars: int,
    unpriced: list[str],
) -> tuple[int, float]:
    judge: JudgeConfig | None = config.judge
    if judge is None or not judged_metrics:
        return 0, 0.0
    prompts = sum(judge_prompts_per_sample(name) for name in judged_metrics)
    attempts = judge.max_attempts
    calls = len(rows) * prompts * attempts
    price = lookup_price(judge.provider, judge.model_id, config.price_overrides())
    if price is None:
        unpriced.append(f"judge {judge.model_id}")
        return calls, 0.0
    reply_tokens = judge.params.max_tokens
    usd = 0.0
    for row in rows:
        sample_chars = JUDGE_INSTRUCTION_CHARS + instruction_chars + sum(len(str(value)) for value in row.values() if value is not None)
        # Each attempt after the first also carries the bad reply and the request to fix it.
        per_call_input = sample_chars / CHARS_PER_TOKEN + answer_tokens + (attempts - 1) * (reply_tokens + 50)
        usd += prompts * attempts * _usd(price, per_call_input, reply_tokens)
    return calls, usd


def _prompt_chars(template: Template, row: Mapping[str, Any], produced_tokens: int) -> int:
    """Characters of the rendered prompt; a variable an earlier step produces counts as a whole answer."""
    chars = len(template.user) + len(template.system or "") + 200  # chat formatting
    for name in template.variables:
        value = row.get(name)
        chars += len(str(value)) if value is not None else produced_tokens * CHARS_PER_TOKEN * 2
    return chars


def _usd(price: Price, input_tokens: float, output_tokens: float) -> float:
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6
