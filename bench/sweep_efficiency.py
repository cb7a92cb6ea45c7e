"""How many model calls a pruned, cached Optuna search needs to find the best configuration,
against evaluating every configuration (exhaustive grid), on one problem with a known best.

The model is an OpenAI-compatible stand-in on 127.0.0.1 whose answers are right for a share of
samples set by the configuration (prompt, instruction, temperature, max_tokens), so the best
configuration is known in advance. The objective is noisy: whether a sample is answered right is drawn
(seeded) with the configuration's probability, so a configuration's measured score scatters around its
quality and the measured best need not be the designed one. Each of ``--seeds`` seeds (noise and search)
runs the exhaustive grid and the search; reported: how often the search found the exhaustive grid's
winner, and the calls ratio as median [min-max]. Target: ratio under 0.4.

Run: python bench/sweep_efficiency.py [--seeds 5]
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from bench._common import spread, table_row  # noqa: E402
from tests.openai_server import start_standin  # noqa: E402

N_SAMPLES = 40
BEST = {"prompt": "exact", "instruction": "Be brief.", "temperature": 0.2, "max_tokens": 64}


def quality(text: str, temperature: float, max_tokens: int) -> float:
    """The share of samples a configuration answers right; highest for BEST."""
    q = 0.3 + 0.2 * ("Answer exactly" in text) + 0.15 * ("Be brief." in text) + 0.1 * (max_tokens == 64)
    return q - 0.5 * abs(temperature - 0.2)


NOISE = {"seed": 0}


def answer(request: dict) -> str:
    text = request["messages"][-1]["content"]
    number = int(text.split("Q")[1].split(":")[0])
    draw = random.Random(f"{NOISE['seed']}|{text}|{request['temperature']}|{request['max_tokens']}").random()
    right = draw < quality(text, request["temperature"], request["max_tokens"])
    return f"A{number}" if right else "I am not sure."


def write_project(directory: Path, base_url: str, sampler: str, pruner: str, slices: int, seed: int) -> Path:
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
                  "objective": "exact_match", "sampler": sampler, "pruner": pruner, "slices": slices, "seed": seed},
    }
    path = directory / "agility.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def search(label: str, sampler: str, pruner: str, slices: int, n_trials: int, seed: int) -> tuple[int, dict]:
    from agility_mlflow.sweep import run_sweep

    with tempfile.TemporaryDirectory() as tmp, start_standin(latency_s=0.0, answer=answer) as server:
        directory = Path(tmp)
        os.environ["AGILITY_CACHE_DIR"] = str(directory / "cache")
        config = write_project(directory, server.url, sampler, pruner, slices, seed)
        result = run_sweep(config, tracking_uri=f"sqlite:///{directory / 'mlflow.db'}", n_trials=n_trials,
                           storage=f"sqlite:///{directory / 'optuna.db'}", progress=False)
        winner = dict(result.best[0].params)
        print(f"{label:<28} trials {result.n_trials:>3}  model calls {server.calls:>5}  best exact_match "
              f"{result.best[0].value:.3f}  winner {winner}")
        return server.calls, winner


def main() -> None:
    import argparse
    import statistics

    import optuna

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    options = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    keys = ("prompt", "instruction", "temperature", "max_tokens")
    ratios, found, designed = [], 0, 0
    for seed in range(options.seeds):
        NOISE["seed"] = seed
        exhaustive_calls, exhaustive_winner = search(f"seed {seed}: exhaustive grid", "grid", "none", 1, 10_000, seed)
        search_calls, search_winner = search(f"seed {seed}: TPE + median pruning", "tpe", "median", 4, 30, seed)
        ratios.append(search_calls / exhaustive_calls)
        found += {k: search_winner[k] for k in keys} == {k: exhaustive_winner[k] for k in keys}
        designed += {k: exhaustive_winner[k] for k in keys} == {k: BEST[k] for k in keys}
    print(f"search found the exhaustive grid's winner in {found} of {options.seeds} seeds "
          f"(the grid's measured winner was the designed best in {designed})")
    median = statistics.median(ratios)
    print(f"calls ratio (search / exhaustive): {median:.3f} [{min(ratios):.3f}-{max(ratios):.3f}]  target < 0.40  "
          f"{'OK' if median < 0.4 else 'MISSED'}")
    table_row(f"sweep efficiency on a noisy objective (each sample's right answer drawn, seeded, with the configuration's quality), "
              f"{options.seeds} seeds: TPE + median pruning + cache, 30 trials, against the exhaustive grid",
              f"found the grid's winner in {found} of {options.seeds} seeds (the grid's measured winner was the designed best in "
              f"{designed}); model calls {spread(ratios)} x the grid's", f"ratio < 0.4: {'met' if median < 0.4 else 'missed'}",
              "python bench/sweep_efficiency.py")


if __name__ == "__main__":
    main()
