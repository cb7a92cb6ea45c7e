"""agility_mlflow: move a generative-AI application between LLMs and prove it, with numbers, in MLflow.

Every prompt version x model x inference configuration becomes one MLflow run with quality,
latency and cost metrics, beside a ``source`` run built from the production model's recorded
answers.

Example:
    >>> import agility_mlflow
    >>> summaries = agility_mlflow.run_project("projects/financial-qa/agility.yaml", limit=5)  # doctest: +SKIP
"""

from agility_mlflow._env import apply_offline_defaults

apply_offline_defaults()

from agility_mlflow.errors import AgilityError, InputError, ProviderError, RetryableError  # noqa: E402

_LAZY = {
    "Config": "agility_mlflow.config",
    "load_config": "agility_mlflow.config",
    "GoldenDataset": "agility_mlflow.dataset",
    "load_dataset": "agility_mlflow.dataset",
    "RunSummary": "agility_mlflow.evaluation",
    "prepare": "agility_mlflow.evaluation",
    "run_project": "agility_mlflow.evaluation",
}


def __getattr__(name: str) -> object:
    # Everything but the errors loads on first use (pydantic's models alone take ~0.3 s), so
    # `import agility_mlflow` and `agility --help` stay fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agility_mlflow' has no attribute {name!r}")


__all__ = [
    "AgilityError",
    "Config",
    "GoldenDataset",
    "InputError",
    "ProviderError",
    "RetryableError",
    "RunSummary",
    "load_config",
    "load_dataset",
    "prepare",
    "run_project",
]
