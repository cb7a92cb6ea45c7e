"""How long the CLI takes to answer before any work: ``agility --help``, and a one-sample replay run into a
new SQLite store (imports, the store's tables, a source run and a replayed candidate run logged). Each
figure is the median of ``--repeats`` processes, with [min-max]; target: ``--help`` under 1 s.

Run: python bench/startup.py [--repeats 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from bench._common import machine, spread, table_row
from bench.scale import write_replay_project

REPO = Path(__file__).resolve().parent.parent
TARGET_HELP_S = 1.0


def wall_s(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
           "AGILITY_CACHE_DIR": str(cwd / "cache")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "agility_mlflow", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"agility {' '.join(args)} failed: {result.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = range(parser.parse_args().repeats)
    print(f"{machine()}; median [min-max] of {len(repeats)} processes")
    with tempfile.TemporaryDirectory() as tmp:
        helps = [wall_s(["--help"], Path(tmp)) for _ in repeats]
        runs = []
        for r in repeats:
            directory = Path(tmp) / f"one-{r}"
            runs.append(wall_s(["run", str(write_replay_project(directory, 1, traces=True))], directory))
    verdict = "met" if statistics.median(helps) < TARGET_HELP_S else "missed"
    print(f"agility --help: {spread(helps)} s (target < {TARGET_HELP_S:.0f} s: {verdict})")
    print(f"agility run, one sample replayed (source + candidate) into a new SQLite store: {spread(runs)} s")
    table_row("start-up: `agility --help`; `agility run` of a one-sample replay project (source + candidate) into a new SQLite store",
              f"{spread(helps, 2)} s; {spread(runs, 1)} s", f"--help < {TARGET_HELP_S:.0f} s: {verdict}", "python bench/startup.py")


if __name__ == "__main__":
    main()
