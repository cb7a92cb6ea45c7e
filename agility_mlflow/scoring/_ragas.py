"""Ragas metrics (``pip install 'agility-mlflow[quality]'``), with the configured judge as their LLM.

Ragas's ``metrics.collections`` API is used: each metric asks its LLM for a pydantic object, which
the judge adapter gets from :meth:`Judge.structured` (the JSON schema constrains the reply where
the backend can, and malformed replies are asked again). A metric object is built per sample, so
concurrent samples never share state. Ragas is imported only when one of its metrics is scored.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agility_mlflow.errors import InputError
from agility_mlflow.scoring._judged_metric import JudgedMetric
from agility_mlflow.scoring._scorer import JudgedScore, JudgeInput

if TYPE_CHECKING:
    from agility_mlflow.scoring._judge_model import Judge

# name -> (ragas class, needs LLM, needs embeddings, ascore arguments from the sample)
_Args = Callable[[JudgeInput], dict[str, Any]]
_LLM_METRICS: dict[str, tuple[str, bool, bool, _Args, bool, bool]] = {
    # name: (class, llm, embeddings, args, needs reference, needs context)
    "answer_correctness": ("AnswerCorrectness", True, True,
                           lambda s: {"user_input": s.question, "response": s.answer, "reference": s.reference}, True, False),
    "faithfulness": ("Faithfulness", True, False,
                     lambda s: {"user_input": s.question, "response": s.answer, "retrieved_contexts": list(s.contexts)}, False, True),
    "answer_relevancy": ("AnswerRelevancy", True, True, lambda s: {"user_input": s.question, "response": s.answer}, False, False),
    "context_precision": ("ContextPrecisionWithReference", True, False,
                          lambda s: {"user_input": s.question, "reference": s.reference, "retrieved_contexts": list(s.contexts)}, True, True),
    "context_recall": ("ContextRecall", True, False,
                       lambda s: {"user_input": s.question, "retrieved_contexts": list(s.contexts), "reference": s.reference}, True, True),
    "factual_correctness": ("FactualCorrectness", True, False, lambda s: {"response": s.answer, "reference": s.reference}, True, False),
    "semantic_similarity": ("SemanticSimilarity", False, True, lambda s: {"reference": s.reference, "response": s.answer}, True, False),
}

# Ragas's string metrics need no judge: name -> ragas class.
STRING_METRICS = {
    "ragas_bleu": "BleuScore",
    "ragas_rouge": "RougeScore",
    "ragas_string_similarity": "NonLLMStringSimilarity",
    "ragas_string_presence": "StringPresence",
}


def ragas_metric(name: str, judge: Judge | None = None) -> JudgedMetric:
    """The judged Ragas metric ``name`` (one of :data:`_LLM_METRICS`), scored by ``judge``."""
    class_name, uses_llm, uses_embeddings, arguments, needs_reference, needs_context = _LLM_METRICS[name]

    def score(item: JudgeInput, judge: Judge) -> JudgedScore:
        module = _ragas_collections()
        components: dict[str, Any] = {}
        if uses_llm:
            components["llm"] = ragas_llm(judge)
        if uses_embeddings:
            components["embeddings"] = ragas_embeddings(judge)
        result = getattr(module, class_name)(**components).score(**arguments(item))
        return JudgedScore(_finite(result.value, name), _reason(result))

    return JudgedMetric(name, "ragas", score, needs_reference=needs_reference, needs_context=needs_context, judge=judge)


def string_metric_score(name: str) -> Callable[[str, Any, Any], float | None]:
    """A plain score function for one of Ragas's string metrics (best over the references)."""

    def score(output: str, references: Any, sample: Any) -> float | None:
        if not references:
            return None
        metric = getattr(_ragas_collections(), STRING_METRICS[name])()
        return max(float(metric.score(reference=ref, response=output).value) for ref in references)

    return score


@functools.lru_cache(maxsize=1)
def _ragas_collections() -> Any:
    from agility_mlflow._env import apply_offline_defaults

    apply_offline_defaults()
    try:
        from ragas.metrics import collections
    except ImportError as exc:
        raise InputError(f"Ragas metrics need the quality extra: pip install 'agility-mlflow[quality]' ({exc})") from None
    return collections


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if math.isnan(number):
        raise ValueError(f"{name}: Ragas returned NaN (the judge's statements could not be scored)")
    return number


def _reason(result: Any) -> str | None:
    reason = getattr(result, "reason", None)
    return str(reason) if reason else None


@functools.lru_cache(maxsize=1)
def _adapter_classes() -> tuple[type, type]:
    """Ragas's LLM and embeddings interfaces over ours, defined on first use so this module never imports Ragas."""
    _ragas_collections()
    from pydantic import BaseModel
    from ragas.embeddings.base import BaseRagasEmbedding
    from ragas.llms.base import InstructorBaseRagasLLM

    class _RagasJudge(InstructorBaseRagasLLM):
        """Ragas's LLM interface over :class:`~agility_mlflow.scoring._judge_model.Judge`."""

        def __init__(self, judge: Any) -> None:
            self.judge = judge

        def generate(self, prompt: str, response_model: type[BaseModel]) -> Any:
            messages = [{"role": "user", "content": prompt}]
            return self.judge.structured(messages, response_model.model_json_schema(), response_model.model_validate)

        async def agenerate(self, prompt: str, response_model: type[BaseModel]) -> Any:
            return await asyncio.to_thread(self.generate, prompt, response_model)

    class _RagasEmbeddings(BaseRagasEmbedding):
        """Ragas's embeddings interface over :class:`~agility_mlflow.scoring._embeddings.Embedder`."""

        def __init__(self, embedder: Any) -> None:
            super().__init__()
            self.embedder = embedder

        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embedder.embed([text])[0]

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return await asyncio.to_thread(self.embed_text, text)

    return _RagasJudge, _RagasEmbeddings


def ragas_llm(judge: Any) -> Any:
    return _adapter_classes()[0](judge)


def ragas_embeddings(judge: Any) -> Any:
    return _adapter_classes()[1](judge.embedder)


RAGAS_METRICS = tuple(_LLM_METRICS)
