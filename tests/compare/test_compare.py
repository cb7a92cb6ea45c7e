"""``agility compare`` against a real MLflow server, on runs with known per-sample results.

A source and four candidates over 40 samples (``max_latency_p95_s: 2``):
- ``better/qa``: 5 exact-match wins, 1 loss, token_f1 up, 60% cheaper: passes and wins;
- ``worse/qa``: 12 losses, token_f1 down 0.25: fails;
- ``few/qa``: only 10 samples: insufficient, with the number needed;
- ``slow/qa``: p95 3 s: fails on its run metrics, its samples never downloaded.
A RUNNING candidate is ignored.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy.stats import norm

from agility_mlflow.compare import Comparison, mcnemar_exact_p, newcombe_paired_ci, paired_bootstrap_ci
from tests.compare.factory import (
    BETTER_F1,
    FEW_F1,
    IDS,
    SOURCE_EM,
    SOURCE_F1,
    SOURCE_LATENCY,
    WORSE_EM,
    WORSE_F1,
    _golden_rows,
    log_eval_run,
    sample_rows,
)
from tests.helpers import run_cli, write_project


def _bootstrap(candidate: list[float], source: list[float]) -> tuple[float, float, float]:
    """The interval compare must report: the bootstrap (tested on its own in test_stats.py) of the differences in id order."""
    differences = np.array(candidate) - np.array(source)  # ids s00..s39 are already in sorted order
    low, high = paired_bootstrap_ci(differences)
    return float(differences.mean()), low, high


def test_verdicts_intervals_and_winner_are_exactly_as_computed(compared: dict[str, Any]) -> None:
    result: Comparison = compared["result"]
    ids = compared["ids"]
    assert result.source.run_id == ids["source"]
    assert [(v.run.name, v.outcome) for v in result.verdicts] == [
        ("better/qa", "pass"), ("few/qa", "insufficient"), ("slow/qa", "fail"), ("worse/qa", "fail"),
    ]  # passing, insufficient, failing; within each by exact_match (slow 0.5, worse 0.225)
    assert result.winner is not None and result.winner.run.run_id == ids["better/qa"]

    better = result.verdict("better/qa")
    em_low, em_high = newcombe_paired_ci(19, 5, 1, 15)  # both right, only candidate, only source, neither
    f1_mean, f1_low, f1_high = _bootstrap(BETTER_F1, SOURCE_F1)
    assert (better.comparison("exact_match").ci_low, better.comparison("exact_match").ci_high) == (em_low, em_high)
    assert better.comparison("exact_match").p_value == mcnemar_exact_p(5, 1) == 0.21875
    assert (better.comparison("token_f1").ci_low, better.comparison("token_f1").ci_high) == (f1_low, f1_high)
    assert better.reasons == (
        f"exact_match +0.100 [{em_low:.3f}, {em_high:.3f}] within margin 0.05 (McNemar p=0.219)",
        f"token_f1 {f1_mean:+.3f} [{f1_low:.3f}, {f1_high:.3f}] within margin 0.05",
        "cost -60%",
        "p95 -0.10 s",
    )

    worse = result.verdict("worse/qa")
    w_low, w_high = newcombe_paired_ci(8, 1, 12, 19)
    assert worse.reasons[0] == f"exact_match -0.275 [{w_low:.3f}, {w_high:.3f}] outside margin 0.05 (McNemar p={mcnemar_exact_p(1, 12):.3g})"
    assert worse.reasons[1] == "token_f1 -0.250 [-0.250, -0.250] outside margin 0.05"

    few = result.verdict("few/qa")
    sd = float(np.std(np.array(FEW_F1) - np.array(SOURCE_F1[:10]), ddof=1))
    needed = math.ceil(((norm.ppf(0.975) + norm.ppf(0.8)) * sd / 0.05) ** 2)
    assert few.needed_samples == needed == 314
    assert few.comparison("token_f1").n_paired == 10
    # 10 agreeing 1s: Newcombe's bound is -z**2 / (m + z**2), above -0.05 from m = 73 (more than min_samples 30)
    assert few.comparison("exact_match").needed_samples == math.ceil(norm.ppf(0.975) ** 2 * (1 / 0.05 - 1)) == 73
    assert "on only 10 paired samples (minimum 30): need ~314" in few.reasons[1]

    slow = result.verdict("slow/qa")
    assert slow.run.rows is None and slow.comparisons == ()  # failed on run metrics: samples never loaded
    assert slow.reasons == ("cost -90%", "p95 +1.26 s (3.00 s) over limit 2 s", "quality not compared: a limit already fails")
    assert "unfinished/qa" not in [v.run.name for v in result.verdicts]


def test_comparison_run_holds_the_verdict_and_the_report(compared: dict[str, Any]) -> None:
    result: Comparison = compared["result"]
    client: MlflowClient = compared["client"]
    runs = client.search_runs([compared["experiment_id"]], "tags.`agility.role` = 'comparison'")
    assert result.run_id in [r.info.run_id for r in runs]
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["agility.winner"] == compared["ids"]["better/qa"]
    assert run.data.tags["agility.winner_name"] == "better/qa"
    assert run.data.tags["agility.source_run_id"] == compared["ids"]["source"]
    assert run.data.metrics["n_pass"] == 1 and run.data.metrics["n_fail"] == 2 and run.data.metrics["n_insufficient"] == 1
    assert run.data.metrics["winner_exact_match_diff"] == pytest.approx(0.1)
    assert json.loads(run.data.params["primary"]) == ["exact_match", "token_f1"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"report.html", "report.md", "verdicts.json", "quality_cost.png", "latency.png",
            "difference_exact_match.png", "difference_token_f1.png"} <= artifacts
    verdicts = json.loads((compared["output"] / "verdicts.json").read_text())
    assert verdicts["winner"] == compared["ids"]["better/qa"]
    assert [v["outcome"] for v in verdicts["verdicts"]] == ["pass", "insufficient", "fail", "fail"]


def test_cli_prints_the_verdicts_and_the_winner(compared: dict[str, Any], tmp_path: Path) -> None:
    result = run_cli("compare", str(compared["config"]), "--output", str(tmp_path / "out"), env={"MLFLOW_TRACKING_URI": compared["server"]})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if not line.startswith(("🏃", "🧪"))]  # MLflow's links to the UI
    assert lines[0] == f"source: source (run {compared['ids']['source']})"
    assert lines[2].startswith("pass          better/qa  exact_match +0.100")
    assert f"winner: better/qa (run {compared['ids']['better/qa']})" in lines
    assert (tmp_path / "out" / "report.html").is_file()


def test_no_passing_candidate_still_exits_0(tmp_path: Path, tracking: str) -> None:
    experiment = f"nopass-{uuid.uuid4().hex[:8]}"
    config = write_project(tmp_path, rows=_golden_rows(), experiment=experiment, metrics=["exact_match", "token_f1"])
    client = MlflowClient()
    experiment_id = client.create_experiment(experiment)
    scores = {"exact_match": SOURCE_EM, "token_f1": SOURCE_F1}
    log_eval_run(client, experiment_id, "source", "source", sample_rows(IDS, scores=scores, latency=SOURCE_LATENCY, cost=0.001))
    log_eval_run(client, experiment_id, "worse/qa", "candidate", sample_rows(
        IDS, scores={"exact_match": WORSE_EM, "token_f1": WORSE_F1}, latency=SOURCE_LATENCY, cost=0.0002))
    result = run_cli("compare", str(config), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "winner: none: no candidate passed, the source stays" in result.stdout.splitlines()


def test_missing_source_run_is_one_line_and_exit_2(tmp_path: Path, tracking: str) -> None:
    experiment = f"nosource-{uuid.uuid4().hex[:8]}"
    config = write_project(tmp_path, rows=_golden_rows(), experiment=experiment, metrics=["exact_match", "token_f1"])
    client = MlflowClient()
    experiment_id = client.create_experiment(experiment)
    log_eval_run(client, experiment_id, "worse/qa", "candidate", sample_rows(
        IDS, scores={"exact_match": WORSE_EM, "token_f1": WORSE_F1}, latency=SOURCE_LATENCY, cost=0.0002))
    result = run_cli("compare", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: agility.yaml: experiment '{experiment}' has no FINISHED source run (tag agility.role=source); "
        "run `agility run` on a dataset with the source model's answers first"
    ]
    missing = run_cli("compare", str(write_project(tmp_path / "other", experiment="never-created")))
    assert missing.returncode == 2 and "experiment 'never-created' not found" in missing.stderr


def test_decision_naming_an_unscored_metric_is_bad_input(tmp_path: Path) -> None:
    config = write_project(tmp_path, metrics=["exact_match"], decision={"primary": ["rouge_l"]})
    result = run_cli("compare", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: agility.yaml: key 'decision.primary': metric 'rouge_l' is not in metrics: (exact_match)"
    typo = write_project(tmp_path / "typo", decision={"margn": 0.1})
    result = run_cli("compare", str(typo))
    assert result.returncode == 2 and "unknown key 'decision.margn'" in result.stderr
