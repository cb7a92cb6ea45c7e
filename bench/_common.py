"""Helpers shared by the benchmarks: a scratch project against a stand-in server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml


def quiet() -> None:
    import logging
    import warnings

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


VERDICT = '{"reasoning": "It gives the figure asked for.", "score": 8}'
"""What a stand-in started with ``verdict=VERDICT`` answers a judge."""


def write_project(directory: Path, base_url: str, n: int, concurrency: int, *, traces: bool = True, cache: bool = False,
                  source: bool = False, judge: bool = False) -> Path:
    """``n`` questions whose reference is what the stand-in answers, one openai candidate.

    With ``source``, each row also holds the source model's recorded answer, latency and tokens, and
    the project replays them as its source run, as a user's project with a golden dataset does.
    With ``judge``, the ``llm_judge`` metric too, its judge another model on the same stand-in
    (which must answer judges: ``standin_process(verdict=VERDICT)``).
    """
    recorded = {"answer_source_llm": "The answer is 42.", "latency_source_llm": 0.9, "input_token_source_llm": 12,
                "output_token_source_llm": 6} if source else {}
    rows = "\n".join(json.dumps({"sample_id": f"s{i}", "question": f"Question {i}?", "answer_ground_truth": "The answer is 42.",
                                 **recorded}) for i in range(n))
    (directory / "golden.jsonl").write_text(rows, encoding="utf-8")
    config = {
        "experiment": "bench",
        "dataset": {"path": "golden.jsonl"},
        "prompts": [{"name": "bench-qa", "template": "Answer: {{question}}"}],
        "candidates": [{"name": "standin", "provider": "openai", "model_id": "standin", "base_url": base_url, "api_key": "x"}],
        "metrics": ["exact_match", "token_f1"],
        "pricing": {"standin": {"input": 0.15, "output": 0.6}},
        "run": {"concurrency": concurrency, "traces": traces, "cache": cache},
    }
    if judge:
        config["judge"] = {"provider": "openai", "model_id": "judge-standin", "base_url": base_url, "api_key": "x"}
        config["metrics"].append("llm_judge")
        config["pricing"]["judge-standin"] = {"input": 0.15, "output": 0.6}
    if source:
        config["source"] = {"provider": "replay", "model_id": "gpt-4o-mini"}
        config["pricing"]["gpt-4o-mini"] = {"input": 0.15, "output": 0.6}
    path = directory / "agility.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def spread(values: list[float], digits: int = 3) -> str:
    """``median [min-max]`` of repeated measurements, e.g. ``1.234 [1.200-1.300]``; one value alone, e.g. ``1.234``."""
    import statistics

    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def machine() -> str:
    """When and where a benchmark ran, for the figures it prints."""
    import datetime
    import platform

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now} on {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, load average {load:.1f} at start"


def table_row(what: str, figure: str, target: str, command: str) -> None:
    """Print one row of the README's Performance table (``bench/report.py`` collects them)."""
    cells = (what, figure, target, f"`{command}`")
    print("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |", flush=True)
