"""Shared fixtures: a real MLflow server on 127.0.0.1, isolated caches and tracking stores."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
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
    # The CLI, run in-process, gives the package logger its own handler and stops propagation: undo that
    # after each test, or later tests' caplog sees nothing.
    package_logger = logging.getLogger("agility_mlflow")
    saved = (package_logger.handlers[:], package_logger.level, package_logger.propagate)
    yield
    package_logger.handlers[:], package_logger.level, package_logger.propagate = saved
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite store, shared by the session (each test uses experiments of its own)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    with server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(shared_server: MlflowServer) -> str:
    """The URL of the shared ``mlflow server``."""
    return shared_server.url


@pytest.fixture
def tracking(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this test at the shared server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server




POSTGRES_ADMIN = "postgresql://root@127.0.0.1:5432/test"


@pytest.fixture
def new_postgres_database() -> Iterator[Callable[[], str]]:
    """Makes new, empty PostgreSQL databases on 127.0.0.1:5432 (``.ci/run`` starts the server); all dropped afterwards.

    Never skipped: without PostgreSQL the test fails, so CI cannot pass with the team setup untested.
    """
    import psycopg

    names: list[str] = []

    def create() -> str:
        name = f"agility_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        names.append(name)
        return f"postgresql+psycopg://root@127.0.0.1:5432/{name}"

    yield create
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(new_postgres_database: Callable[[], str]) -> str:
    """One new, empty PostgreSQL database for this test."""
    return new_postgres_database()
