"""Throughput of the full pipeline (render, call, score, log) against a model with a fixed 100 ms latency.

N=500 samples at concurrency 16: the ideal wall time is N x latency / concurrency = 3.125 s. Prints
agility's wall time over that ideal (target at most 1.10) and the same for MLflow's own
``mlflow.genai.evaluate`` with the same server, concurrency and scorers, measured in the same run.

Run: python bench/throughput.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import os
import tempfile
import time

from bench._common import quiet, write_project

from bench.standin_server import standin_process

N, LATENCY_S, CONCURRENCY = 500, 0.1, 16
IDEAL_S = N * LATENCY_S / CONCURRENCY


def sdk_floor_s(url: str) -> float:
    """The OpenAI SDK alone in 16 threads: what any Python client pays on this machine."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)

    def call(i: int) -> None:
        stream = client.chat.completions.create(model="standin", messages=[{"role": "user", "content": f"Answer: Question {i}?"}],
                                                stream=True, stream_options={"include_usage": True})
        for _ in stream:
            pass

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(call, range(N)))
    return time.perf_counter() - start


def agility_wall_s(url: str, directory: Path, traces: bool) -> float:
    from agility_mlflow.evaluation import run_project

    name = "traces" if traces else "no-traces"
    (directory / name).mkdir()
    config = write_project(directory / name, url, N, CONCURRENCY, traces=traces, cache=False)
    uri = f"sqlite:///{directory / name / 'agility.db'}"
    from agility_mlflow import tracking

    tracking.configure(uri, "bench")  # create the store's tables before the clock starts (a one-time cost)
    start = time.perf_counter()
    summaries = run_project(config, tracking_uri=uri, progress=False)
    wall = time.perf_counter() - start
    assert summaries[0].metrics["n_samples"] == N and summaries[0].metrics["n_errors"] == 0
    return wall


def mlflow_evaluate_wall_s(url: str, directory: Path) -> float:
    import mlflow
    import openai
    from mlflow.genai.scorers import scorer

    os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = str(CONCURRENCY)
    os.environ["MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION"] = "true"
    mlflow.set_tracking_uri(f"sqlite:///{directory / 'evaluate.db'}")
    mlflow.set_experiment("bench-evaluate")
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    mlflow.openai.autolog()

    def predict_fn(question: str) -> str:
        response = client.chat.completions.create(model="standin", messages=[{"role": "user", "content": f"Answer: {question}"}])
        return response.choices[0].message.content

    @scorer
    def exact_match(outputs: str, expectations: dict) -> float:
        return float(outputs.strip().lower() == expectations["expected_response"].strip().lower())

    data = [{"inputs": {"question": f"Question {i}?"}, "expectations": {"expected_response": "The answer is 42."}} for i in range(N)]
    start = time.perf_counter()
    mlflow.genai.evaluate(data=data, predict_fn=predict_fn, scorers=[exact_match])
    return time.perf_counter() - start


def main() -> None:
    quiet()
    with tempfile.TemporaryDirectory() as tmp, standin_process(latency_s=LATENCY_S) as server:
        os.environ["AGILITY_CACHE_DIR"] = str(Path(tmp) / "cache")
        floor = sdk_floor_s(server.url)
        plain = agility_wall_s(server.url, Path(tmp), traces=False)
        traced = agility_wall_s(server.url, Path(tmp), traces=True)
        evaluate = mlflow_evaluate_wall_s(server.url, Path(tmp))
    print(f"N={N} latency={LATENCY_S * 1000:.0f} ms concurrency={CONCURRENCY}: ideal N x latency / concurrency = {IDEAL_S:.3f} s")
    rows = [
        ("OpenAI SDK alone, 16 threads (the floor here)", floor),
        ("agility run: render, call, score, log run + table", plain),
        (f"agility run, plus one MLflow trace per sample ({N})", traced),
        ("mlflow.genai.evaluate, same server/workers/scorer", evaluate),
    ]
    for label, wall in rows:
        print(f"{label:<52} {wall:7.3f} s  ratio {wall / IDEAL_S:6.3f}")
    print(f"agility (no traces) target <= 1.10: {'OK' if plain / IDEAL_S <= 1.10 else 'MISSED'}; "
          f"agility over the SDK floor: {plain / floor:.3f}")


if __name__ == "__main__":
    main()
