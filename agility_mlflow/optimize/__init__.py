"""Reflective prompt evolution (GEPA) on a candidate model, decided on a held-out split.

Example:
    >>> from agility_mlflow.optimize import optimize_prompt
    >>> result = optimize_prompt("projects/financial-qa/agility.yaml", "fin-qa", "local-smollm")  # doctest: +SKIP
    >>> result.best_prompt_uri, result.test_run_id  # doctest: +SKIP
    ('prompts:/fin-qa/4', '8f2c...')
"""

from agility_mlflow.optimize._objective import SampleObjective, parse_sample_objective
from agility_mlflow.optimize._optimize import OptimizationResult, optimize_prompt
from agility_mlflow.optimize._reflection import parse_proposal
from agility_mlflow.optimize._split import Split, split_samples
from agility_mlflow.vocabulary import OPTIMIZED_FROM

__all__ = [
    "OPTIMIZED_FROM",
    "OptimizationResult",
    "SampleObjective",
    "Split",
    "optimize_prompt",
    "parse_proposal",
    "parse_sample_objective",
    "split_samples",
]
