"""No number computed on mixed data, no verdict the interval contradicts, nothing logged that was not measured.

One project against a real MLflow server, as a user walks it: two candidates (an OpenAI-protocol
stand-in that answers "I do not know.") and the replayed source run on golden v1; a reference is then
corrected (golden v2) and only candidate ``fixed`` is re-run; compare, register, check on golden v3
(one more reference and one question changed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from agility_mlflow.compare import compare
from agility_mlflow.dataset import load_dataset
from agility_mlflow.errors import InputError
from agility_mlflow.evaluation import run_project
from agility_mlflow.registry import check_model, register
from tests.helpers import GOLDEN_ROWS, run_cli, write_csv, write_project
from tests.openai_server import start_standin

ANSWER = "I do not know."


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    with start_standin(latency_s=0.0, answer=lambda request: ANSWER) as server:
        yield server.url


@pytest.fixture(scope="module")
def walked(mlflow_server: str, standin: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("trust")
    candidate = {"provider": "openai", "model_id": "standin", "base_url": standin, "params": {"max_tokens": 16}}
    overrides = {
        "experiment": "trust-flow",
        "candidates": [{"name": "fixed", **candidate}, {"name": "left", **candidate}],
        "metrics": ["token_f1", "exact_match"],
        "decision": {"primary": ["token_f1"]},
        "pricing": {"standin": {"input": 1.0, "output": 2.0}},
    }
    config = write_project(directory, **overrides)
    v1 = load_dataset(directory / "golden.csv").digest
    first = {s.name: s.run_id for s in run_project(config, tracking_uri=mlflow_server, progress=False)}
    corrected = [dict(row) for row in GOLDEN_ROWS]
    corrected[1]["answer_ground_truth"] = "$212.50 million"  # an SME corrects one reference
    write_csv(directory / "golden.csv", corrected)
    v2 = load_dataset(directory / "golden.csv").digest
    second = {s.name: s.run_id for s in run_project(config, tracking_uri=mlflow_server, candidates=["fixed"], progress=False)}
    result = compare(config, tracking_uri=mlflow_server, output=directory / "report")
    return {"config": config, "dir": directory, "v1": v1, "v2": v2, "first": first, "second": second, "result": result,
            "server": mlflow_server, "client": MlflowClient(mlflow_server)}


def test_a_run_on_another_dataset_is_stale_never_decided(walked: dict[str, Any]) -> None:
    result = walked["result"]
    assert result.source.run_id == walked["second"]["source"]
    assert [(v.run.name, v.outcome) for v in result.verdicts] == [("fixed/qa", "fail")]
    (stale,) = result.stale
    assert (stale.run.run_id, stale.outcome, stale.comparisons) == (walked["first"]["left"], "stale", ())
    assert stale.reasons == (f"scored on dataset {walked['v1']}, the source run on {walked['v2']}: re-run it on the current dataset to compare it",)
    assert result.winner is None
    verdicts = json.loads((walked["dir"] / "report" / "verdicts.json").read_text())
    assert [(v["name"], v["outcome"]) for v in verdicts["verdicts"]] == [("fixed/qa", "fail"), ("left/qa", "stale")]
    markdown = (walked["dir"] / "report" / "report.md").read_text()
    assert f"| left/qa | candidate | stale | scored on dataset {walked['v1']}, the source run on {walked['v2']}" in markdown
    run = walked["client"].get_run(result.run_id)
    assert (run.data.metrics["n_stale"], run.data.metrics["n_decided"], run.data.tags["agility.winner"]) == (1.0, 1.0, "none")


def test_a_loss_the_interval_shows_fails_on_few_pairs_and_reported_only_metrics_get_no_label(walked: dict[str, Any]) -> None:
    verdict = walked["result"].verdict("fixed/qa")
    f1 = verdict.comparison("token_f1")
    assert f1.n_paired == 3 < walked["result"].decision.min_samples
    assert f1.ci_high < -0.05 and (f1.outcome, verdict.needed_samples) == ("fail", None)
    assert verdict.reasons[0] == f"token_f1 {f1.difference:+.3f} [{f1.ci_low:.3f}, {f1.ci_high:.3f}] outside margin 0.05"
    em = verdict.comparison("exact_match")
    assert (em.primary, em.outcome) == (False, None)
    markdown = (walked["dir"] / "report" / "report.md").read_text()
    cell = f"{em.difference:+.3f} [{em.ci_low:.3f}, {em.ci_high:.3f}] n=3"
    assert f"| fixed/qa | {f1.difference:+.3f} [{f1.ci_low:.3f}, {f1.ci_high:.3f}] n=3 fail | {cell} |" in markdown


def test_the_replayed_source_logs_only_recorded_facts(walked: dict[str, Any]) -> None:
    client = walked["client"]
    source = client.get_run(walked["second"]["source"])
    assert not {"temperature", "top_p", "max_tokens", "stop", "seed"} & set(source.data.params)
    assert source.data.params["provider"] == "replay"
    assert client.get_run(walked["second"]["fixed"]).data.params["max_tokens"] == "16"  # a called model's settings stay
    mlflow.set_tracking_uri(walked["server"])
    traces = mlflow.search_traces(locations=[source.info.experiment_id], run_id=source.info.run_id, return_type="list")
    recorded = {row["sample_id"]: float(row["latency_source_llm"]) for row in GOLDEN_ROWS}
    durations = {t.data.spans[0].attributes["agility.sample_id"]: t.info.execution_duration for t in traces}
    assert durations == {sample_id: pytest.approx(latency * 1000, abs=1) for sample_id, latency in recorded.items()}


@pytest.fixture(scope="module")
def registered(walked: dict[str, Any]) -> dict[str, Any]:
    """The failing candidate, registered anyway as ``app.trust@champion`` with ``--force``."""
    forced = run_cli("register", str(walked["config"]), "--name", "app.trust", "--run-id", walked["second"]["fixed"], "--force",
                     env={"MLFLOW_TRACKING_URI": walked["server"]})
    assert forced.returncode == 0, forced.stderr[-2000:]
    return {"uri": "models:/app.trust@champion", "stderr": forced.stderr}


def test_registering_a_run_that_did_not_pass_needs_force_and_says_so(walked: dict[str, Any], registered: dict[str, Any]) -> None:
    fixed, left, superseded = walked["second"]["fixed"], walked["first"]["left"], walked["first"]["fixed"]
    comparison = walked["result"].run_id
    refusals = {
        fixed: f"--run-id {fixed}: its verdict is 'fail' in comparison {comparison}; pass --force to register it anyway",
        left: f"--run-id {left}: its verdict is 'stale' in comparison {comparison}; pass --force to register it anyway",
        # The re-run of its candidate replaced it: the comparison never decided it.
        superseded: f"--run-id {superseded}: it has no verdict (not decided by the latest comparison); pass --force to register it anyway",
    }
    for run_id, message in refusals.items():
        with pytest.raises(InputError) as refused:
            register(walked["config"], "app.refused", run_id=run_id, tracking_uri=walked["server"])
        assert str(refused.value) == message
    with pytest.raises(MlflowException):
        walked["client"].get_registered_model("app.refused")  # nothing was registered by the refusals

    warning = f"WARNING: registering run {fixed} although its verdict is 'fail' in comparison {comparison} (--force)"
    assert registered["stderr"].strip().splitlines()[0] == warning  # then MLflow's own notices
    version = walked["client"].get_model_version_by_alias("app.trust", "champion")
    assert "verdict: fail: token_f1 " in version.description
    assert version.description.endswith("; registered with --force although it did not pass")
    assert (version.tags["agility.verdict.outcome"], version.tags["agility.verdict.forced"]) == ("fail", "true")


def test_check_pairs_only_samples_unchanged_since_registration(walked: dict[str, Any], registered: dict[str, Any]) -> None:
    refreshed = [dict(row) for row in GOLDEN_ROWS]
    refreshed[1]["answer_ground_truth"] = "$212.50 million"  # as registered (golden v2)
    refreshed[0]["answer_ground_truth"] = "$1,577.0 million"  # a reference changed since
    refreshed[2]["question"] = "Was the company profitable in FY2023?"  # an input changed since
    path = write_csv(walked["dir"] / "golden-v3.csv", refreshed)
    mlflow.set_tracking_uri(walked["server"])
    result = check_model(registered["uri"], path)
    assert result.passed
    lines = result.reasons
    assert ("samples since registration: 1 unchanged, 2 changed (inputs or references), 0 new; "
            "only unchanged ones are paired with the registered run") in lines
    registered = float(walked["client"].get_model_version_by_alias("app.trust", "champion").tags["agility.score.token_f1"])
    assert f"token_f1 +0.000 [0.000, 0.000] on 1 samples paired with the registered run and 2 new or changed against its mean {registered:.3f}: within margin 0.05" in lines
    check_run = walked["client"].get_run(result.run_id)
    assert check_run.data.tags["agility.role"] == "check" and check_run.data.metrics["n_samples_changed"] == 2


def test_the_served_model_refuses_a_null_template_value(walked: dict[str, Any], registered: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    mlflow.set_tracking_uri(walked["server"])
    model = mlflow.pyfunc.load_model(registered["uri"])
    assert model.predict(pd.DataFrame([{"context": "Revenue FY2023: $1,577.0 million.", "question": "Revenue?"}])) == [ANSWER]
    client = TestClient(scoring_server.init(model))  # what `mlflow models serve` runs
    ok = client.post("/invocations", json={"dataframe_records": [{"context": "Revenue: $1.6B.", "question": "Revenue?"}]})
    assert ok.status_code == 200 and ok.json() == {"predictions": [ANSWER]}
    null = client.post("/invocations", json={"dataframe_records": [{"context": "Revenue: $1.6B.", "question": None}]})
    assert null.status_code == 400
    assert null.json()["message"].endswith("Error: model_input row 1: template variable 'question' is null or missing (give it a value)")
    absent = client.post("/invocations", json={"dataframe_records": [{"context": "Revenue: $1.6B."}]})
    assert absent.status_code == 400 and absent.json()["message"].endswith("Model is missing inputs ['question'].")
