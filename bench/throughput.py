"""Throughput of the full pipeline (render, call, score, log) against a model with a fixed 100 ms latency.

N=500 samples at concurrency 16: the ideal wall time is N x latency / concurrency = 3.125 s. Each
repeat runs, side by side: the OpenAI SDK alone (the floor any Python client pays here), agility
without traces, agility with one trace per sample (the default), and ``mlflow.genai.evaluate`` like
for like (the same streamed calls with usage, one CHAT_MODEL span per sample with its token usage,
the same concurrency and an exact-match scorer); and agility with ``llm_judge`` as well, its judge a
second model on the stand-in (as many calls again, made once every answer is in, so that they
do not slow the candidate's measured latency: two phases, 2 x the one-model ideal at best). Prints each wall time over the ideal as the median of the repeats with
[min-max], and agility over the SDK floor of the same repeat.

Then the whole ``agility run`` process as a user starts it, with the default config and a source
run replayed from the dataset's recorded answers (its 500 traces logged too) into a new SQLite
store: its wall time less its startup (the same command on a one-sample dataset: imports, the
store's tables, the run's logging), over the ideal; target at most 2.

Run: python bench/throughput.py [--repeats 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import argparse
import os
import statistics
import tempfile
import time

from bench._common import VERDICT, machine, quiet, spread, table_row, write_project
from tests.openai_server import standin_process

REPO = Path(__file__).resolve().parent.parent

N, LATENCY_S, CONCURRENCY = 500, 0.1, 16
IDEAL_S = N * LATENCY_S / CONCURRENCY
TARGET_TRACED = 1.5
TARGET_PROCESS = 2.0


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

    call(-1)  # openai builds its response models on first use, racing when 16 threads do it at once
    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(call, range(N)))
    return time.perf_counter() - start


def agility_wall_s(url: str, directory: Path, traces: bool, judge: bool = False) -> float:
    from agility_mlflow import tracking
    from agility_mlflow.evaluation import run_project

    directory.mkdir(parents=True)
    config = write_project(directory, url, N, CONCURRENCY, traces=traces, cache=False, judge=judge)
    uri = f"sqlite:///{directory / 'agility.db'}"
    tracking.configure(uri, "bench")  # create the store's tables before the clock starts (a one-time cost)
    start = time.perf_counter()
    summaries = run_project(config, tracking_uri=uri, progress=False)
    wall = time.perf_counter() - start
    metrics = summaries[0].metrics
    assert metrics["n_samples"] == N and metrics["n_errors"] == 0
    assert not judge or (metrics["judge_calls"] == N and metrics["llm_judge_n_errors"] == 0)
    return wall


def process_wall_s(url: str, directory: Path, n: int) -> float:
    """Wall time of one ``agility run`` process (source replayed, candidate called) on ``n`` samples, new store."""
    import subprocess

    directory.mkdir(parents=True)
    config = write_project(directory, url, n, CONCURRENCY, traces=True, cache=False, source=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{directory / 'mlflow.db'}", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "agility_mlflow", "run", str(config)], cwd=directory, env=env,
                            capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"agility run failed: {result.stderr[-2000:]}")
    return wall


def mlflow_evaluate_wall_s(url: str, directory: Path) -> float:
    """``mlflow.genai.evaluate`` doing what agility does: streamed calls with usage, one CHAT_MODEL span each."""
    import mlflow
    import openai
    from mlflow.entities import SpanType
    from mlflow.genai.scorers import scorer

    os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = str(CONCURRENCY)
    os.environ["MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION"] = "true"
    directory.mkdir(parents=True)
    mlflow.set_tracking_uri(f"sqlite:///{directory / 'evaluate.db'}")
    mlflow.set_experiment("bench-evaluate")
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)

    @mlflow.trace(span_type=SpanType.CHAT_MODEL)
    def predict_fn(question: str) -> str:
        stream = client.chat.completions.create(model="standin", messages=[{"role": "user", "content": f"Answer: {question}"}],
                                                stream=True, stream_options={"include_usage": True})
        text, usage = "", None
        for chunk in stream:
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
            usage = chunk.usage or usage
        span = mlflow.get_current_active_span()
        span.set_attributes({"mlflow.llm.model": "standin", "mlflow.llm.provider": "openai", "mlflow.chat.tokenUsage": {
            "input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens}})
        return text

    @scorer
    def exact_match(outputs: str, expectations: dict) -> float:
        return float(outputs.strip().lower() == expectations["expected_response"].strip().lower())

    data = [{"inputs": {"question": f"Question {i}?"}, "expectations": {"expected_response": "The answer is 42."}} for i in range(N)]
    start = time.perf_counter()
    mlflow.genai.evaluate(data=data, predict_fn=predict_fn, scorers=[exact_match])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    quiet()
    print(f"{machine()}\nN={N} latency={LATENCY_S * 1000:.0f} ms concurrency={CONCURRENCY}: "
          f"ideal N x latency / concurrency = {IDEAL_S:.3f} s; median [min-max] of {options.repeats} repeats")
    sides = ["sdk", "plain", "traced", "evaluate", "judged"]
    walls: dict[str, list[float]] = {side: [] for side in sides}
    startups: list[float] = []
    processes: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, standin_process(latency_s=LATENCY_S, verdict=VERDICT) as server:
        os.environ["AGILITY_CACHE_DIR"] = str(Path(tmp) / "cache")
        for repeat in range(options.repeats):
            root = Path(tmp) / f"r{repeat}"
            walls["sdk"].append(sdk_floor_s(server.url))
            walls["plain"].append(agility_wall_s(server.url, root / "plain", traces=False))
            walls["traced"].append(agility_wall_s(server.url, root / "traced", traces=True))
            walls["evaluate"].append(mlflow_evaluate_wall_s(server.url, root / "evaluate"))
            walls["judged"].append(agility_wall_s(server.url, root / "judged", traces=True, judge=True))
            startups.append(process_wall_s(server.url, root / "process-1", 1))
            processes.append(process_wall_s(server.url, root / "process", N))
    ratio = {side: [wall / IDEAL_S for wall in values] for side, values in walls.items()}
    over_floor = {side: [wall / floor for wall, floor in zip(walls[side], walls["sdk"])] for side in sides}
    rows = [
        ("sdk", "OpenAI SDK alone, 16 threads (the floor here)"),
        ("plain", "agility run, traces off: render, call, score, log"),
        ("traced", f"agility run, default: plus one trace per sample ({N})"),
        ("evaluate", "mlflow.genai.evaluate, same calls, spans, scorer"),
        ("judged", "agility default plus llm_judge (a 2nd 100 ms model)"),
    ]
    print(f"{'':<54} {'wall / ideal':<22} {'wall / SDK floor':<22}")
    for side, label in rows:
        print(f"{label:<54} {spread(ratio[side]):<22} {spread(over_floor[side]):<22}")
    traced = statistics.median(ratio["traced"])
    print(f"default (traces on) target <= {TARGET_TRACED} x ideal: {'OK' if traced <= TARGET_TRACED else 'MISSED'} (median {traced:.3f}); "
          f"traces cost {spread([t / p for t, p in zip(walls['traced'], walls['plain'])])} x the traceless run")
    process = [(wall - startup) / IDEAL_S for wall, startup in zip(processes, startups)]
    print(f"whole `agility run` process, source replayed + candidate, {N} traces each: {spread(processes)} s, "
          f"startup (1 sample) {spread(startups)} s; (wall - startup) / ideal {spread(process)}; "
          f"target <= {TARGET_PROCESS}: {'OK' if statistics.median(process) <= TARGET_PROCESS else 'MISSED'}")
    traces_cost = spread([t / p for t, p in zip(walls["traced"], walls["plain"])], 2)
    table_row(f"{N} samples, {LATENCY_S * 1000:.0f} ms model, concurrency {CONCURRENCY}: wall time / ideal ({IDEAL_S:.3f} s)",
              f"OpenAI SDK alone {spread(ratio['sdk'], 2)}; agility, traces off {spread(ratio['plain'], 2)} ({spread(over_floor['plain'], 2)} x the SDK); "
              f"agility default, one trace per sample {spread(ratio['traced'], 2)} ({spread(over_floor['traced'], 2)} x the SDK; traces cost "
              f"{traces_cost} x the traceless run); `mlflow.genai.evaluate` with the same streamed calls, one CHAT_MODEL span each, "
              f"same scorer {spread(ratio['evaluate'], 2)}; agility default plus `llm_judge`, its judge a second 100 ms model "
              f"(N more calls, once every answer is in: 2 x at best) {spread(ratio['judged'], 2)}",
              f"default <= {TARGET_TRACED} x ideal: {'met' if traced <= TARGET_TRACED else 'missed'} (median {traced:.2f})",
              "python bench/throughput.py")
    table_row(f"the whole `agility run` process, default config, {N} samples: a source replayed from the recorded answers and the "
              f"candidate called, {N} traces each, into a new SQLite store",
              f"{spread(processes, 1)} s; startup (the same command on 1 sample) {spread(startups, 1)} s; (wall - startup) / ideal "
              f"{spread(process, 2)}",
              f"<= {TARGET_PROCESS:.0f} x ideal plus startup: {'met' if statistics.median(process) <= TARGET_PROCESS else 'missed'}",
              "python bench/throughput.py")


if __name__ == "__main__":
    main()
