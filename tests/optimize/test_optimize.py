"""agility optimize against OpenAI-protocol stand-ins on 127.0.0.1, read back from a real MLflow server.

The stand-in target answers right only when its prompt carries MAGIC; the stand-in reflection model
proposes MAGIC only when its input shows a failing sample's reference answer, metric result and the
error category error analysis gives it, so a found prompt proves the feedback path, not just the loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from tests.helpers import REPO, run_cli, write_csv
from tests.openai_server import start_standin

MAGIC = "State the figure in millions."
BRIEF = "Give the figure alone."
N_SAMPLES = 10


def _text(request: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in request["messages"])


def make_answer(mode: str = "feedback"):
    """The stand-ins: model ``target`` answers the question; model ``reflector`` proposes a template."""

    def answer(request: dict[str, Any]) -> str:
        text = _text(request)
        if request["model"] == "target":
            unit = int(re.search(r"revenue of unit (\d+)", text).group(1))
            if MAGIC not in text:
                return "I am not sure."
            return f"{100 + unit} million" + ("" if BRIEF in text else ", as the statement of the unit shows for the fiscal year in its table of revenue.")
        current = re.search(r"```\n?(.*?)```", text, re.DOTALL).group(1).strip()
        # Error analysis names what is wrong with "I am not sure.": no figure where the reference has one.
        shows_feedback = "Reference answer:" in text and "numeric_match: 0" in text and "Error category: wrong_number" in text
        if mode == "weighted" and MAGIC in current and re.search(r"output_tokens: [1-9]\d+ \(weight -", text):
            return f"```\n{current}\n{BRIEF}\n```"  # right figures, but long answers cost the objective
        if mode == "never" or not shows_feedback:
            return f"```\n{current}\nVariant {hashlib.sha256(text.encode()).hexdigest()[:8]}.\n```"
        if mode == "rename":
            return "New template:\n```\n" + current.replace("{{question}}", "{$QUESTION}") + f"\n{MAGIC}\n```"
        if mode == "invent":
            return f"```\n{current}\n{MAGIC} Mention {{{{year}}}}.\n```"
        return f"Here is the improved template:\n```\n{current}\n{MAGIC}\n```"

    return answer


def write_optimize_project(directory: Path, url: str, prompt: str = "qa", **optimize: Any) -> Path:
    """Ten samples split 6/2/2; experiment and prompt named after ``prompt`` (tests share one MLflow server)."""
    rows = [{"sample_id": f"s{i}", "question": f"What was the revenue of unit {i}?", "answer_ground_truth": f"{100 + i} million",
             "answer_source_llm": f"{100 + i} million"} for i in range(N_SAMPLES)]
    write_csv(directory / "golden.csv", rows)
    config = {
        "experiment": f"optimize-{prompt}",
        "dataset": {"path": "golden.csv"},
        "prompts": [{"name": prompt, "template": "Question: {{question}}\nAnswer briefly."}],
        "source": {"provider": "replay", "model_id": "gpt-4o-mini"},
        "candidates": [{"name": "target", "provider": "openai", "model_id": "target", "base_url": url, "stream": False,
                        "params": {"max_tokens": 32}}],
        "metrics": ["numeric_match"],
        "pricing": {"target": {"input": 1.0, "output": 2.0}, "reflector": {"input": 1.0, "output": 2.0}},
        "run": {"concurrency": 1, "traces": False},
        "optimize": {"objective": "numeric_match", "max_calls": 40, "minibatch": 3,
                     "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "seed": 0},
                     "reflection": {"provider": "openai", "model_id": "reflector", "base_url": url, "stream": False, "params": {"max_tokens": 256}},
        **optimize},
    }
    path = directory / "agility.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _questions(ids: list[str] | tuple[str, ...]) -> list[str]:
    return [f"revenue of unit {int(i[1:])}?" for i in ids]


def test_finds_the_instruction_from_feedback_and_test_split_is_touched_once(tracking: str, tmp_path: Path) -> None:
    from agility_mlflow.compare import compare
    from agility_mlflow.evaluation import run_project
    from agility_mlflow.optimize import optimize_prompt

    with start_standin(latency_s=0.0, answer=make_answer()) as server:
        config = write_optimize_project(tmp_path, server.url, "qa-found")
        run_project(config, candidates=["target"], with_source=True)  # the source run compare needs, and the starting prompt on all samples
        before = len(server.answered)
        result = optimize_prompt(config, "qa-found", "target")
        requests = server.answered[before:]

    # The loop found the instruction, and only through the failing samples' feedback.
    client = MlflowClient()
    best = client.get_prompt_version("qa-found", result.best_prompt_uri.rsplit("/", 1)[1])
    assert MAGIC in best.template and "{{question}}" in best.template
    assert result.seed_validation_score == 0.0 and result.best_validation_score == 1.0
    assert result.test_metrics["numeric_match"] == 1.0
    assert best.tags["agility.parent_version"] == result.seed_prompt_uri
    assert best.tags["agility.optimization"] == result.optimization_run_id
    assert float(best.tags["agility.validation_score"]) == 1.0 and float(best.tags["agility.train_score"]) == 1.0

    # Held out: no test question reached the target or the reflection before the final run, which asked each once, last.
    test_questions = _questions(result.split.test)
    targets = [r for r in requests if r["model"] == "target"]
    reflections = [r for r in requests if r["model"] == "reflector"]
    assert not any(q in _text(r) for r in reflections for q in test_questions)
    touched = [i for i, r in enumerate(targets) if any(q in _text(r) for q in test_questions)]
    assert touched == list(range(len(targets) - len(result.split.test), len(targets)))
    assert all(MAGIC in _text(targets[i]) for i in touched)
    # Every call agility counted reached a stand-in, and no more.
    assert sum(result.calls.values()) == len(requests) <= 40
    assert result.calls["reflection"] == len(reflections)

    # MLflow: one optimization run, its trials as children, the test run a normal candidate run.
    optimization = client.get_run(result.optimization_run_id)
    assert optimization.info.status == "FINISHED" and optimization.data.tags["agility.role"] == "optimization"
    assert optimization.data.metrics["best_validation_score"] == 1.0 and optimization.data.metrics["calls_total"] == len(requests)
    history = client.get_metric_history(result.optimization_run_id, "best_validation_score")
    assert [m.value for m in sorted(history, key=lambda m: m.step)][-1] == 1.0 and len(history) >= 2
    trials = client.search_runs([optimization.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.optimization_run_id}'")
    assert trials and {t.data.tags["agility.role"] for t in trials} == {"trial"}
    by_split = {split: [t for t in trials if t.data.tags["agility.split"] == split] for split in ("train", "validation")}
    assert sum(map(len, by_split.values())) == len(trials) and len(by_split["validation"]) == result.n_prompts
    seen = {split: {json.loads(r)["sample_id"] for t in runs for r in _sample_ids(client, t.info.run_id)} for split, runs in by_split.items()}
    assert seen["validation"] == set(result.split.validation) and seen["train"] and seen["train"] <= set(result.split.train)
    # Each training minibatch the reflection read is a trial run of its own, logged once however often GEPA repeated it.
    minibatches = json.loads(Path(client.download_artifacts(result.optimization_run_id, "minibatches.json", str(tmp_path))).read_text())
    assert minibatches and {i for m in minibatches for i in m["sample_ids"]} <= set(result.split.train)
    assert {m["run_id"] for m in minibatches} == {t.info.run_id for t in by_split["train"]}
    assert all(t.data.metrics["n_samples"] == 3 for t in by_split["train"])  # optimize.minibatch
    artifacts = {a.path for a in client.list_artifacts(result.optimization_run_id)}
    assert {"lineage.md", "pareto_front.json", "candidates.json"} <= artifacts
    lineage = Path(client.download_artifacts(result.optimization_run_id, "lineage.md", str(tmp_path))).read_text()
    assert f"+{MAGIC}" in lineage and result.best_prompt_uri in lineage
    test_run = client.get_run(result.test_run_id)
    assert test_run.data.tags["agility.role"] == "candidate" and test_run.data.tags["agility.optimized_from"] == result.optimization_run_id
    assert test_run.data.metrics["n_samples"] == len(result.split.test)

    # compare decides the optimized run against the source; the optimization's trials are not candidates.
    # The test run covers the test split of the same golden set: not stale, paired with the source on those samples only.
    comparison = compare(config, output=tmp_path / "report")
    decided = {v.run.run_id for v in comparison.verdicts}
    assert result.test_run_id in decided and not decided & {t.info.run_id for t in trials} and not comparison.stale
    assert comparison.verdict(result.test_run_id).comparisons[0].n_paired == len(result.split.test)
    assert test_run.data.params["dataset_digest"] == client.get_run(comparison.source.run_id).data.params["dataset_digest"]


def test_weighted_objective_shortens_answers_and_the_estimate_comes_before_any_call(
    tracking: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agility_mlflow.optimize import optimize_prompt

    weights = {"numeric_match": 1.0, "output_tokens_mean": -0.002}
    estimates: list[tuple[int, str]] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("optimize: split"):
                estimates.append((server.calls, record.getMessage()))

    caplog.set_level(logging.INFO, logger="agility_mlflow.optimize")
    watch = Watch()
    logging.getLogger("agility_mlflow.optimize").addHandler(watch)
    try:
        with start_standin(latency_s=0.0, answer=make_answer("weighted")) as server:
            config = write_optimize_project(tmp_path, server.url, "qa-weighted", objective=weights, max_calls=40)
            result = optimize_prompt(config, "qa-weighted", "target")
            reflections = [_text(r) for r in server.answered if r["model"] == "reflector"]
    finally:
        logging.getLogger("agility_mlflow.optimize").removeHandler(watch)

    # The estimate came once, before the first call: 40 calls at the worst call's price (the reflection's: 12,000
    # characters and 16 for the message at 2 a token in, 256 tokens out, at $1 and $2 per million), 2 held for the test run.
    ((calls_then, line),) = estimates
    assert calls_then == 0
    assert "up to 40 calls in all (2 held for the final test run, 1 per sample scored)" in line
    assert f"at most ${40 * ((12000 + 16) / 2 * 1.0 + 256 * 2.0) / 1e6:.4f} at worst-case prices" in line

    # Right figures first, then shorter answers: only the weighted objective's token term asks for the second step,
    # and the reflection read it per sample.
    client = MlflowClient()
    best = client.get_prompt_version("qa-weighted", result.best_prompt_uri.rsplit("/", 1)[1]).template
    assert MAGIC in best and BRIEF in best
    assert any(re.search(r"output_tokens: 2\d \(weight -0.002 in the objective\)", t) for t in reflections)
    assert result.test_metrics["numeric_match"] == 1.0 and result.test_metrics["output_tokens_mean"] == 2  # "10x million"
    optimization = client.get_run(result.optimization_run_id)
    assert json.loads(optimization.data.params["objective"]) == weights
    # Each prompt's validation score is the weighted sum of its trial run's metrics, read back from MLflow.
    validation = client.search_runs([optimization.info.experiment_id],
                                    f"tags.`mlflow.parentRunId` = '{result.optimization_run_id}' and tags.`agility.split` = 'validation'")
    assert len(validation) == result.n_prompts >= 3
    for trial in validation:
        uri = trial.data.tags["agility.prompt"]
        score = float(client.get_prompt_version("qa-weighted", uri.rsplit("/", 1)[1]).tags["agility.validation_score"])
        expected = trial.data.metrics["numeric_match"] - 0.002 * trial.data.metrics["output_tokens_mean"]
        assert score == pytest.approx(expected)
    assert result.best_validation_score == pytest.approx(1 - 0.002 * 2)


@pytest.mark.parametrize(
    ("fmt", "template", "field"),
    [("fstring", "Question: {question}\nAnswer briefly, no {{braces}}.", "{question}"),
     ("jinja2", "{% if question %}Question: {{ question }}{% endif %}\nAnswer briefly.", "{{ question }}")],
)
def test_a_proposal_keeps_the_template_format(tracking: str, tmp_path: Path, fmt: str, template: str, field: str) -> None:
    from agility_mlflow.optimize import optimize_prompt

    def answer(request: dict[str, Any]) -> str:
        if request["model"] == "reflector":  # writes the field in another format, as models do: the proposal must come back as fmt
            text = make_answer()(request)
            return text.replace(field, "{{question}}" if fmt == "fstring" else "{question}")
        return make_answer()(request)

    with start_standin(latency_s=0.0, answer=answer) as server:
        config = write_optimize_project(tmp_path, server.url, f"qa-{fmt}", max_calls=30)
        raw = yaml.safe_load(config.read_text())
        raw["prompts"][0].update(template=template, format=fmt)
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        result = optimize_prompt(config, f"qa-{fmt}", "target")
        targets = [_text(r) for r in server.answered if r["model"] == "target"]
        reflections = [_text(r) for r in server.answered if r["model"] == "reflector"]
    assert f"exactly as written ({'a Python format string' if fmt == 'fstring' else 'a Jinja2 template'}" in reflections[0]
    assert f": {field}. Add no other placeholder." in reflections[0]
    # Every prompt the target saw was rendered in its format: the question filled in, no field or block left over.
    assert all(re.search(r"Question: What was the revenue of unit \d+\?", t) and "{%" not in t and "{question}" not in t
               for t in targets)
    assert result.test_metrics["numeric_match"] == 1.0 and result.best_prompt_uri != result.seed_prompt_uri
    candidates = json.loads(Path(MlflowClient().download_artifacts(result.optimization_run_id, "candidates.json", str(tmp_path))).read_text())
    best = next(c["text"] for c in candidates if c["uri"] == result.best_prompt_uri)
    assert best.startswith(template) and MAGIC in best  # the starting template's own syntax, its field put back
    if fmt == "fstring":
        assert "no {braces}." in targets[-1]  # the doubled braces stayed a literal in the proposal too


def _sample_ids(client: MlflowClient, run_id: str) -> list[str]:
    table = json.loads(Path(client.download_artifacts(run_id, "eval_results.json")).read_text())
    column = table["columns"].index("sample_id")
    return [json.dumps({"sample_id": row[column]}) for row in table["data"]]


def test_renamed_placeholders_are_put_back(tracking: str, tmp_path: Path) -> None:
    from agility_mlflow.optimize import optimize_prompt

    with start_standin(latency_s=0.0, answer=make_answer("rename")) as server:
        result = optimize_prompt(write_optimize_project(tmp_path, server.url, "qa-rename"), "qa-rename", "target")
        targets = [_text(r) for r in server.answered if r["model"] == "target"]
    best = MlflowClient().get_prompt_version("qa-rename", result.best_prompt_uri.rsplit("/", 1)[1]).template
    assert MAGIC in best and "{{question}}" in best and "$QUESTION" not in best
    assert not any("QUESTION" in t or "{{" in t for t in targets)


def test_a_proposal_that_invents_a_placeholder_is_discarded_never_evaluated(tracking: str, tmp_path: Path) -> None:
    from agility_mlflow.optimize import optimize_prompt

    with start_standin(latency_s=0.0, answer=make_answer("invent")) as server:
        result = optimize_prompt(write_optimize_project(tmp_path, server.url, "qa-invent", max_calls=20), "qa-invent", "target")
        targets = [_text(r) for r in server.answered if r["model"] == "target"]
        reflections = [r for r in server.answered if r["model"] == "reflector"]
    assert 0 < len(reflections) <= result.n_discarded  # a cached reply is discarded again, without a call
    assert not any("Mention" in t or "year" in t for t in targets)
    assert result.best_prompt_uri == result.seed_prompt_uri and result.n_prompts == 1
    assert [v.version for v in MlflowClient().search_prompt_versions("qa-invent")] == [1]


def test_call_budget_is_exact(tracking: str, tmp_path: Path) -> None:
    from agility_mlflow.optimize import optimize_prompt

    with start_standin(latency_s=0.0, answer=make_answer("never")) as server:
        result = optimize_prompt(write_optimize_project(tmp_path, server.url, "qa-budget", max_calls=30), "qa-budget", "target")
        received = server.calls
    assert result.stopped_by_budget
    assert received == sum(result.calls.values()) == 30
    assert result.test_metrics["n_samples"] == len(result.split.test)  # the final run had its share held back


def test_budget_usd_is_never_crossed(tracking: str, tmp_path: Path) -> None:
    from agility_mlflow.optimize import optimize_prompt

    with start_standin(latency_s=0.0, answer=make_answer("never")) as server:
        config = write_optimize_project(tmp_path, server.url, "qa-usd", max_calls=400)
        result = optimize_prompt(config, "qa-usd", "target", budget_usd=0.004)
        requests = list(server.answered)
    # What the stand-in billed: its own token counts at the config's prices.
    billed = sum((sum(len(m["content"]) // 4 for m in r["messages"]) * 1.0 + len(make_answer("never")(r)) // 4 * 2.0) / 1e6 for r in requests)
    assert result.stopped_by_budget and sum(result.calls.values()) == len(requests) < 400
    assert billed == pytest.approx(result.cost_usd) and result.cost_usd <= 0.004


def test_kill_9_then_rerun_resumes_from_state_and_cache(tracking: str, tmp_path: Path) -> None:
    with start_standin(latency_s=0.05, answer=make_answer("never")) as server:
        config = write_optimize_project(tmp_path, server.url, "qa-kill", max_calls=40)
        env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": tracking}
        process = subprocess.Popen([sys.executable, "-m", "agility_mlflow", "optimize", str(config), "--prompt", "qa-kill", "--candidate", "target"],
                                   env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while server.calls < 15 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "the optimization ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        first_calls = server.calls
        done = run_cli("optimize", str(config), "--prompt", "qa-kill", "--candidate", "target", env={"MLFLOW_TRACKING_URI": tracking}, cwd=tmp_path)
        bodies = [json.dumps(r, sort_keys=True) for r in server.answered]
    assert done.returncode == 0, done.stderr
    client = MlflowClient()
    experiment = client.get_experiment_by_name("optimize-qa-kill")
    runs = client.search_runs([experiment.experiment_id], "tags.`agility.role` = 'optimization'", order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert "interrupted" in runs[0].data.tags["agility.error"]
    assert runs[1].data.tags["agility.resumed_from"] == runs[0].info.run_id
    assert not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    # Resumed, not restarted: finished calls came from the cache (at most the one call in flight at the kill repeats),
    # and the budget counted across both processes.
    assert len(bodies) - len(set(bodies)) <= 1
    assert first_calls < len(bodies) <= 40


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"objective": "f1_score"}, "key 'optimize.objective': unknown metric 'f1_score'"),
        ({"split": {"train": 0.6, "validation": 0.3, "test": 0.2}}, "must sum to 1"),
        ({"max_calls": 5}, "key 'optimize.max_calls': 5 is too small"),
        ({"feedback": ["llm_judge"]}, "key 'optimize.feedback': metric 'llm_judge' is not in metrics:"),
    ],
)
def test_bad_config_is_an_input_error_before_any_call(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    from agility_mlflow.errors import InputError
    from agility_mlflow.optimize import optimize_prompt

    with start_standin(latency_s=0.0, answer=make_answer()) as server:
        config = write_optimize_project(tmp_path, server.url, **change)
        with pytest.raises(InputError, match=re.escape(message)):
            optimize_prompt(config, "qa", "target")
        assert server.calls == 0


def test_reflection_provider_without_credentials_exits_2_before_any_call(tmp_path: Path) -> None:
    reflection = {"provider": "bedrock", "model_id": "us.anthropic.claude-sonnet-4-20250514-v1:0"}
    with start_standin(latency_s=0.0, answer=make_answer()) as server:
        config = write_optimize_project(tmp_path, server.url, reflection=reflection)
        env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        done = run_cli("optimize", str(config), "--prompt", "qa", "--candidate", "target", env=env)
        calls = server.calls
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("error: agility.yaml: key 'optimize.reflection': no AWS credentials for Bedrock model "
                                   "'us.anthropic.claude-sonnet-4-20250514-v1:0' (set AWS_PROFILE or AWS_ACCESS_KEY_ID, or use an instance role)")
    assert calls == 0
