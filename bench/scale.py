"""How wall time and peak memory grow with the number of samples, and `agility compare` on big runs.

Each figure is one ``agility`` process, as a user runs it, timed with its peak RSS:
- replay: a source run and a replayed candidate from the dataset's recorded answers (no model
  calls), at N = 1k, 10k and 100k samples, with ``run.traces: false`` (the same work at every N;
  ``bench/throughput.py`` measures what traces cost);
- stand-in: an OpenAI-compatible stand-in with no latency at N = 1k, 10k and 100k with traces off
  (calls through the SDK cost ~3-4 ms of CPU each here, so the 100k run, minutes long, is measured
  once), and at 1k and 10k with one trace per sample;
- ``agility compare`` of the two 100k-sample runs (target: at most 60 s and 1 GB).

Growth is each step's wall-time and memory ratio for a 10x step in N, and what each added sample
costs: linear growth past the fixed start-up keeps that cost flat from one step to the next (the
table says "met" within 25 %).

Each figure is the median of ``--repeats`` runs, with [min-max].

Run: python bench/scale.py [--sizes 1000,10000,100000] [--repeats 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import argparse
import json
import os
import statistics
import subprocess
import tempfile

import yaml

from bench._common import machine, spread, table_row
from tests.openai_server import standin_process

REPO = Path(__file__).resolve().parent.parent
COMPARE_TARGET_S, COMPARE_TARGET_MB = 60.0, 1024.0


def write_replay_project(directory: Path, n: int, traces: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "golden.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(n):
            answer = "The answer is 42." if i % 3 else f"It is {i}."
            handle.write(json.dumps({"sample_id": f"s{i}", "question": f"Question {i}?", "answer_ground_truth": "The answer is 42.",
                                     "answer_source_llm": answer, "latency_source_llm": 0.8 + (i % 7) / 10,
                                     "input_token_source_llm": 40 + i % 11, "output_token_source_llm": 6 + i % 5}) + "\n")
    config = {
        "experiment": "scale",
        "dataset": {"path": "golden.jsonl"},
        "prompts": [{"name": "scale-qa", "template": "Answer: {{question}}"}],
        "source": {"provider": "replay", "model_id": "gpt-4o-mini"},
        "candidates": [{"name": "replayed", "provider": "replay", "model_id": "gpt-4.1-mini"}],
        "metrics": ["exact_match", "token_f1"],
        "run": {"concurrency": 16, "traces": traces, "cache": False},
    }
    path = directory / "agility.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def write_standin_project(directory: Path, n: int, base_url: str, traces: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = (json.dumps({"sample_id": f"s{i}", "question": f"Question {i}?", "answer_ground_truth": "The answer is 42."}) for i in range(n))
    (directory / "golden.jsonl").write_text("\n".join(rows), encoding="utf-8")
    config = {
        "experiment": "scale",
        "dataset": {"path": "golden.jsonl"},
        "prompts": [{"name": "scale-qa", "template": "Answer: {{question}}"}],
        "candidates": [{"name": "standin", "provider": "openai", "model_id": "standin", "base_url": base_url, "api_key": "x"}],
        "metrics": ["exact_match", "token_f1"],
        "pricing": {"standin": {"input": 0.15, "output": 0.6}},
        "run": {"concurrency": 16, "traces": traces, "cache": False},
    }
    path = directory / "agility.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def agility(*args: str, cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``agility`` process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
           "AGILITY_CACHE_DIR": str(cwd / "cache")}
    result = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", sys.executable, "-m", "agility_mlflow", *args],
                            capture_output=True, text=True, cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"agility {' '.join(args)} failed: {result.stderr[-2000:]}")
    wall, rss_kb = result.stderr.strip().splitlines()[-1].split()[1:]
    return float(wall), float(rss_kb) / 1024


LINEAR_TOLERANCE = 1.25  # each added sample may cost up to 25 % more at the next 10x step before growth counts as faster than linear


def size_text(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def medians(results: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Per N, the median wall time and the median peak RSS of its repeats."""
    return [(statistics.median(wall for wall, _ in runs), statistics.median(rss for _, rss in runs)) for runs in results]


def growth(label: str, sizes: list[int], results: list[list[tuple[float, float]]]) -> tuple[str, str]:
    """Print each N's repeats and each 10x step's growth; returns the table's figure and its growth verdict."""
    for n, runs in zip(sizes, results):
        walls, rss = [wall for wall, _ in runs], [mb for _, mb in runs]
        print(f"{label} N={n:>7}  wall {spread(walls, 1)} s  ({statistics.median(walls) / n * 1000:6.2f} ms/sample)  "
              f"peak RSS {spread(rss, 0)} MB")
    steps, marginal = [], []
    middle = medians(results)
    for (n0, (w0, m0)), (n1, (w1, m1)) in zip(zip(sizes, middle), zip(sizes[1:], middle[1:])):
        marginal.append((w1 - w0) / (n1 - n0))
        # The marginal cost per added sample: flat or falling means linear growth past the fixed startup cost.
        step = (f"N {n0} -> {n1} (x{n1 / n0:.0f}): wall x{w1 / w0:.2f}, peak RSS x{m1 / m0:.2f}; "
                f"each added sample {(w1 - w0) / (n1 - n0) * 1000:.2f} ms and {(m1 - m0) / (n1 - n0) * 1024:.1f} KB")
        print(f"{label} {step}")
        steps.append(step)
    walls = ", ".join(f"{wall:.1f}" for wall, _ in middle)
    rss = ", ".join(f"{mb:.0f}" for _, mb in middle)
    return f"{walls} s; peak RSS {rss} MB (medians); " + "; ".join(steps), linear(marginal)


def linear(figure_marginals: list[float]) -> str:
    """The table's verdict on growth: each 10x step's cost per added sample against the step before."""
    # A step whose added samples cost nothing measurable (start-up noise dominates) says nothing of growth.
    ratios = [later / earlier for earlier, later in zip(figure_marginals, figure_marginals[1:]) if earlier > 0]
    if not ratios:
        return "linear: not judged (one step)"
    worst = max(ratios)
    return f"linear: {'met' if worst <= LINEAR_TOLERANCE else 'missed'} (added sample x{worst:.2f} at the next step)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    repeats = range(options.repeats)
    print(f"{machine()}; median [min-max] of {options.repeats} repeats")
    sizes_text = ", ".join(size_text(n) for n in sizes)
    with tempfile.TemporaryDirectory() as tmp:
        replay = [[agility("run", str(write_replay_project(Path(tmp) / f"replay-{n}-{r}", n, traces=False)), cwd=Path(tmp) / f"replay-{n}-{r}")
                   for r in repeats] for n in sizes]
        figure, verdict = growth("replay", sizes, replay)
        table_row(f"replay runs (source + replayed candidate, traces off) at N = {sizes_text}", figure, verdict, "python bench/scale.py")
        largest = Path(tmp) / f"replay-{sizes[-1]}-0"
        compares = [agility("compare", "agility.yaml", "--output", str(largest / f"report-{r}"), cwd=largest) for r in repeats]
        wall, rss = statistics.median(w for w, _ in compares), max(m for _, m in compares)
        ok = wall <= COMPARE_TARGET_S and rss <= COMPARE_TARGET_MB
        figure = f"{spread([w for w, _ in compares], 1)} s, peak RSS {spread([m for _, m in compares], 0)} MB"
        print(f"compare of two {sizes[-1]}-sample runs: {figure} "
              f"(target <= {COMPARE_TARGET_S:.0f} s and {COMPARE_TARGET_MB:.0f} MB: {'OK' if ok else 'MISSED'})")
        table_row(f"`agility compare` of two {size_text(sizes[-1])}-sample runs", figure,
                  f"<= {COMPARE_TARGET_S:.0f} s and {COMPARE_TARGET_MB / 1024:.0f} GB: {'met' if ok else 'missed'}", "python bench/scale.py")
        with standin_process(latency_s=0.0) as server:
            for traces in (False, True):
                # Traced, the calls' N is capped at 10k: 100k traces in one SQLite file is a test of SQLite.
                standin_sizes = sizes if not traces else [n for n in sizes if n <= 10_000]
                standin = []
                for n in standin_sizes:
                    # 100k calls through the SDK take minutes each: measured once.
                    runs = repeats if n <= 10_000 else range(1)
                    standin.append([agility("run", str(write_standin_project(Path(tmp) / f"standin-{traces}-{n}-{r}", n, server.url, traces)),
                                            cwd=Path(tmp) / f"standin-{traces}-{n}-{r}") for r in runs])
                label = "one trace per sample" if traces else "traces off"
                figure, verdict = growth(f"stand-in, {label}", standin_sizes, standin)
                once = [size_text(n) for n in standin_sizes if n > 10_000]
                table_row(f"stand-in runs (OpenAI SDK to a 0 ms stand-in, concurrency 16, {label}) at N = "
                          f"{', '.join(size_text(n) for n in standin_sizes)}" + (f" ({', '.join(once)} run once)" if once else ""),
                          figure, verdict, "python bench/scale.py")

if __name__ == "__main__":
    main()
