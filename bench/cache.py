"""A re-run of an identical configuration: model calls made (target 0) and wall time against the first run.

Run: python bench/cache.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import argparse
import os
import tempfile
import time

from bench._common import quiet, spread, table_row, write_project
from tests.openai_server import standin_process

N, LATENCY_S, CONCURRENCY = 200, 0.1, 8


def once(tmp: Path, url: str, server: object) -> tuple[list[int], list[float], float]:
    """A first run and an identical re-run into one new store: their model calls and wall times, and the re-run's cache hits."""
    from agility_mlflow import tracking
    from agility_mlflow.evaluation import run_project

    tmp.mkdir()
    os.environ["AGILITY_CACHE_DIR"] = str(tmp / "cache")
    config = write_project(tmp, url, N, CONCURRENCY, traces=False, cache=True)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    tracking.configure(uri, "bench")
    walls, calls = [], []
    for _ in range(2):
        before = server.calls  # type: ignore[attr-defined]
        start = time.perf_counter()
        summary = run_project(config, tracking_uri=uri, progress=False)[0]
        walls.append(time.perf_counter() - start)
        calls.append(server.calls - before)  # type: ignore[attr-defined]
    return calls, walls, summary.metrics["n_cache_hits"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    quiet()
    print(f"N={N} latency={LATENCY_S * 1000:.0f} ms concurrency={CONCURRENCY}; median [min-max] of {options.repeats} repeats")
    with tempfile.TemporaryDirectory() as tmp, standin_process(latency_s=LATENCY_S) as server:
        results = [once(Path(tmp) / f"r{repeat}", server.url, server) for repeat in range(options.repeats)]
    for calls, walls, hits in results:
        print(f"first run: {calls[0]:4d} model calls {walls[0]:.3f} s; re-run: {calls[1]:4d} model calls {walls[1]:.3f} s "
              f"(cache hits {hits:.0f})")
    rerun_calls = max(calls[1] for calls, _, _ in results)
    ratio = spread([walls[1] / walls[0] for _, walls, _ in results], 2)
    verdict = "OK" if rerun_calls == 0 else "MISSED"
    print(f"re-run model calls target 0: {verdict}; wall time ratio re-run / first: {ratio}")
    table_row(f"re-running an identical configuration ({N} samples, {LATENCY_S * 1000:.0f} ms model)",
              f"{rerun_calls} model calls at most; wall time {ratio} x the first run's",
              f"0 calls: {'met' if rerun_calls == 0 else 'missed'}", "python bench/cache.py")


if __name__ == "__main__":
    main()
