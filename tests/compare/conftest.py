"""The runs with known per-sample results that the comparison and report tests share, compared once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mlflow import MlflowClient

from agility_mlflow.compare import compare
from tests.compare.factory import (
    BETTER_EM,
    BETTER_F1,
    FEW_F1,
    IDS,
    SCRIPT,
    SOURCE_EM,
    SOURCE_F1,
    SOURCE_LATENCY,
    WORSE_EM,
    WORSE_F1,
    N,
    _golden_rows,
    log_eval_run,
    sample_rows,
)
from tests.helpers import write_project


@pytest.fixture(scope="package")
def compared(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The runs logged once, compared once through the Python API; shared by the tests below."""
    directory = tmp_path_factory.mktemp("compare")
    experiment = f"compare-{uuid.uuid4().hex[:8]}"
    config = write_project(
        directory, rows=_golden_rows(), experiment=experiment, metrics=["exact_match", "token_f1"],
        decision={"max_latency_p95_s": 2.0},
    )
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(experiment)
    scores = lambda em, f1: {"exact_match": em, "token_f1": f1}  # noqa: E731
    ids = {
        "source": log_eval_run(client, experiment_id, "source", "source", sample_rows(
            IDS, scores=scores(SOURCE_EM, SOURCE_F1), latency=SOURCE_LATENCY, cost=0.001)),
        "better/qa": log_eval_run(client, experiment_id, "better/qa", "candidate", sample_rows(
            IDS, scores=scores(BETTER_EM, BETTER_F1), latency=[x - 0.1 for x in SOURCE_LATENCY], cost=0.0004,
            outputs={"s00": SCRIPT})),
        "worse/qa": log_eval_run(client, experiment_id, "worse/qa", "candidate", sample_rows(
            IDS, scores=scores(WORSE_EM, WORSE_F1), latency=SOURCE_LATENCY, cost=0.0002)),
        "few/qa": log_eval_run(client, experiment_id, "few/qa", "candidate", sample_rows(
            IDS[:10], scores=scores(SOURCE_EM[:10], FEW_F1), latency=SOURCE_LATENCY[:10], cost=0.0005)),
        "slow/qa": log_eval_run(client, experiment_id, "slow/qa", "candidate", sample_rows(
            IDS, scores=scores(SOURCE_EM, SOURCE_F1), latency=[3.0] * N, cost=0.0001)),
        "unfinished/qa": log_eval_run(client, experiment_id, "unfinished/qa", "candidate", sample_rows(
            IDS, scores=scores([1.0] * N, [1.0] * N), latency=SOURCE_LATENCY, cost=0.0), status=None),
    }
    output = directory / "report"
    result = compare(config, tracking_uri=mlflow_server, output=output)
    return {"result": result, "ids": ids, "config": config, "output": output, "client": client,
            "experiment_id": experiment_id, "server": mlflow_server}
