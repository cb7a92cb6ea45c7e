"""The registered model's code (MLflow models-from-code): a prompt, a model and its inference parameters.

``predict`` takes a DataFrame with one column per template variable and returns one answer per row,
through the same backend ``agility run`` used. The configuration (``model_config``) holds the provider,
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
            raise ValueError(f"model_input lacks the template variable(s) {', '.join(missing)}")
        return [self.backend.generate(self.template.render(row), inference).text for row in model_input.to_dict("records")]


mlflow.models.set_model(AgilityModel())
