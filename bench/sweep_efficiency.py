"""How many model calls a pruned, cached Optuna search needs to find the best configuration,
against evaluating every configuration (exhaustive grid), on one problem with a known best.

The model is an OpenAI-compatible stand-in on 127.0.0.1 whose answers are right for a share of
samples set by the configuration (prompt, instruction, temperature, max_tokens), so the best
configuration is known in advance. Target: ratio under 0.4 with the same winner.

Run: python bench/sweep_efficiency.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from tests.openai_server import start_standin  # noqa: E402

N_SAMPLES = 40
BEST = {"prompt": "exact", "instruction": "Be brief.", "temperature": 0.2, "max_tokens": 64}


def quality(text: str, temperature: float, max_tokens: int) -> float:
    """The share of samples a configuration answers right; highest for BEST."""
    q = 0.3 + 0.2 * ("Answer exactly" in text) + 0.15 * ("Be brief." in text) + 0.1 * (max_tokens == 64)
    return q - 0.5 * abs(temperature - 0.2)


def answer(request: dict) -> str:
    text = request["messages"][-1]["content"]
    number = int(text.split("Q")[1].split(":")[0])
    right = ((number * 37) % N_SAMPLES) / N_SAMPLES < quality(text, request["temperature"], request["max_tokens"])
    return f"A{number}" if right else "I am not sure."


def write_project(directory: Path, base_url: str, sampler: str, pruner: str, slices: int) -> Path:
    rows = "\n".join(json.dumps({"sample_id": f"s{i}", "question": f"Q{i}: what is it?", "answer_ground_truth": f"A{i}"})
                     for i in range(N_SAMPLES))
    (directory / "golden.jsonl").write_text(rows, encoding="utf-8")
    config = {
        "experiment": "sweep-efficiency",
        "dataset": {"path": "golden.jsonl"},
        "prompts": [{"name": "plain", "template": "{{question}}"},
                    {"name": "exact", "template": "{{question}} Answer exactly."}],
        "candidates": [{"name": "standin", "provider": "openai", "model_id": "standin", "base_url": base_url,
                        "api_key": "not-a-key", "params": {"temperature": 0.0}}],
        "metrics": ["exact_match"],
        "pricing": {"standin": {"input": 0.0, "output": 0.0}},
        "run": {"concurrency": 8, "traces": False},
        "sweep": {"instructions": ["", "Be brief."],
                  "params": {"temperature": {"low": 0.0, "high": 0.8, "step": 0.2}, "max_tokens": {"choices": [32, 64]}},
                  "objective": "exact_match", "sampler": sampler, "pruner": pruner, "slices": slices, "seed": 3},
    }
    path = directory / "agility.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def search(label: str, sampler: str, pruner: str, slices: int, n_trials: int) -> tuple[int, dict]:
    from agility_mlflow.sweep import run_sweep

    with tempfile.TemporaryDirectory() as tmp, start_standin(latency_s=0.0, answer=answer) as server:
        directory = Path(tmp)
        os.environ["AGILITY_CACHE_DIR"] = str(directory / "cache")
        config = write_project(directory, server.url, sampler, pruner, slices)
        result = run_sweep(config, tracking_uri=f"sqlite:///{directory / 'mlflow.db'}", n_trials=n_trials,
                           storage=f"sqlite:///{directory / 'optuna.db'}", progress=False)
        winner = dict(result.best[0].params)
        print(f"{label:<28} trials {result.n_trials:>3}  model calls {server.calls:>5}  best exact_match "
              f"{result.best[0].value:.3f}  winner {winner}")
        return server.calls, winner


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    exhaustive_calls, exhaustive_winner = search("exhaustive grid", "grid", "none", 1, 10_000)
    search_calls, search_winner = search("TPE + median pruning + cache", "tpe", "median", 4, 30)
    ratio = search_calls / exhaustive_calls
    expected = {k: BEST[k] for k in ("prompt", "instruction", "temperature", "max_tokens")}
    same = {k: search_winner[k] for k in expected} == {k: exhaustive_winner[k] for k in expected} == expected
    print(f"calls ratio (search / exhaustive): {ratio:.3f}  target < 0.40  {'OK' if ratio < 0.4 else 'MISSED'}")
    print(f"same winner as exhaustive and as designed: {same}")


if __name__ == "__main__":
    main()
