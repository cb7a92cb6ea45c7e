"""The judge: a model that scores answers, called through the same runner as the candidates.

Every judge call (``llm_judge``, Ragas, DeepEval) goes through :meth:`Judge.complete`, so it gets
the runner's retries, adaptive concurrency and response cache, and its tokens and cost are counted
apart from the application's (``judge_cost_usd_total``).

Example:
    >>> from agility_mlflow.backends.replay import ReplayBackend
    >>> from agility_mlflow.config import JudgeConfig, RunSettings
    >>> from agility_mlflow.runner import Runner
    >>> class Fixed(ReplayBackend):
    ...     provider = "fixed"
    ...     def generate(self, messages, params, *, sample=None):
    ...         from agility_mlflow.backends import Generation
    ...         return Generation('{"reasoning": "matches", "score": 9}', 0.1, None, 100, 10, "stop")
    >>> judge = Judge(JudgeConfig(), Runner(RunSettings(cache=False), progress=False), Fixed("j"), None)
    >>> usage = JudgeUsage(); token = current_usage.set(usage)
    >>> judge.structured([{"role": "user", "content": "rate"}], {"type": "object"})
    {'reasoning': 'matches', 'score': 9}
    >>> usage.columns()["judge_input_tokens"], usage.columns()["judge_cost_usd"]
    (100, None)
"""

from __future__ import annotations

import contextvars
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agility_mlflow.backends import Backend, Generation
from agility_mlflow.config import JudgeConfig
from agility_mlflow.errors import AgilityError
from agility_mlflow.pricing import Price, cost_usd
from agility_mlflow.runner import Request, Runner

Message = Mapping[str, str]


class JudgeReplyError(AgilityError):
    """The judge did not give a usable reply (after its retries): the sample's score is an error."""


@dataclass
class JudgeUsage:
    """Judge calls, tokens and cost for one sample, counted across the threads that score it.

    The usage of the sample being scored is found through a context variable, which follows the
    work into the threads Ragas and DeepEval hand it to (``asyncio.to_thread`` copies the context).
    """

    calls: int = 0
    cached: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    malformed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, generation: Generation, price: Price | None, cached: bool = False) -> None:
        """Count one judge reply; a cached one costs what it cost when made, so runs compare alike."""
        with self.lock:
            self.calls += 1
            self.cached += int(cached)
            self.input_tokens += generation.input_tokens or 0
            self.output_tokens += generation.output_tokens or 0
            cost = cost_usd(price, generation.input_tokens, generation.output_tokens) if price else None
            self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost

    def columns(self) -> dict[str, Any]:
        """The sample's ``judge_calls``, ``judge_cached``, ``judge_input_tokens``, ``judge_output_tokens``, ``judge_cost_usd``, ``judge_malformed``."""
        return {
            "judge_calls": self.calls,
            "judge_cached": self.cached,
            "judge_input_tokens": self.input_tokens,
            "judge_output_tokens": self.output_tokens,
            "judge_cost_usd": self.cost_usd,
            "judge_malformed": self.malformed,
        }


current_usage: contextvars.ContextVar[JudgeUsage | None] = contextvars.ContextVar("agility_judge_usage", default=None)


class Judge:
    """A judge model behind the runner.

    Args:
        config: The ``judge:`` section.
        runner: The runner the candidates use (its cache and retry settings).
        backend: The judge's backend.
        price: The judge model's price; ``None`` leaves ``judge_cost_usd_total`` unknown.
        style_guide: The style guide text (the config's ``style_guide``, read from its file if it is one).
    """

    def __init__(self, config: JudgeConfig, runner: Runner, backend: Backend, price: Price | None, style_guide: str | None = None) -> None:
        self.config = config
        self.style_guide = style_guide
        self.runner = runner
        self.backend = backend
        self.price = price
        self.embedder: Any = None

    @property
    def name(self) -> str:
        """``provider:model_id``, the judge's name in assessments and tags."""
        return f"{self.config.provider}:{self.config.model_id}"

    def complete(self, messages: Sequence[Message], *, schema: Mapping[str, Any] | None = None) -> str:
        """The judge's reply text; a :class:`JudgeReplyError` when the call failed after its retries."""
        params = self.config.params.as_dict()
        if schema is not None:
            params["response_schema"] = bounded_schema(schema)
        outcome = self.runner.call(self.backend, params, Request("judge", [dict(m) for m in messages], {}))
        if outcome.generation is None:
            raise JudgeReplyError(f"judge {self.name}: {outcome.error}")
        usage = current_usage.get()
        if usage is not None:
            usage.add(outcome.generation, self.price, outcome.cached)
        return outcome.generation.text

    def structured(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any],
        validate: Callable[[Any], Any] = lambda value: value,
    ) -> Any:
        """The judge's reply parsed as JSON and passed through ``validate``, asked again when malformed.

        A malformed reply is shown back to the judge with the parse error, so the retry is a new
        request (never the same cached bad answer); after ``max_attempts`` replies a
        :class:`JudgeReplyError` names the last problem.
        """
        conversation = [dict(m) for m in messages]
        problem = ""
        for _ in range(self.config.max_attempts):
            reply = self.complete(conversation, schema=schema)
            try:
                return validate(parse_json(reply))
            except (ValueError, TypeError, KeyError) as exc:
                problem = str(exc).splitlines()[0]
                usage = current_usage.get()
                if usage is not None:
                    with usage.lock:
                        usage.malformed += 1
                conversation += [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": f"That reply was not usable ({problem}). Reply with only the JSON object."},
                ]
        raise JudgeReplyError(f"judge {self.name} gave no usable reply in {self.config.max_attempts} attempts: {problem}")


MAX_STRING = 400
MAX_ITEMS = 12


def bounded_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with a length cap on every unbounded string and array.

    Ragas's and DeepEval's schemas leave lengths open; a small judge under a grammar then rambles
    until ``max_tokens`` cuts the JSON off. Caps keep every reply short enough to close.

    Example:
        >>> bounded_schema({"type": "object", "properties": {"reason": {"type": "string"}, "claims": {"type": "array", "items": {"type": "string"}}}})
        {'type': 'object', 'properties': {'reason': {'type': 'string', 'maxLength': 400}, 'claims': {'type': 'array', 'items': {'type': 'string', 'maxLength': 400}, 'maxItems': 12}}}
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        out = {key: walk(value) for key, value in node.items()}
        if out.get("type") == "string" and "maxLength" not in out and "enum" not in out:
            out["maxLength"] = MAX_STRING
        if out.get("type") == "array" and "maxItems" not in out:
            out["maxItems"] = MAX_ITEMS
        return out

    return walk(schema)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json(text: str) -> Any:
    """The JSON value in a judge's reply: bare, in a code fence, or the outermost ``{...}`` of chatty text.

    Example:
        >>> parse_json('Sure! ```json\\n{"score": 7}\\n```')
        {'score': 7}
        >>> parse_json('My verdict: {"score": 3, "reasoning": "wrong year"} Thanks.')
        {'score': 3, 'reasoning': 'wrong year'}
    """
    text = text.strip()
    candidates = [text]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            # strict=False: small models under a grammar put raw newlines inside strings; the meaning is plain.
            return json.loads(candidate, strict=False)
        except ValueError:
            continue
    raise ValueError(f"not JSON: {text[:80]!r}" if text else "empty reply")


_FAMILY_PREFIXES = ("us.", "eu.", "apac.", "global.", "jp.", "au.", "ca.")


def model_family(model_id: str) -> str:
    """The model family of an id, to warn when a model would judge its own kind.

    Example:
        >>> [model_family(m) for m in ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "gpt-4o-mini", "smollm2-135m-instruct", "amazon.nova-lite-v1:0")]
        ['claude', 'gpt', 'smollm', 'nova']
    """
    name = model_id.lower().rsplit("/", 1)[-1]
    for prefix in _FAMILY_PREFIXES:
        name = name.removeprefix(prefix)
    if "." in name.split("-", 1)[0]:  # a Bedrock vendor prefix: anthropic.claude-...
        name = name.split(".", 1)[1]
    match = re.match(r"[a-z]+", name)
    return match.group(0) if match else name
