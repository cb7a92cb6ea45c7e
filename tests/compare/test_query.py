"""With a thousand runs behind a real `mlflow server`, the query is paginated and filtered on the server."""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.compare import candidate_runs
from tests.helpers import MlflowServer

N_RUNS = 1000


@pytest.fixture(scope="module")
def crowded_server(shared_server: MlflowServer) -> tuple[str, str]:
    """The shared server, with an experiment of a thousand runs."""
    return shared_server.url, _fill(shared_server.store_uri, shared_server.root / "artifacts")


def _fill(store_uri: str, artifacts: Path) -> str:
    """A thousand finished or failed runs, written in one transaction into the server's own store: through the server,
    or one store call at a time, filling it would take minutes."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(store_uri, str(artifacts))
    experiment_id = store.create_experiment(f"crowded-{uuid.uuid4().hex[:8]}")
    now = int(time.time() * 1000)
    with store.ManagedSessionMaker(read_only=False) as session:
        for i in range(N_RUNS):
            run_id = uuid.uuid4().hex
            session.add(SqlRun(run_uuid=run_id, name=f"r{i}", source_type="LOCAL", source_name="", entry_point_name="", user_id="test",
                               status="FINISHED" if i % 10 else "FAILED", start_time=now, end_time=now, source_version="",
                               lifecycle_stage="active", artifact_uri=f"{artifacts.as_uri()}/{run_id}/artifacts", experiment_id=int(experiment_id)))
            role = "candidate" if i % 2 == 0 else "trial"
            session.add_all([SqlTag(key="mlflow.runName", value=f"r{i}", run_uuid=run_id), SqlTag(key="agility.role", value=role, run_uuid=run_id),
                             SqlTag(key="i", value=str(i), run_uuid=run_id)])
            score = (i * 7919 % N_RUNS) / N_RUNS
            session.add_all([table(key="token_f1", value=score, timestamp=now, step=0, is_nan=False, run_uuid=run_id)
                             for table in (SqlMetric, SqlLatestMetric)])
    store.engine.dispose()
    return experiment_id


class CountingClient(MlflowClient):
    """Records every search request: what was asked of the server and how many runs came back."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.requests: list[dict] = []

    def search_runs(self, *args, **kwargs):  # type: ignore[override]
        page = super().search_runs(*args, **kwargs)
        self.requests.append({**kwargs, "returned": len(page)})
        return page


def test_every_finished_run_arrives_in_pages_best_first(crowded_server: tuple[str, str]) -> None:
    url, experiment_id = crowded_server
    client = CountingClient(url)
    runs = candidate_runs(experiment_id, roles=["candidate"], order_metric="token_f1", higher_is_better=True, client=client)
    finished_candidates = [i for i in range(0, N_RUNS, 2) if i % 10]
    assert len(runs) == len(finished_candidates) == 400
    scores = [r.metrics["token_f1"] for r in runs]
    assert scores == sorted(scores, reverse=True)  # ordered by the server
    assert len(client.requests) == math.ceil(400 / 500) == 1 or len(client.requests) == 2  # one page, maybe an empty tail
    assert all("agility.role" in r["filter_string"] and "FINISHED" in r["filter_string"] for r in client.requests)
    assert sum(r["returned"] for r in client.requests) == 400  # nothing filtered on this side


def test_small_pages_and_a_top_k_stay_on_the_server(crowded_server: tuple[str, str]) -> None:
    url, experiment_id = crowded_server
    client = CountingClient(url)
    from agility_mlflow.compare import finished_with_role, iter_runs

    runs = list(iter_runs([experiment_id], filter_string=finished_with_role("trial"), page_size=100, client=client))
    assert len(runs) == 500 and [r["max_results"] for r in client.requests][:5] == [100] * 5
    assert len(client.requests) in (5, 6)  # 5 full pages, and possibly an empty last page
    client.requests.clear()
    best = candidate_runs(experiment_id, roles=["candidate", "trial"], order_metric="token_f1", higher_is_better=True, limit=10, client=client)
    assert len(best) == 10 and len(client.requests) == 2 and all(r["max_results"] == 10 for r in client.requests)
    assert [r.metrics["token_f1"] for r in best] == sorted((r.metrics["token_f1"] for r in best), reverse=True)
