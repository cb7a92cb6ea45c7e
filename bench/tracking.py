"""What logging costs against a local ``mlflow server``: one run of 500 samples with all metrics and the
per-sample table, with and without one trace per sample. Counts only MLflow's own REST requests (every
``mlflow.utils.rest_utils.http_request``, from any thread; the model's calls go through the OpenAI SDK)
and prints their number and the seconds spent in them, next to the run's wall time. Requests made by the
background trace writer overlap the model calls, so their seconds are not all on the run's path.

Run: python bench/tracking.py
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
from tests.helpers import MlflowServer
from tests.openai_server import standin_process

N, LATENCY_S, CONCURRENCY = 500, 0.1, 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    quiet()
    import mlflow.utils.rest_utils as rest

    from agility_mlflow import evaluation, tracking

    spent = {"requests": 0, "seconds": 0.0}
    original = rest.http_request

    def counted(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent["requests"] += 1
            spent["seconds"] += time.perf_counter() - start

    rest.http_request = counted
    with tempfile.TemporaryDirectory() as tmp, standin_process(latency_s=LATENCY_S) as model:
        with MlflowServer(Path(tmp) / "server", workers=2) as url:
            os.environ["AGILITY_CACHE_DIR"] = str(Path(tmp) / "cache")
            tracking.configure(url, "bench")
            warmup = Path(tmp) / "warmup"
            warmup.mkdir()
            evaluation.run_project(write_project(warmup, model.url, 10, CONCURRENCY), tracking_uri=url, progress=False)
            print(f"one run of N={N} samples (model latency {LATENCY_S * 1000:.0f} ms, concurrency {CONCURRENCY}) to a local mlflow server; "
                  f"median [min-max] of {repeats} repeats")
            measured: dict[bool, dict[str, list[float]]] = {traces: {"requests": [], "seconds": [], "wall": []} for traces in (False, True)}
            for repeat in range(repeats):
                for traces in (False, True):
                    directory = Path(tmp) / f"r{repeat}-traces-{traces}"
                    directory.mkdir()
                    config = write_project(directory, model.url, N, CONCURRENCY, traces=traces, cache=False)
                    spent.update(requests=0, seconds=0.0)
                    start = time.perf_counter()
                    evaluation.run_project(config, tracking_uri=url, progress=False)
                    measured[traces]["wall"].append(time.perf_counter() - start)
                    measured[traces]["requests"].append(spent["requests"])
                    measured[traces]["seconds"].append(spent["seconds"])
    figures = []
    for traces, values in measured.items():
        label = f"with {N} traces" if traces else "without traces"
        share = spread([100 * s / w for s, w in zip(values["seconds"], values["wall"])], 1)
        line = (f"{label}: {spread(values['requests'], 0)} MLflow REST requests, {spread(values['seconds'], 2)} s in them "
                f"({share} % of the run's {spread(values['wall'], 2)} s wall)")
        print(line)
        figures.append(line)
    table_row(f"one {N}-sample run logged to a local `mlflow server`: MLflow REST requests only", "; ".join(figures), "batched",
              "python bench/tracking.py")

if __name__ == "__main__":
    main()
