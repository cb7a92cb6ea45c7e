"""The registered model's code (MLflow models-from-code): a prompt, a model and its inference parameters.

``predict`` takes a DataFrame with one column per template variable and returns one answer per row,
through the same backend ``agility run`` used. A ``steps:`` pipeline runs whole: its fixed-model steps
call their models, and a replayed step's output is an input column (see ``_served``). A missing or null value is refused (a 400 when
served), as ``agility run`` refuses it: it would otherwise reach the model as the text ``None``. The configuration (``model_config``) holds the provider,
model id, endpoint options, the prompt text and version, and the parameters; never a key (only the
name of the variable that holds it).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel


class AgilityModel(PythonModel):
    """A prompt x model x inference configuration as an MLflow pyfunc model."""

    def load_context(self, context: Any) -> None:
        from agility_mlflow.backends import create_backend
        from agility_mlflow.config import ModelConfig, RunSettings
        from agility_mlflow.pipeline import served_inputs
        from agility_mlflow.registry._served import planned_steps

        config = dict(context.model_config)
        self.steps = planned_steps(config)
        self.inputs = served_inputs(self.steps)
        self.model = ModelConfig.model_validate(config["model"])
        if self.model.mode == "batch":  # evaluated through the batch engine; served one request at a time, on demand
            self.model = self.model.model_copy(update={"mode": "on_demand", "s3_uri": None, "role_arn": None})
        self.backend = create_backend(self.model, RunSettings())
        self.fixed = {step.name: create_backend(step.model, RunSettings()) for step in self.steps if step.model is not None}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        from agility_mlflow.pipeline import serve_steps

        missing = sorted(set(self.inputs) - set(model_input.columns))
        if missing:
            raise _bad_input(f"model_input lacks the template variable(s) {', '.join(missing)}")
        rows = model_input.to_dict("records")
        for i, row in enumerate(rows, start=1):
            empty = [name for name in self.inputs if _is_missing(row[name])]
            if empty:
                raise _bad_input(f"model_input row {i}: template variable '{empty[0]}' is null or missing (give it a value)")
        inference = self.model.params.as_dict()
        return [serve_steps(self.steps, self.backend, inference, self.fixed, row) for row in rows]


def _is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA: what JSON ``null`` and an absent key become in a DataFrame."""
    return value is None or (not isinstance(value, (str, list, dict)) and bool(pd.isna(value)))


def _bad_input(message: str) -> Exception:
    # An MlflowException with this code is a 400 from `mlflow models serve`, not a 500.
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


mlflow.models.set_model(AgilityModel())
