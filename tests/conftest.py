"""Shared fixtures: a real MLflow server on 127.0.0.1, isolated caches and tracking stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import MlflowServer, new_store


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own response cache and, unless it asks for a server, its own (migrated, empty) sqlite store."""
    import mlflow

    # First: forgetting a URI an earlier test set also unsets MLFLOW_TRACKING_URI (MLflow keeps the two in step).
    mlflow.set_tracking_uri(None)
    monkeypatch.setenv("AGILITY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_store(tmp_path / "mlflow.db"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    yield
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite store, shared by the session; yields its URL."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.fixture
def tracking(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this test at the shared server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


