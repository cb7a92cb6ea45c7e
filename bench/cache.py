"""A re-run of an identical configuration: model calls made (target 0) and wall time against the first run.

Run: python bench/cache.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import os
import tempfile
import time

from bench._common import quiet, write_project
from tests.openai_server import standin_process

N, LATENCY_S, CONCURRENCY = 200, 0.1, 8


def main() -> None:
    quiet()
    from agility_mlflow import tracking
    from agility_mlflow.evaluation import run_project

    with tempfile.TemporaryDirectory() as tmp, standin_process(latency_s=LATENCY_S) as server:
        os.environ["AGILITY_CACHE_DIR"] = str(Path(tmp) / "cache")
        config = write_project(Path(tmp), server.url, N, CONCURRENCY, traces=False, cache=True)
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        tracking.configure(uri, "bench")
        walls, calls = [], []
        for _ in range(2):
            before = server.calls
            start = time.perf_counter()
            summary = run_project(config, tracking_uri=uri, progress=False)[0]
            walls.append(time.perf_counter() - start)
            calls.append(server.calls - before)
    print(f"N={N} latency={LATENCY_S * 1000:.0f} ms concurrency={CONCURRENCY}")
    print(f"first run:  {calls[0]:4d} model calls  {walls[0]:.3f} s")
    print(f"re-run:     {calls[1]:4d} model calls  {walls[1]:.3f} s  (cache hits {summary.metrics['n_cache_hits']:.0f})")
    print(f"re-run model calls target 0: {'OK' if calls[1] == 0 else 'MISSED'}; wall time ratio re-run / first: {walls[1] / walls[0]:.3f}")


if __name__ == "__main__":
    main()
