"""`agility run` end to end against a real MLflow server, read back with MlflowClient."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from agility_mlflow.backends.local import LocalBackend
from agility_mlflow.cache import ResponseCache
from agility_mlflow.config import RunSettings
from agility_mlflow.dataset import load_dataset
from agility_mlflow.evaluation import run_project
from agility_mlflow.pricing import lookup_price
from agility_mlflow.runner import Runner
from tests.helpers import run_cli, write_project

LOCAL = {"name": "local", "provider": "local", "model_id": "smollm2-135m-instruct", "params": {"max_tokens": 12}}


def _runs(client: MlflowClient, experiment: str = "test-migration") -> dict[str, mlflow.entities.Run]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return {r.info.run_name: r for r in runs}


def _table(client: MlflowClient, run_id: str, tmp_path: Path) -> dict:
    path = client.download_artifacts(run_id, "eval_results.json", str(tmp_path))
    return json.loads(Path(path).read_text())


def test_run_logs_the_mlflow_contract(tracking: str, tmp_path: Path) -> None:
    experiment = f"contract-{tmp_path.name}"  # the server is shared: other tests' runs stay out of this experiment
    config = write_project(tmp_path, candidates=[LOCAL], experiment=experiment)
    result = run_cli("run", str(config), "--tracking-uri", tracking)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(tracking)
    runs = _runs(client, experiment)
    assert set(runs) == {"source", "local/qa"}
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    for run in runs.values():
        assert run.info.run_id in result.stdout

    source = runs["source"]
    tags, params, metrics = source.data.tags, source.data.params, source.data.metrics
    assert tags["agility.role"] == "source" and tags["agility.candidate"] == "source"
    assert re.fullmatch(r"prompts:/qa/\d+", tags["agility.prompt"])
    assert "qa" in tags["mlflow.linkedPrompts"]
    assert params["provider"] == "replay" and params["model_id"] == "gpt-4o-mini"
    assert params["dataset_digest"] == load_dataset(tmp_path / "golden.csv").digest
    assert not {"temperature", "top_p", "max_tokens"} & set(params)  # replayed: nobody recorded the source's settings
    # Replayed latency metrics are the dataset's own numbers.
    latencies = [1.2, 2.0, 0.7]
    assert metrics["latency_mean_s"] == pytest.approx(np.mean(latencies))
    assert metrics["latency_p50_s"] == pytest.approx(1.2)
    assert metrics["latency_p95_s"] == pytest.approx(np.percentile(latencies, 95))
    assert metrics["ttft_p50_s"] == pytest.approx(0.3)
    assert metrics["input_tokens_mean"] == pytest.approx(120)
    assert metrics["output_tokens_mean"] == pytest.approx(6)
    assert metrics["n_samples"] == 3 and metrics["n_errors"] == 0
    price = lookup_price("replay", "gpt-4o-mini", {})
    expected_cost = sum((i * price.input_per_mtok + o * price.output_per_mtok) / 1e6 for i, o in [(120, 9), (130, 8), (110, 1)])
    assert metrics["cost_usd_total"] == pytest.approx(expected_cost)
    assert metrics["cost_usd_per_sample"] == pytest.approx(expected_cost / 3)
    assert metrics["exact_match"] == pytest.approx(1 / 3)  # only "Yes" == "Yes"
    assert metrics["numeric_match"] == pytest.approx(0.5)  # 1577 matches, 210 != 212.5, q3 has no number

    table = _table(client, source.info.run_id, tmp_path / "a")
    assert table["columns"][:8] == ["sample_id", "output", "reference", "latency_s", "ttft_s", "input_tokens", "output_tokens", "cost_usd"]
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["sample_id"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[1]["output"] == "Net income was $210 million." and rows[1]["numeric_match"] == 0.0
    assert rows[2]["numeric_match"] is None and rows[0]["error"] is None
    artifacts = {a.path for a in client.list_artifacts(source.info.run_id)}
    assert {"eval_results.json", "config.yaml"} <= artifacts

    candidate = runs["local/qa"]
    c_metrics, c_params = candidate.data.metrics, candidate.data.params
    assert candidate.data.tags["agility.role"] == "candidate"
    assert c_params["provider"] == "local" and c_params["max_tokens"] == "12"
    assert c_params["pricing_source"].startswith("local")
    assert c_metrics["cost_usd_total"] == 0.0
    assert c_metrics["n_samples"] == 3 and c_metrics["n_errors"] == 0
    assert 0 < c_metrics["output_tokens_mean"] <= 12
    assert c_metrics["input_tokens_mean"] > 20
    assert 0 < c_metrics["ttft_p50_s"] <= c_metrics["latency_p50_s"]

    mlflow.set_tracking_uri(tracking)
    traces = mlflow.search_traces(
        locations=[candidate.info.experiment_id], run_id=candidate.info.run_id, return_type="list"
    )
    assert len(traces) == 3
    usage = traces[0].info.token_usage
    assert usage["output_tokens"] > 0


def test_cached_rerun_makes_no_model_call_and_logs_equal_metrics(
    tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_project(tmp_path, candidates=[LOCAL])
    first = {s.name: s for s in run_project(config, tracking_uri=tracking)}
    calls = []
    real_generate = LocalBackend.generate
    monkeypatch.setattr(LocalBackend, "generate", lambda self, *a, **k: calls.append(1) or real_generate(self, *a, **k))
    runner = Runner(RunSettings(), ResponseCache(), progress=False)
    second = {s.name: s for s in run_project(config, tracking_uri=tracking, runner=runner)}
    assert calls == []
    assert runner.stats.cache_hits == 3
    assert second["local"].metrics["n_cache_hits"] == 3
    for name in ("exact_match", "token_f1", "latency_p50_s", "output_tokens_mean", "cost_usd_total"):
        assert second["local"].metrics[name] == first["local"].metrics[name]
    run = MlflowClient(tracking).get_run(second["local"].run_id)
    assert run.data.metrics["n_cache_hits"] == 3
    assert run.data.metrics["token_f1"] == first["local"].metrics["token_f1"]


def test_prompt_version_changes_only_with_the_text(tracking: str, tmp_path: Path) -> None:
    name = f"qa-{tmp_path.name}"
    config = write_project(tmp_path, prompts=[{"name": name, "template": "{{context}} {{question}}"}])
    uri_first = run_project(config, tracking_uri=tracking)[0].prompt_uri
    uri_same = run_project(config, tracking_uri=tracking)[0].prompt_uri
    assert uri_first == uri_same
    changed = write_project(tmp_path, prompts=[{"name": name, "template": "Q: {{question}}"}])
    uri_changed = run_project(changed, tracking_uri=tracking)[0].prompt_uri
    assert uri_changed != uri_first
    assert int(uri_changed.rsplit("/", 1)[1]) == int(uri_first.rsplit("/", 1)[1]) + 1
    assert MlflowClient(tracking).get_prompt_version(name, uri_changed.rsplit("/", 1)[1]).template == "Q: {{question}}"
    # Switching back to the first text reuses its version instead of piling up copies.
    config = write_project(tmp_path, prompts=[{"name": name, "template": "{{context}} {{question}}"}])
    assert run_project(config, tracking_uri=tracking)[0].prompt_uri == uri_first


@pytest.mark.parametrize(
    ("overrides", "rows_edit", "expected"),
    [
        ({"metrics": ["exact_mtch"]}, None, "error: unknown metric 'exact_mtch' (known: "),
        ({}, {"answer_ground_truth": ""}, "error: golden.csv, row 2 (sample_id 'q2'), column 'answer_ground_truth': missing value"),
        ({"prompts": [{"name": "qa", "template": "{{question}"}]}, None, "error: prompt 'qa' (inline), line 1: malformed placeholder"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_no_run(
    tracking: str, tmp_path: Path, overrides: dict, rows_edit: dict | None, expected: str
) -> None:
    from tests.helpers import GOLDEN_ROWS

    rows = [dict(r) for r in GOLDEN_ROWS]
    if rows_edit:
        rows[1].update(rows_edit)
    config = write_project(tmp_path, rows=rows, experiment=f"bad-{tmp_path.name}", **overrides)
    result = run_cli("run", str(config), "--tracking-uri", tracking)
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert MlflowClient(tracking).get_experiment_by_name(f"bad-{tmp_path.name}") is None
