"""The winner into the MLflow Model Registry, and a later check that it still holds.

``register`` turns the comparison's winner (provider, model id, prompt version, inference
parameters) into a models-from-code pyfunc model under a name distinct from any prompt, with an
alias (default ``champion``) on the model version and on the prompt version. ``check_model``
re-evaluates it on a refreshed dataset against ``--min`` thresholds and its registered scores.

Example:
    >>> import mlflow
    >>> registration = register("projects/financial-qa/agility.yaml", "app.fin-qa")  # doctest: +SKIP
    >>> model = mlflow.pyfunc.load_model(registration.alias_uri)  # doctest: +SKIP
    >>> model.predict(pd.DataFrame([{"context": "...", "question": "..."}]))  # doctest: +SKIP
    ['Revenue was $1,577.0 million.']
"""

from agility_mlflow.registry._check import (
    CheckResult,
    RegisteredScores,
    check_model,
    hold_to_scores,
    parse_columns,
    parse_minimums,
)
from agility_mlflow.registry._register import Registration, register

__all__ = [
    "CheckResult",
    "RegisteredScores",
    "Registration",
    "check_model",
    "hold_to_scores",
    "parse_columns",
    "parse_minimums",
    "register",
]
