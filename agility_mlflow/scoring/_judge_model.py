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
current_sample: contextvars.ContextVar[Any] = contextvars.ContextVar("agility_judge_sample", default=None)
"""The :class:`~agility_mlflow.scoring.JudgeInput` being scored, so a reply that copies the prompt's own text is told from one quoting the sample."""


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

    def _own_texts(self) -> list[str]:
        """The user's own words in the judge's prompts (criteria, style guide): a judge may repeat them."""
        return [text for text in (self.config.criteria, *self.config.geval.values(), self.style_guide) if text]

    def structured(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any],
        validate: Callable[[Any], Any] = lambda value: value,
    ) -> Any:
        """The judge's reply parsed as JSON and passed through ``validate``, asked again when malformed.

        A malformed reply is shown back to the judge with the parse error, so the retry is a new
        request (never the same cached bad answer); after ``max_attempts`` replies a
        :class:`JudgeReplyError` names the last problem. A reply that repeats the metric's own
        instructions or example text instead of judging (:func:`echoed_prompt_text`) is malformed too.
        """
        conversation = [dict(m) for m in messages]
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        sample = current_sample.get()
        problem = ""
        for _ in range(self.config.max_attempts):
            reply = self.complete(conversation, schema=schema)
            try:
                value = parse_json(reply)
                if sample is not None and (echo := echoed_prompt_text(value, prompt, [*_sample_texts(sample), *self._own_texts()])):
                    raise ValueError(f"it repeats the instructions' example text {echo!r} instead of judging")
                return validate(value)
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


_PLACEHOLDER = re.compile(r"<[A-Za-z_][\w ]{0,40}>")
_MIN_ECHO_WORDS = 4


def echoed_prompt_text(reply: Any, prompt: str, own_texts: Sequence[str]) -> str | None:
    """A text of the judge's reply that comes from the prompt's instructions rather than the sample; ``None`` if none.

    A small judge sometimes copies a metric's example (DeepEval's ``"your concise and informative
    reason here"``, an ``<one or two sentences>`` placeholder) with the example's score: that is no
    judgement. Caught: a reply string of at least four words found verbatim in the prompt but not in
    ``own_texts`` (the sample's texts and the user's criteria: quoting them is fine), and a
    ``<placeholder>`` of the prompt left in the reply.

    Example:
        >>> prompt = 'Example JSON: {"score": 0, "reason": "your concise and informative reason here"}\\nAnswer: Revenue was $1,577 million.'
        >>> echoed_prompt_text({"score": 0, "reason": "your concise and informative reason here"}, prompt, ["Revenue was $1,577 million."])
        'your concise and informative reason here'
        >>> echoed_prompt_text({"statements": ["Revenue was $1,577 million."]}, prompt, ["Revenue was $1,577 million."]) is None
        True
        >>> echoed_prompt_text({"reasoning": "<one or two sentences>", "score": 1}, 'reply {"reasoning": "<one or two sentences>"}', [])
        '<one or two sentences>'
    """
    # Compared without case and spacing: "Your concise and informative reason here." is the same echo.
    flat_prompt = " ".join(prompt.lower().split())
    own = " ".join(" ".join(text.lower().split()) for text in own_texts)
    for text in _strings(reply):
        flat = " ".join(text.lower().split()).rstrip(".")
        if len(flat.split()) >= _MIN_ECHO_WORDS and flat in flat_prompt and flat not in own:
            return flat
        for placeholder in _PLACEHOLDER.findall(flat):
            # A tag the prompt wraps the sample in (<question>...</question>) may be named; a bare placeholder may not.
            if placeholder in flat_prompt and placeholder not in own and "</" + placeholder[1:] not in flat_prompt:
                return flat
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _sample_texts(sample: Any) -> list[str]:
    """The texts of one sample the judge may rightly quote: question, answer, references, contexts, the row's values."""
    values = [sample.question, sample.answer, *sample.references, *sample.contexts, *sample.sample.values()]
    return [str(value) for value in values if value is not None]


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
