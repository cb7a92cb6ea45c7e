"""A ``steps:`` pipeline registered and checked whole, on a real MLflow server and an OpenAI-compatible stand-in.

The pipeline: a replayed lookup (its recorded output is an input when served), a fixed-model draft step
and the migrated answer step. The registered pyfunc runs the draft and answer steps for real; `agility
check` re-evaluates all three steps as `agility run` did.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from agility_mlflow.cli import main
from agility_mlflow.evaluation import run_project
from tests.helpers import GOLDEN_ROWS, write_project
from tests.openai_server import start_standin

LOOKUPS = {"q1": "revenue FY2023", "q2": "net income FY2023", "q3": "profit FY2023"}
ROWS = [{**row, "lookup_rec": LOOKUPS[row["sample_id"]], "lookup_latency": 0.5} for row in GOLDEN_ROWS]
PROMPTS = [
    {"name": "lookup", "template": "Search terms for: {{question}}"},
    {"name": "draft", "template": "Draft from [{{query}}]: {{question}}"},
    {"name": "answer", "template": "Context: {{context}}\nDraft: {{draft}}\nQuestion: {{question}}\nAnswer briefly."},
]


def _answer(request: dict) -> str:
    """The drafter echoes its prompt; the candidate answers as production did, keyed by the question."""
    prompt = request["messages"][-1]["content"]
    if request["model"] == "drafter":
        return f"DRAFT<{prompt}>"
    return next(row["answer_source_llm"] for row in GOLDEN_ROWS if f"Question: {row['question']}" in prompt)


def test_register_serves_the_whole_pipeline_and_check_reevaluates_it(tracking: str, tmp_path: Path) -> None:
    experiment, model = f"pipeline-{uuid.uuid4().hex[:8]}", f"app.pipeline-{uuid.uuid4().hex[:8]}"
    with start_standin(latency_s=0.0, answer=_answer) as server:
        drafter = {"provider": "openai", "model_id": "drafter", "base_url": server.url, "stream": False}
        steps = [
            {"name": "lookup", "prompt": "lookup", "output": "query", "replay": "lookup_rec", "replay_latency": "lookup_latency"},
            {"name": "draft", "prompt": "draft", "model": drafter},
            {"name": "answer", "prompt": "answer"},
        ]
        candidate = {"name": "echo", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": server.url, "stream": False}
        config = write_project(tmp_path, rows=ROWS, experiment=experiment, prompts=PROMPTS, steps=steps, candidates=[candidate],
                               metrics=["token_f1", "exact_match"], source=None)
        (summary,) = run_project(config, tracking_uri=tracking, progress=False, with_source=False)
        registered = CliRunner().invoke(main, ["register", str(config), "--name", model, "--run-id", summary.run_id,
                                               "--tracking-uri", tracking, "--force"])
        assert registered.exit_code == 0, registered.stderr[-2000:]

        client = MlflowClient(tracking)
        version = client.get_model_version_by_alias(model, "champion")
        # The registration says which columns the served model expects: the replayed step's output among them.
        assert json.loads(version.tags["agility.served_inputs"]) == ["context", "query", "question"]
        assert ("serves the pipeline lookup (served: input 'query') -> draft (openai:drafter) -> answer (this model); "
                "inputs: context, query, question") in version.description
        info = mlflow.models.get_model_info(f"models:/{model}/{version.version}")
        assert [c["name"] for c in info.signature.inputs.to_dict()] == ["context", "query", "question"]
        stored = info.flavors["python_function"]["config"]["steps"]
        assert [s["prompt_uri"].rsplit("/", 1)[0] for s in stored] == ["prompts:/lookup", "prompts:/draft", "prompts:/answer"]

        # Served: the fixed draft step and the answer step are called for real, with the given lookup output.
        served = mlflow.pyfunc.load_model(f"models:/{model}@champion")
        before = len(server.answered)
        answers = served.predict(pd.DataFrame([{"question": GOLDEN_ROWS[0]["question"], "context": "Revenue: $1,577 million.",
                                                "query": "sales 2023"}]))
        assert answers == [GOLDEN_ROWS[0]["answer_source_llm"]]
        calls = server.answered[before:]
        assert [c["model"] for c in calls] == ["drafter", "gpt-4o-mini"]
        draft = f"DRAFT<Draft from [sales 2023]: {GOLDEN_ROWS[0]['question']}>"
        assert f"Draft: {draft}" in calls[1]["messages"][-1]["content"]  # the draft step's output reached the answer step
        with pytest.raises(Exception, match=r"missing inputs \['query'\]"):
            served.predict(pd.DataFrame([{"question": "q", "context": "c"}]))

        # Checked: the whole pipeline again, the lookup replayed from the dataset, paired with the registered run.
        checked = CliRunner().invoke(main, ["check", "--model", f"models:/{model}@champion", "--dataset", str(tmp_path / "golden.csv"),
                                            "--tracking-uri", tracking, "--no-cache"])
        assert checked.exit_code == 0, checked.stdout + checked.stderr[-2000:]
    run = client.get_run(checked.stdout.strip().rsplit("(check run ", 1)[1].rstrip(")"))
    assert run.data.tags["agility.check"] == "pass" and run.data.metrics["n_errors"] == 0
    assert run.data.metrics["step.lookup.latency_p50_s"] == 0.5  # replayed from the dataset, as `agility run` does
    assert run.data.metrics["exact_match"] == summary.metrics["exact_match"] == pytest.approx(1 / 3)
    assert {"step.draft.latency_p50_s", "step.answer.latency_p50_s"} <= set(run.data.metrics)
    assert "token_f1 +0.000 [0.000, 0.000] on 3 samples paired with the registered run: within margin 0.05" in checked.stdout
