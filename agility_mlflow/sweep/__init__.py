"""Optuna search over prompt variants, models and inference parameters, every trial an MLflow run.

Example:
    >>> from agility_mlflow.sweep import run_sweep
    >>> result = run_sweep("projects/financial-qa/agility.yaml", n_trials=5)  # doctest: +SKIP
"""

from agility_mlflow.sweep._objectives import Constraint, Objective, parse_constraint, parse_objective
from agility_mlflow.sweep._sweep import SweepResult, run_sweep

__all__ = ["Constraint", "Objective", "SweepResult", "parse_constraint", "parse_objective", "run_sweep"]
