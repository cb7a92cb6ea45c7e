"""Metric presets resolve to the use case's metrics, judged ones only with a judge, and run on the demo projects."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agility_mlflow.config import METRIC_PRESETS, load_config
from agility_mlflow.evaluation import prepare, run_project

REPO = Path(__file__).resolve().parents[1]
DEMOS = {"qa": "financial-qa", "rag": "financial-qa", "classification": "financial-qa", "summarization": "call-summarization"}
# The README's preset table, written out: (without a judge, with a judge also).
README_TABLE = {
    "qa": (["exact_match", "token_f1", "rouge_l", "numeric_match"], ["answer_correctness", "llm_judge"]),
    "rag": (["token_f1", "rouge_l", "numeric_match"], ["faithfulness", "answer_relevancy", "context_precision", "context_recall", "llm_judge"]),
    "summarization": (["rouge_l", "bleu", "answer_length"], ["deepeval_summarization", "llm_judge"]),
    "classification": (["exact_match", "token_f1"], []),
}


def test_the_presets_are_the_readme_table() -> None:
    assert sorted(METRIC_PRESETS) == sorted(README_TABLE)


@pytest.mark.parametrize("preset", sorted(README_TABLE))
def test_each_preset_resolves_and_prepares_on_a_demo_project(tmp_path: Path, preset: str) -> None:
    demo = REPO / "projects" / DEMOS[preset] / "agility.yaml"
    raw = yaml.safe_load(demo.read_text())
    raw["dataset"]["path"] = str((demo.parent / raw["dataset"]["path"]).resolve())
    raw["prompts"] = [{**p, "template": str((demo.parent / p["template"]).resolve())} for p in raw["prompts"]]
    for with_judge in (False, True):
        config = dict(raw, metrics={"preset": preset, "add": ["answer_length"]}, **({"judge": {"provider": "local"}} if with_judge else {}))
        config.pop("sweep", None)
        path = tmp_path / f"{preset}-{with_judge}.yaml"
        path.write_text(yaml.safe_dump(config))
        cfg = load_config(path)
        plain, judged = README_TABLE[preset]
        expected = [*plain, *(judged if with_judge else [])]
        assert cfg.metrics == expected + ([] if "answer_length" in expected else ["answer_length"])  # `add` without repeats
        project = prepare(cfg, limit=2, with_source=False)  # every column a metric needs is there, no call made
        assert [m.name for m in project.metrics] == cfg.metrics


def test_a_preset_runs_end_to_end_on_the_replayed_source(tmp_path: Path) -> None:
    demo = REPO / "projects" / "financial-qa"
    config = {
        "experiment": "preset-qa",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "dataset": {"path": str(demo / "data" / "golden.csv")},
        "prompts": [{"name": "fin-qa", "template": str(demo / "prompts" / "source.txt")}],
        "metrics": {"preset": "qa"},
    }
    path = tmp_path / "agility.yaml"
    path.write_text(yaml.safe_dump(config))
    (summary,) = run_project(path, limit=5)
    assert summary.role == "source"
    assert {"exact_match", "token_f1", "rouge_l", "numeric_match"} <= set(summary.metrics)
