"""The registered model's code (MLflow models-from-code): a prompt, a model and its inference parameters.

``predict`` takes a DataFrame with one column per template variable and returns one answer per row,
through the same backend ``agility run`` used. A missing or null value is refused (a 400 when
served), as ``agility run`` refuses it: it would otherwise reach the model as the text ``None``. The configuration (``model_config``) holds the provider,
model id, endpoint options, the prompt text and version, and the parameters; never a key (only the
name of the variable that holds it).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class AgilityModel(PythonModel):
    """A prompt x model x inference configuration as an MLflow pyfunc model."""

    def load_context(self, context: Any) -> None:
        from agility_mlflow.backends import create_backend
        from agility_mlflow.config import ModelConfig, RunSettings
        from agility_mlflow.prompts import Template

        config = dict(context.model_config)
        self.template = Template.from_text(config["prompt_name"], config["template"], config.get("system"), origin=config["prompt_uri"],
                                          format=config.get("format", "mustache"))
        self.model = ModelConfig.model_validate(config["model"])
        self.backend = create_backend(self.model, RunSettings())

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        inference = self.model.params.as_dict()
        missing = sorted(self.template.variables - set(model_input.columns))
        if missing:
            raise _bad_input(f"model_input lacks the template variable(s) {', '.join(missing)}")
        rows = model_input.to_dict("records")
        for i, row in enumerate(rows, start=1):
            empty = sorted(name for name in self.template.variables if _is_missing(row[name]))
            if empty:
                raise _bad_input(f"model_input row {i}: template variable '{empty[0]}' is null or missing (give it a value)")
        return [self.backend.generate(self.template.render(row), inference).text for row in rows]


def _is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA: what JSON ``null`` and an absent key become in a DataFrame."""
    return value is None or (not isinstance(value, (str, list, dict)) and bool(pd.isna(value)))


def _bad_input(message: str) -> Exception:
    # An MlflowException with this code is a 400 from `mlflow models serve`, not a 500.
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


mlflow.models.set_model(AgilityModel())
