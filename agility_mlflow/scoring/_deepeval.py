"""DeepEval metrics (``pip install 'agility-mlflow[quality]'``), with the configured judge as their model.

Metrics run synchronously (``async_mode=False``) on a :class:`DeepEvalBaseLLM` over our judge, one
metric object per sample. Names carry a ``deepeval_`` prefix where Ragas has a metric of the same
idea (``deepeval_faithfulness``), and GEval criteria from ``judge.geval`` are ``geval_<name>``.
``deepeval_hallucination``, ``deepeval_bias`` and ``deepeval_toxicity`` are lower-is-better.
DeepEval is imported only when one of its metrics is scored, with its telemetry, ``.env`` loading
and ``./.deepeval`` files switched off.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agility_mlflow.errors import InputError
from agility_mlflow.scoring._judged_metric import JudgedMetric
from agility_mlflow.scoring._scorer import JudgedScore, JudgeInput

if TYPE_CHECKING:
    from agility_mlflow.scoring._judge_model import Judge

GEVAL_PREFIX = "geval_"

# name -> (deepeval class, needs reference, needs context, higher is better)
_METRICS: dict[str, tuple[str, bool, bool, bool]] = {
    "deepeval_answer_relevancy": ("AnswerRelevancyMetric", False, False, True),
    "deepeval_faithfulness": ("FaithfulnessMetric", False, True, True),
    "deepeval_summarization": ("SummarizationMetric", False, False, True),
    "deepeval_hallucination": ("HallucinationMetric", False, True, False),
    "deepeval_bias": ("BiasMetric", False, False, False),
    "deepeval_toxicity": ("ToxicityMetric", False, False, False),
}
DEEPEVAL_METRICS = tuple(_METRICS)


def deepeval_metric(name: str, judge: Judge | None = None) -> JudgedMetric:
    """The judged DeepEval metric ``name``, scored by ``judge``: one of :data:`DEEPEVAL_METRICS` or ``geval_<criteria name>``."""
    if name.startswith(GEVAL_PREFIX):
        return _geval(name, judge)
    class_name, needs_reference, needs_context, higher_is_better = _METRICS[name]

    def score(item: JudgeInput, judge: Judge) -> JudgedScore:
        module = _deepeval()
        metric = getattr(module.metrics, class_name)(model=deepeval_model(judge), async_mode=False, include_reason=True)
        return _measure(metric, item)

    return JudgedMetric(name, "deepeval", score, needs_reference, needs_context, higher_is_better, judge=judge)


def _geval(name: str, judge: Judge | None) -> JudgedMetric:
    criteria_name = name.removeprefix(GEVAL_PREFIX)

    def score(item: JudgeInput, judge: Judge) -> JudgedScore:
        criteria = judge.config.geval.get(criteria_name)
        if criteria is None:  # prepare() checks this up front; kept for direct callers
            raise InputError(f"metric '{name}': add its criteria under judge.geval.{criteria_name}")
        module = _deepeval()
        params = module.test_case.SingleTurnParams
        evaluation_params = [params.INPUT, params.ACTUAL_OUTPUT] + ([params.EXPECTED_OUTPUT] if item.references else [])
        metric = module.metrics.GEval(name=criteria_name, criteria=criteria, evaluation_params=evaluation_params,
                                      model=deepeval_model(judge), async_mode=False)
        return _measure(metric, item)

    return JudgedMetric(name, "deepeval", score, judge=judge)


def _measure(metric: Any, item: JudgeInput) -> JudgedScore:
    module = _deepeval()
    contexts = list(item.contexts) or None
    case = module.test_case.LLMTestCase(input=item.question, actual_output=item.answer, expected_output=item.reference,
                                        context=contexts, retrieval_context=contexts)
    metric.measure(case, _show_indicator=False)
    if metric.score is None:
        raise ValueError(metric.error or "DeepEval returned no score")
    return JudgedScore(float(metric.score), metric.reason)


@functools.lru_cache(maxsize=1)
def _deepeval() -> Any:
    from agility_mlflow._env import apply_offline_defaults

    apply_offline_defaults()
    try:
        # DeepEval prints a notice about its read-only mode on import: stdout belongs to our output.
        with contextlib.redirect_stdout(io.StringIO()):
            import deepeval.metrics
            import deepeval.test_case
    except ImportError as exc:
        raise InputError(f"DeepEval metrics need the quality extra: pip install 'agility-mlflow[quality]' ({exc})") from None
    return deepeval


def deepeval_model(judge: Any) -> Any:
    """DeepEval's model interface over our judge."""
    return _model_class()(judge)


@functools.lru_cache(maxsize=1)
def _model_class() -> Callable[[Any], Any]:
    _deepeval()  # the offline switches before DeepEval's first import
    from deepeval.models import DeepEvalBaseLLM

    class _DeepEvalJudge(DeepEvalBaseLLM):
        def __init__(self, judge: Any) -> None:
            self.judge = judge
            super().__init__(judge.config.model_id)

        def load_model(self, *args: Any, **kwargs: Any) -> Any:
            return self.judge

        def generate(self, prompt: str, schema: Any = None, **kwargs: Any) -> Any:
            messages = [{"role": "user", "content": prompt}]
            if schema is None:
                return self.judge.complete(messages)
            return self.judge.structured(messages, schema.model_json_schema(), schema.model_validate)

        async def a_generate(self, prompt: str, schema: Any = None, **kwargs: Any) -> Any:
            import asyncio

            return await asyncio.to_thread(self.generate, prompt, schema)

        def get_model_name(self, *args: Any, **kwargs: Any) -> str:
            return self.judge.name

    return _DeepEvalJudge
