"""The real local model in-process: answers, measured tokens and time to first token, determinism."""

from __future__ import annotations

from agility_mlflow.backends.local import LocalBackend

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}]


def test_local_model_answers_with_measured_tokens_and_ttft() -> None:
    backend = LocalBackend("smollm2-135m-instruct")
    generation = backend.generate(MESSAGES, {"temperature": 0.0, "max_tokens": 16})
    assert generation.text.strip()
    assert 0 < generation.ttft_s <= generation.latency_s
    assert 0 < generation.output_tokens <= 16
    assert generation.finish_reason in {"stop", "length"}
    # Token counts from the stream equal llama.cpp's own usage for the same call without streaming.
    from agility_mlflow.backends.local import _shared_model

    llm, lock = _shared_model(backend.path)
    with lock:
        usage = llm.create_chat_completion(messages=MESSAGES, temperature=0.0, max_tokens=16)["usage"]
    assert generation.input_tokens == usage["prompt_tokens"]
    assert generation.output_tokens == usage["completion_tokens"]


def test_local_model_is_deterministic_at_temperature_zero() -> None:
    backend = LocalBackend("smollm2-135m-instruct")
    params = {"temperature": 0.0, "max_tokens": 12}
    assert backend.generate(MESSAGES, params).text == backend.generate(MESSAGES, params).text
