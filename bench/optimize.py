"""Does ``agility optimize`` beat the starting prompt, and a sweep over hand-written variants, on held-out samples?

For each of 3 seeds (each its own train/validation/test split), on the demo project (financial Q&A,
the local SmolLM2 model as target and reflection model, offline):

1. ``agility optimize`` of ``fin-qa`` within ``--max-calls`` model calls; its test run scores the best prompt.
2. The starting prompt scored on the same test samples.
3. ``agility sweep`` (grid) over the hand-written variants (both config prompts x instructions) on the
   train + validation samples only, with as many trials as the same call budget pays for; its best
   trial's prompt scored on the same test samples.

Prints the test score of each and the calls each spent, per seed and the median. ``--standin`` runs the
same on an OpenAI-protocol stand-in whose right instruction is known, and checks the loop finds it.

"calls sweep" is the sweep's budget (trials x samples), an upper bound: its cache hits (the starting prompt
was already answered by the optimization) cost no call.

Run:  python bench/optimize.py --limit 20 --max-calls 40      (minutes; add --standin for seconds)
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "projects" / "financial-qa"
INSTRUCTIONS = ["", "Answer with the figure and its unit only.", "Quote the figure exactly as the statement shows it."]


def demo_config(directory: Path, limit: int, max_calls: int, seed: int) -> Path:
    """The demo project with an ``optimize:`` section, its first ``limit`` rows, paths made absolute."""
    config = yaml.safe_load((DEMO / "agility.yaml").read_text(encoding="utf-8"))
    with (DEMO / config["dataset"]["path"]).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    _write_rows(directory / "golden.csv", rows)
    config["dataset"]["path"] = "golden.csv"
    for prompt in config["prompts"]:
        prompt["template"] = str(DEMO / prompt["template"])
    config.update(experiment=f"bench-optimize-{seed}", tracking_uri=f"sqlite:///{directory / 'mlflow.db'}")
    config["run"] = {**config.get("run", {}), "traces": False}
    # The local model reflects too; a template is short, so its replies are capped at 256 tokens (the default
    # 1,024 mostly buys rambling from a 135M model, at minutes a call on a loaded 2-core machine).
    config["optimize"] = {"objective": "numeric_match", "max_calls": max_calls, "minibatch": 3, "seed": seed,
                          "split": {"train": 0.5, "validation": 0.25, "test": 0.25, "seed": seed},
                          "reflection": {"provider": "local", "model_id": "smollm2-135m-instruct",
                                         "params": {"temperature": 0.7, "max_tokens": 256}}}
    path = directory / "agility.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def score_on(config: Path, template: Any, candidate: str, sample_ids: tuple[str, ...], metric: str) -> tuple[float, int]:
    """``template`` on ``candidate`` over ``sample_ids``: the metric's mean and the model calls it took (cache hits free)."""
    from agility_mlflow.backends import create_backend
    from agility_mlflow.cache import ResponseCache
    from agility_mlflow.evaluation import PlannedRun, evaluate, prepare
    from agility_mlflow.runner import Runner

    project = prepare(config, with_source=False)
    model = next(c for c in project.config.candidates if c.name == candidate)
    runner = Runner(project.config.run, ResponseCache(), progress=False)
    backend = create_backend(model, project.config.run)
    try:
        result = evaluate(PlannedRun("candidate", candidate, model, template), backend, project.dataset.subset(sample_ids),
                          project.metrics, runner, project.config.price_overrides())
    finally:
        backend.close()
    return result.metrics.get(metric, 0.0), runner.stats.calls


def sweep_best(config: Path, directory: Path, split: Any, candidate: str, budget: int, metric: str) -> tuple[Any, int]:
    """A grid sweep over the hand-written variants on train + validation only, within ``budget`` calls; the best prompt."""
    from agility_mlflow.evaluation import prepare
    from agility_mlflow.sweep import run_sweep
    from agility_mlflow.sweep._space import variant

    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    seen = set(split.train) | set(split.validation)
    with (directory / "golden.csv").open(newline="", encoding="utf-8") as handle:
        _write_rows(directory / "seen.csv", [r for r in csv.DictReader(handle) if r["sample_id"] in seen])
    cfg["dataset"]["path"] = "seen.csv"
    cfg.pop("optimize")
    cfg["sweep"] = {"candidates": [candidate], "instructions": INSTRUCTIONS, "objective": metric, "sampler": "grid", "pruner": "none",
                    "slices": 1}
    sweep_config = directory / "sweep.yaml"
    sweep_config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    n_trials = max(1, budget // len(seen))
    result = run_sweep(sweep_config, n_trials=n_trials, progress=False)
    templates = prepare(sweep_config, with_source=False).templates
    best = result.best[0].params
    return variant(templates[best["prompt"]], best["instruction"]), n_trials * len(seen)


def run_seed(seed: int, limit: int, max_calls: int, candidate: str) -> dict[str, float]:
    from agility_mlflow.evaluation import prepare
    from agility_mlflow.optimize import optimize_prompt

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as scratch:
        directory = Path(scratch)
        os.environ["AGILITY_CACHE_DIR"] = str(directory / "cache")
        config = demo_config(directory, limit, max_calls, seed)
        result = optimize_prompt(config, "fin-qa", candidate, progress=False)
        optimize_s = time.monotonic() - started
        start, _ = score_on(config, prepare(config, with_source=False).templates["fin-qa"], candidate, result.split.test, "numeric_match")
        template, sweep_calls = sweep_best(config, directory, result.split, candidate, max_calls, "numeric_match")
        swept, _ = score_on(config, template, candidate, result.split.test, "numeric_match")
    return {"seed": seed, "start": start, "optimized": result.test_metrics.get("numeric_match", 0.0), "sweep": swept,
            "optimize_calls": sum(result.calls.values()), "sweep_calls": sweep_calls, "best": result.best_prompt_uri,
            "prompts": result.n_prompts, "discarded": result.n_discarded, "optimize_s": optimize_s,
            "calls": dict(result.calls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="demo samples (split 50/25/25)")
    parser.add_argument("--max-calls", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, each in its own process")
    parser.add_argument("--standin", action="store_true", help="an OpenAI-protocol stand-in with a known right instruction")
    options = parser.parse_args()
    if options.standin:
        standin(options)
        return
    # Seeds are independent (own directory, cache and MLflow store): --jobs runs them side by side.
    with ProcessPoolExecutor(max_workers=options.jobs) as pool:
        results = list(pool.map(run_seed, range(options.seeds), *zip(*[(options.limit, options.max_calls, "local-smollm")] * options.seeds)))
    report(results, "numeric_match on the test split, demo project, local SmolLM2 (target and reflection)")


def report(results: list[dict[str, Any]], title: str) -> None:
    print(title)
    print(f"{'seed':>4}  {'start':>6}  {'optimized':>9}  {'sweep':>6}  {'calls opt':>9}  {'calls sweep':>11}  best prompt")
    for r in results:
        print(f"{r['seed']:>4}  {r['start']:>6.3f}  {r['optimized']:>9.3f}  {r['sweep']:>6.3f}  {r['optimize_calls']:>9}  {r['sweep_calls']:>11}  {r['best']}"
              + (f"  ({r['prompts']} prompts, {r['discarded']} proposals discarded, calls {r['calls']}, {r['optimize_s']:.0f} s)"
                 if "prompts" in r else ""))
    med = {k: statistics.median(r[k] for r in results) for k in ("start", "optimized", "sweep", "optimize_calls", "sweep_calls")}
    print(f"{'med':>4}  {med['start']:>6.3f}  {med['optimized']:>9.3f}  {med['sweep']:>6.3f}  {med['optimize_calls']:>9.0f}  {med['sweep_calls']:>11.0f}")


def standin(options: argparse.Namespace) -> None:
    """The loop on the test suite's stand-ins: the right instruction is known, so it must be found."""
    from tests.openai_server import start_standin
    from tests.optimize.test_optimize import MAGIC, make_answer, write_optimize_project

    results = []
    for seed in range(options.seeds):
        with tempfile.TemporaryDirectory(prefix="bench-optimize-") as scratch, start_standin(latency_s=0.0, answer=make_answer()) as server:
            directory = Path(scratch)
            os.environ["AGILITY_CACHE_DIR"] = str(directory / "cache")
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{directory / 'mlflow.db'}"
            config = write_optimize_project(directory, server.url, max_calls=options.max_calls, seed=seed,
                                            split={"train": 0.6, "validation": 0.2, "test": 0.2, "seed": seed})
            from agility_mlflow.evaluation import prepare
            from agility_mlflow.optimize import optimize_prompt

            result = optimize_prompt(config, "qa", "target", progress=False)
            start, _ = score_on(config, prepare(config, with_source=False).templates["qa"], "target", result.split.test, "numeric_match")
            results.append({"seed": seed, "start": start, "optimized": result.test_metrics.get("numeric_match", 0.0), "sweep": float("nan"),
                            "optimize_calls": sum(result.calls.values()), "sweep_calls": 0, "best": result.best_prompt_uri})
            assert result.test_metrics.get("numeric_match") == 1.0, f"seed {seed}: the loop did not find the known instruction {MAGIC!r}"
    report(results, "numeric_match on the test split, stand-in target whose right instruction is known (sweep: not run)")


if __name__ == "__main__":
    main()
