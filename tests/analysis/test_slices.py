"""Slices through `agility compare` on a real MLflow server: a candidate that passes overall is named worse on one slice.

125 samples: 100 ``lookup`` (candidate token_f1 +0.05), 20 ``novel`` (-0.30), 5 ``rare`` (equal). Overall the
candidate is within the 0.1 margin and passes; on ``question_type=novel`` it loses 0.30 on every sample,
which survives Holm's adjustment over the two slices tested; ``rare`` has too few samples to test.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.analysis import analyze
from agility_mlflow.compare import compare
from agility_mlflow.errors import InputError
from tests.compare.factory import log_eval_run, sample_rows
from tests.helpers import run_cli, write_project

KINDS = ["lookup"] * 100 + ["novel"] * 20 + ["rare"] * 5
IDS = [f"s{i:03d}" for i in range(len(KINDS))]
SOURCE_F1 = [round(0.5 + 0.002 * (i % 50), 3) for i in range(len(KINDS))]
GAIN = {"lookup": 0.05, "novel": -0.30, "rare": 0.0}
CANDIDATE_F1 = [round(s + GAIN[kind], 3) for s, kind in zip(SOURCE_F1, KINDS)]


def _golden(with_kind: bool = True) -> list[dict[str, str]]:
    return [{"sample_id": sid, "question": f"q {sid}", "answer_ground_truth": f"reference {sid}", "answer_source_llm": f"answer {sid}",
             **({"question_type": kind} if with_kind else {})} for sid, kind in zip(IDS, KINDS)]


@pytest.fixture(scope="module")
def experiment(mlflow_server: str) -> str:
    name = f"slices-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(name)
    latency = [1.0] * len(IDS)
    log_eval_run(client, experiment_id, "source", "source", sample_rows(IDS, scores={"token_f1": SOURCE_F1}, latency=latency, cost=0.001))
    log_eval_run(client, experiment_id, "cand/qa", "candidate", sample_rows(IDS, scores={"token_f1": CANDIDATE_F1}, latency=latency, cost=0.0005))
    return name


def test_a_candidate_worse_on_one_slice_is_named_while_it_passes_overall(tmp_path: Path, mlflow_server: str, experiment: str) -> None:
    config = write_project(tmp_path, rows=_golden(), experiment=experiment, metrics=["token_f1"],
                           decision={"margin": 0.1, "slices": ["question_type"]})
    result = compare(config, tracking_uri=mlflow_server, output=tmp_path / "report")
    verdict = result.verdict("cand/qa")
    assert verdict.outcome == "pass"
    assert verdict.reasons[-1] == "passes overall; worse on question_type=novel: token_f1 -0.300 [-0.300, -0.300] (Holm p=0.001)"

    saved = json.loads((tmp_path / "report" / "verdicts.json").read_text())
    slices = {s["value"]: s for s in saved["verdicts"][0]["slices"]}
    assert {v: s["outcome"] for v, s in slices.items()} == {"lookup": "not worse", "novel": "worse", "rare": "insufficient"}
    assert [slices[v]["comparison"]["n_paired"] for v in ("lookup", "novel", "rare")] == [100, 20, 5]
    assert slices["lookup"]["comparison"]["difference"] == pytest.approx(0.05)
    # One-sided bootstrap p of "worse by more than 0.1": none of 2,000 resamples reaches -0.1, so (0 + 1) / 2001; Holm doubles it (2 tests).
    assert slices["novel"]["p_value"] == pytest.approx(1 / 2001) and slices["novel"]["p_holm"] == pytest.approx(2 / 2001)
    assert slices["lookup"]["p_value"] == pytest.approx(1.0) and slices["rare"]["p_holm"] is None

    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Slices" in report and "| cand/qa | question_type=rare | token_f1 | 5 | +0.000 [0.000, 0.000] | - | insufficient |" in report
    assert "## Drift from the source" in report and "## Error categories" in report

    # The comparison run carries the per-slice results too.
    client = MlflowClient(mlflow_server)
    logged = json.loads(Path(client.download_artifacts(result.run_id, "verdicts.json", str(tmp_path))).read_text())
    assert [s["outcome"] for s in logged["verdicts"][0]["slices"]] == ["not worse", "worse", "insufficient"]


def test_a_slice_column_missing_from_the_dataset_is_exit_2(tmp_path: Path, mlflow_server: str, experiment: str) -> None:
    config = write_project(tmp_path, rows=_golden(with_kind=False), experiment=experiment, metrics=["token_f1"],
                           decision={"slices": ["question_type"]}, tracking_uri=mlflow_server)
    message = ("agility.yaml: dataset golden.csv: key 'decision.slices': column 'question_type' is not in the dataset "
               "(columns: answer_ground_truth, answer_source_llm, question, sample_id)")
    result = run_cli("compare", str(config), "--output", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError) as raised:  # analyze checks it the same way, before reading any run
        analyze(config, output=tmp_path / "analysis")
    assert str(raised.value) == message
