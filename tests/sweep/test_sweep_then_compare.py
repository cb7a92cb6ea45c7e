"""Sweep, then compare, with nothing in between, on a real MLflow server and the real local model.

The sweep logs the source run (or reuses an identical one), takes ``--limit``, names each trial run by
its configuration, computes parameter importances only over parameters that vary, and puts each
configuration once on the Pareto front.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from agility_mlflow.cli import main
from agility_mlflow.sweep import _report, parse_objective
from tests.helpers import GOLDEN_ROWS, write_project
from tests.openai_server import start_standin

LOCAL = {"name": "local", "provider": "local", "model_id": "smollm2-135m-instruct", "params": {"max_tokens": 4}}
PROMPTS = [
    {"name": "qa", "template": "Context: {{context}}\nQuestion: {{question}}"},
    {"name": "qa-terse", "template": "{{context}}\n{{question}} Reply with the figure only."},
]


def test_sweep_then_compare_just_works(tracking: str, tmp_path: Path) -> None:
    experiment = f"sweep-compare-{uuid.uuid4().hex[:8]}"
    # A grid of 4: two prompts x two max_tokens; one candidate, one temperature, one instruction do not vary.
    sweep = {"sampler": "grid", "params": {"max_tokens": {"choices": [2, 4]}, "temperature": {"choices": [0.0]}},
             "objective": "latency_mean_s", "slices": 1, "n_trials": 4}
    config = write_project(tmp_path, experiment=experiment, candidates=[LOCAL], prompts=PROMPTS, sweep=sweep,
                           decision={"min_samples": 2, "primary": ["token_f1"]})
    args = ["sweep", str(config), "--tracking-uri", tracking, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--limit", "2"]
    swept = CliRunner().invoke(main, args)
    assert swept.exit_code == 0, swept.stderr[-3000:]

    client = MlflowClient(tracking)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (source,) = client.search_runs([experiment_id], "tags.`agility.role` = 'source'")
    assert source.info.status == "FINISHED" and source.data.metrics["n_samples"] == 2  # --limit 2
    assert f"source run {source.info.run_id}" in swept.stdout
    trials = client.search_runs([experiment_id], "tags.`agility.role` = 'trial'")
    assert len(trials) == 4 and all(t.data.metrics["n_samples"] == 2 for t in trials)
    for trial in trials:
        prompt, version = re.fullmatch(r"prompts:/(.+)/(\d+)", trial.data.tags["agility.prompt"]).groups()
        expected = f"local/{prompt} v{version} max_tokens={trial.data.params['max_tokens']} (trial {trial.data.tags['agility.trial']})"
        assert trial.info.run_name == expected
    assert {t.info.run_name.split(" (trial")[0].split(" v")[0] + " " + t.data.params["max_tokens"] for t in trials} == {
        "local/qa 2", "local/qa 4", "local/qa-terse 2", "local/qa-terse 4"}

    study = client.search_runs([experiment_id], "tags.`agility.role` = 'study'")[0]
    importances = {k: v for k, v in study.data.metrics.items() if k.startswith("param_importance.")}
    assert set(importances) == {"param_importance.prompt", "param_importance.max_tokens"}  # not candidate, instruction, temperature
    assert sum(importances.values()) == pytest.approx(1.0)
    assert "plots/param_importances.png" in {a.path for a in client.list_artifacts(study.info.run_id, "plots")}

    compared = CliRunner().invoke(main, ["compare", str(config), "--tracking-uri", tracking, "--output", str(tmp_path / "report")])
    assert compared.exit_code == 0, compared.stderr[-3000:]
    assert f"source: source (run {source.info.run_id})" in compared.stdout
    for trial in trials:
        assert trial.info.run_name in compared.stdout  # compare names trials by their configuration

    again = CliRunner().invoke(main, args)  # the study is complete; the identical source run is reused, not logged again
    assert again.exit_code == 0, again.stderr[-3000:]
    assert [r.info.run_id for r in client.search_runs([experiment_id], "tags.`agility.role` = 'source'")] == [source.info.run_id]


def test_a_configuration_tried_twice_is_once_on_the_pareto_front(tracking: str) -> None:
    client = MlflowClient(tracking)
    experiment_id = client.create_experiment(f"pareto-{uuid.uuid4().hex[:8]}")
    parent = client.create_run(experiment_id, run_name="study").info.run_id
    study = optuna.create_study(directions=["maximize", "minimize"])
    distributions = {"prompt": optuna.distributions.CategoricalDistribution(["qa", "qa-terse"]),
                     "max_tokens": optuna.distributions.CategoricalDistribution([2, 4])}
    tried = [({"prompt": "qa", "max_tokens": 4}, [0.5, 0.002]),
             ({"prompt": "qa", "max_tokens": 4}, [0.5, 0.002]),  # the sampler proposed the same configuration again
             ({"prompt": "qa-terse", "max_tokens": 2}, [0.3, 0.001]),
             ({"prompt": "qa-terse", "max_tokens": 4}, [0.2, 0.003])]  # dominated
    run_ids = []
    for params, values in tried:
        run_ids.append(client.create_run(experiment_id, tags={"mlflow.parentRunId": parent}).info.run_id)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, values=values,
                                                  user_attrs={"mlflow_run_id": run_ids[-1]}))
    best = _report.summarize(study, parse_objective(["token_f1", "cost_usd_per_sample"], ["token_f1"]), parent)
    assert [t.number for t in best] == [0, 2]
    assert [client.get_run(r).data.tags["agility.best"] for r in run_ids] == ["true", "false", "true", "false"]
    assert client.get_run(parent).data.tags["agility.best_run_ids"] == ",".join(sorted([run_ids[0], run_ids[2]]))


def test_a_multi_objective_nsga2_sweep_with_constraints_end_to_end(tracking: str, tmp_path: Path) -> None:
    """NSGA-II over two objectives with two constraints, one of which only some trials meet: the front is the feasible trials'.

    No trial is pruned (Optuna prunes single-objective studies only). A stand-in model answers right with
    ``max_tokens: 4`` and wrongly with 2, so ``token_f1 >= 0.5`` holds for one configuration and not the other.
    """
    experiment = f"nsga2-{uuid.uuid4().hex[:8]}"
    truth = {row["question"]: row["answer_ground_truth"] for row in GOLDEN_ROWS}

    def answer(request: dict) -> str:
        prompt = request["messages"][-1]["content"]
        return next(a for q, a in truth.items() if q in prompt) if request["max_tokens"] == 4 else "unknown"

    sweep = {"sampler": "nsga2", "seed": 1, "params": {"max_tokens": {"choices": [2, 4]}}, "objective": ["token_f1", "latency_mean_s"],
             "constraints": ["token_f1 >= source - 1.0", "token_f1 >= 0.5"], "slices": 2, "n_trials": 4}
    with start_standin(latency_s=0.0, answer=answer) as server:
        served = {"name": "served", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": server.url, "stream": False}
        config = write_project(tmp_path, experiment=experiment, candidates=[served], prompts=PROMPTS[:1], sweep=sweep)
        swept = CliRunner().invoke(main, ["sweep", str(config), "--tracking-uri", tracking, "--storage", f"sqlite:///{tmp_path / 'o.db'}"])
    assert swept.exit_code == 0, swept.stderr[-3000:]
    client = MlflowClient(tracking)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    study = client.search_runs([experiment_id], "tags.`agility.role` = 'study'")[0]
    assert study.data.params["sampler"] == "nsga2" and study.data.params["directions"] == '["maximize", "minimize"]'
    trials = client.search_runs([experiment_id], "tags.`agility.role` = 'trial'")
    assert len(trials) == 4 and {t.info.status for t in trials} == {"FINISHED"}  # none pruned (KILLED)
    assert study.data.metrics["n_trials_complete"] == 4 and study.data.metrics["n_trials_pruned"] == 0
    feasible = {t.info.run_id for t in trials if t.data.params["max_tokens"] == "4"}
    infeasible = {t.info.run_id for t in trials} - feasible
    assert feasible and infeasible  # both configurations tried: the constraint separates them
    assert all(client.get_run(r).data.metrics["token_f1"] == 1.0 for r in feasible)
    assert all(client.get_run(r).data.tags.get("agility.feasible") == "false" for r in infeasible)
    assert all("agility.feasible" not in client.get_run(r).data.tags for r in feasible)
    # The Pareto front is proven feasible: only trials meeting both constraints, one per configuration.
    best = study.data.tags["agility.best_run_ids"].split(",")
    assert len(best) == 1 and set(best) <= feasible
