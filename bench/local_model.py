"""Tokens per second of the ``local`` backend against llama-cpp-python called directly on the same prompts
(target at least 0.95), and peak memory. Runs alternate so machine noise hits both alike. Every side's
tokens are counted the same way: its answer's text re-tokenized by the model's own tokenizer.

Run: python bench/local_model.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import resource
import time

from bench._common import quiet, spread, table_row

PROMPTS = [f"In two sentences, explain what a company's {topic} tells an investor." for topic in
           ("gross margin", "current ratio", "free cash flow", "operating income", "long-term debt", "revenue growth")]
PARAMS = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64}  # the same sampling settings for both sides
ROUNDS = 3


def main() -> None:
    quiet()
    from agility_mlflow.backends.local import LocalBackend, _shared_model

    backend = LocalBackend("smollm2-135m-instruct")
    llm, lock = _shared_model(backend.path)
    backend.generate([{"role": "user", "content": "warm up"}], {"max_tokens": 4})

    def tokens(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    totals = {"agility local backend": [0, 0.0], "llama-cpp-python direct": [0, 0.0], "llama-cpp-python streamed": [0, 0.0]}
    round_ratios = []
    for _ in range(ROUNDS):
        before = {name: list(total) for name, total in totals.items()}
        for prompt in PROMPTS:
            messages = [{"role": "user", "content": prompt}]
            # llama.cpp reuses the evaluated prefix of the previous call: start every call cold, so no side
            # inherits the prompt the other just processed.
            llm.reset()
            start = time.perf_counter()
            generation = backend.generate(messages, PARAMS)
            totals["agility local backend"][1] += time.perf_counter() - start
            totals["agility local backend"][0] += tokens(generation.text)
            llm.reset()
            start = time.perf_counter()
            with lock:
                text = llm.create_chat_completion(messages=messages, **PARAMS)["choices"][0]["message"]["content"] or ""
            totals["llama-cpp-python direct"][1] += time.perf_counter() - start
            totals["llama-cpp-python direct"][0] += tokens(text)
            llm.reset()
            start = time.perf_counter()
            with lock:  # what streaming (for time to first token) costs by itself
                chunks = llm.create_chat_completion(messages=messages, stream=True, **PARAMS)
                text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
            totals["llama-cpp-python streamed"][1] += time.perf_counter() - start
            totals["llama-cpp-python streamed"][0] += tokens(text)
        rate = {name: (totals[name][0] - before[name][0]) / (totals[name][1] - before[name][1]) for name in totals}
        round_ratios.append(rate["agility local backend"] / rate["llama-cpp-python direct"])
    rates = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
    for name, rate in rates.items():
        print(f"{name:<26} {rate:7.1f} output tokens/s (incl. prompt processing and streaming)")
    ratio = rates["agility local backend"] / rates["llama-cpp-python direct"]
    print(f"ratio agility / direct: {ratio:.3f} over all rounds, {spread(round_ratios)} by round  target >= 0.95  "
          f"{'OK' if ratio >= 0.95 else 'MISSED'}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak_mb:.0f} MB")
    table_row("local backend / llama-cpp-python called directly, tokens/s, every side's tokens counted by re-tokenizing its answer",
              f"{ratio:.3f} over {ROUNDS} rounds of {len(PROMPTS)} prompts, {spread(round_ratios)} by round "
              f"({rates['agility local backend']:.1f} vs {rates['llama-cpp-python direct']:.1f} output tokens/s); peak RSS {peak_mb:.0f} MB",
              f">= 0.95: {'met' if ratio >= 0.95 else 'missed'}", "python bench/local_model.py")


if __name__ == "__main__":
    main()
