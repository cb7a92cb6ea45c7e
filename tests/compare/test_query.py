"""With a thousand runs behind a real `mlflow server`, the query is paginated and filtered on the server."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from agility_mlflow.compare import candidate_runs
from tests.helpers import MlflowServer

N_RUNS = 1000


@pytest.fixture(scope="module")
def crowded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    server = MlflowServer(tmp_path_factory.mktemp("crowded"))
    store = MlflowClient(server.store_uri)  # filled directly: through the server it would take minutes
    experiment_id = store.create_experiment("crowded")
    now = int(time.time() * 1000)
    for i in range(N_RUNS):
        role = "candidate" if i % 2 == 0 else "trial"
        run = store.create_run(experiment_id, run_name=f"r{i}", tags={"agility.role": role})
        store.log_batch(run.info.run_id, metrics=[Metric("token_f1", (i * 7919 % N_RUNS) / N_RUNS, now, 0)], tags=[RunTag("i", str(i))])
        store.set_terminated(run.info.run_id, "FINISHED" if i % 10 else "FAILED")
    with server as url:
        yield url, experiment_id


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
    from agility_mlflow.compare import iter_runs
    from agility_mlflow.compare._query import finished_with_role

    runs = list(iter_runs([experiment_id], filter_string=finished_with_role("trial"), page_size=100, client=client))
    assert len(runs) == 500 and [r["max_results"] for r in client.requests][:5] == [100] * 5
    assert len(client.requests) in (5, 6)  # 5 full pages, and possibly an empty last page
    client.requests.clear()
    best = candidate_runs(experiment_id, roles=["candidate", "trial"], order_metric="token_f1", higher_is_better=True, limit=10, client=client)
    assert len(best) == 10 and len(client.requests) == 2 and all(r["max_results"] == 10 for r in client.requests)
    assert [r.metrics["token_f1"] for r in best] == sorted((r.metrics["token_f1"] for r in best), reverse=True)
