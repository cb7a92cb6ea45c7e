"""The project config: one YAML file, validated before anything runs.

Paths in the config are relative to the config file. Unknown keys are errors, so a typo never
silently falls back to a default.

Example:
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "golden.csv").write_text("sample_id,question,answer_ground_truth\\nq1,2+2?,4\\n")
    >>> _ = (d / "agility.yaml").write_text('''
    ... experiment: demo
    ... dataset: {path: golden.csv}
    ... prompts: [{name: qa, template: "Q: {{question}}"}]
    ... candidates: [{name: local, provider: local, model_id: smollm2-135m-instruct}]
    ... ''')
    >>> cfg = load_config(d / "agility.yaml")
    >>> cfg.candidates[0].params.temperature
    0.0
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agility_mlflow.errors import InputError

Provider = Literal["local", "openai", "bedrock", "replay"]
PROVIDERS: tuple[str, ...] = ("local", "openai", "bedrock", "replay")
REDACTED = "<redacted>"
# One redaction rule for everything logged from a config (see :func:`redact`).
# Names whose values are credentials wherever they sit in a logged mapping: inline keys, and the HTTP
# headers a gateway needs (``params.extra.extra_headers``), matched at the end of the name.
_SECRET_NAME = re.compile(
    r"(?:^|[-_])(?:api[-_]?key|authorization|token|secret|password|passwd|credentials?|cookie|"
    r"subscription[-_]key|secret[-_]access[-_]key|private[-_]key)$",
    re.IGNORECASE,
)
# Values that are credentials under any name: one bearer token or basic-auth pair, nothing else.
_SECRET_VALUE = re.compile(r"\s*(?:bearer\s+\S+|basic\s+[A-Za-z0-9+/=]{8,})\s*", re.IGNORECASE)

SQLITE_PREFIX = "sqlite:///"
"""What starts a sqlite store's URI; the database path follows (``sqlite:////abs.db`` is absolute)."""


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a sqlite URI, as written (relative or absolute); ``None`` for any other URI.

    Example:
        >>> sqlite_path("sqlite:///mlflow.db"), sqlite_path("sqlite:////tmp/m.db"), sqlite_path("http://127.0.0.1:5000")
        (PosixPath('mlflow.db'), PosixPath('/tmp/m.db'), None)
    """
    if uri and uri.startswith(SQLITE_PREFIX):
        return Path(uri[len(SQLITE_PREFIX) :])
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    path: Path
    columns: dict[str, str] = Field(default_factory=dict)
    """Renames from the file's column names to the golden dataset's: ``{sample_id: financebench_id}``."""


class PromptConfig(_Strict):
    name: str
    template: str
    """A file path (relative to the config; any extension), the template text itself, or a ``prompts:/`` URI."""
    system: str | None = None
    """An optional system message, a file path or inline text; may use placeholders too."""
    format: Literal["mustache", "fstring", "jinja2"] = "mustache"
    """How placeholders are written: ``{{var}}`` (mustache), ``{var}`` (Python ``str.format``) or Jinja2
    (sandboxed; undefined variables are errors). A registry prompt keeps the format it was stored in."""

    @field_validator("name")
    @classmethod
    def _registry_name(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        if not value or set(value) - allowed:
            raise ValueError("use letters, digits, '-', '_' and '.' only (a Prompt Registry name)")
        return value


class InferenceParams(_Strict):
    """Inference parameters shared by every provider; ``extra`` goes to the provider untouched."""

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    top_k: int | None = Field(None, ge=1)
    """Sample from the k likeliest tokens (local, Bedrock ``additionalModelRequestFields.top_k``, OpenAI-compatible servers)."""
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    """OpenAI reasoning models' effort."""
    thinking_budget: int | None = Field(None, ge=1)
    """Tokens Claude on Bedrock may think for (extended thinking, through ``additionalModelRequestFields``)."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Any other provider field (Bedrock ``additionalModelRequestFields``, OpenAI request fields or body extras)."""

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class RecordedColumns(_Strict):
    """Where a replayed model's outputs and measurements are recorded (``provider: replay``)."""

    output: str
    latency: str | None = None
    """Seconds."""
    ttft: str | None = None
    """Time to first token, seconds."""
    input_tokens: str | None = None
    output_tokens: str | None = None
    sample_id: str = "sample_id"
    """The id column of a ``path:`` file, joined on the golden dataset's ``sample_id``."""


class ModelConfig(_Strict):
    provider: Provider
    model_id: str
    params: InferenceParams = Field(default_factory=InferenceParams)
    columns: RecordedColumns | None = None
    """``provider: replay`` only: the columns holding this model's recorded outputs (default: the source's,
    ``answer_source_llm``, ``latency_source_llm``, ...), in the golden file or in ``path``."""
    path: Path | None = None
    """``provider: replay`` only: a file (relative to the config) of recorded outputs, joined on ``sample_id``."""
    base_url: str | None = None
    """OpenAI-compatible endpoint; default ``OPENAI_BASE_URL`` or OpenAI's."""
    api_key: str | None = Field(None, repr=False)
    """A literal key. Prefer ``api_key_env``; either way it is never logged."""
    api_key_env: str | None = None
    """Name of the environment variable holding the key (default ``OPENAI_API_KEY``)."""
    region: str | None = None
    stream: bool = True
    """Stream answers to measure time to first token."""
    prompt_caching: bool = False
    """Bedrock: a ``cachePoint`` after the system prompt, so repeated system prompts are read from the prompt cache."""
    mode: Literal["on_demand", "batch"] = "on_demand"
    """``batch``: the provider's batch engine answers all samples as one job (Bedrock batch inference, the
    OpenAI Batch API), at the batch price; latency is then not measured. Candidates only."""
    s3_uri: str | None = None
    """Bedrock batch: the ``s3://bucket/prefix/`` the job's input records are written to and its outputs read from."""
    role_arn: str | None = None
    """Bedrock batch: the IAM service role Bedrock assumes to read and write ``s3_uri``."""
    poll_s: float = Field(30.0, gt=0)
    """Batch: seconds between two status checks of a running job."""

    @model_validator(mode="after")
    def _recorded_only_for_replay(self) -> ModelConfig:
        for key in ("columns", "path"):
            if getattr(self, key) is not None and self.provider != "replay":
                raise ValueError(f"'{key}' names recorded outputs: it needs provider: replay, not {self.provider}")
        _check_batch(self)
        if self.prompt_caching and self.provider != "bedrock":
            raise ValueError(f"prompt_caching is for bedrock models, not {self.provider}")
        for name in sorted(set(self.params.model_fields_set) & set(PROVIDER_PARAMS)):
            if getattr(self.params, name) is not None:  # a null control (a dumped config's default) is no control
                unsupported_param(self.provider, name)
        return self


def _check_batch(model: ModelConfig) -> None:
    """``mode: batch`` is for OpenAI and Bedrock models; Bedrock's needs ``s3_uri`` and ``role_arn``, which nothing else takes."""
    bedrock_batch = model.provider == "bedrock" and model.mode == "batch"
    if model.mode == "batch" and model.provider not in ("openai", "bedrock"):
        raise ValueError(f"mode: batch is for openai and bedrock models, not {model.provider}")
    for key in ("s3_uri", "role_arn"):
        if getattr(model, key) is not None and not bedrock_batch:
            raise ValueError(f"'{key}' is for Bedrock batch inference: it needs provider: bedrock and mode: batch")
        if bedrock_batch and not getattr(model, key):
            raise ValueError(f"Bedrock batch inference needs '{key}' ({'s3://bucket/prefix/' if key == 's3_uri' else 'the service role ARN'})")
    if bedrock_batch and not str(model.s3_uri).startswith("s3://"):
        raise ValueError(f"'s3_uri' must start with s3://, got {model.s3_uri!r}")


# Controls only some providers have: a model never silently ignores one (a sweep over it would show nothing).
PROVIDER_PARAMS = {"reasoning_effort": ("openai",), "thinking_budget": ("bedrock",), "top_k": ("local", "openai", "bedrock")}


def unsupported_param(provider: str, name: str) -> None:
    """Raise ``ValueError`` when ``provider`` has no inference parameter ``name`` (``extra.*`` always passes)."""
    allowed = PROVIDER_PARAMS.get(name)
    if allowed is not None and provider not in allowed:
        raise ValueError(f"params.{name} is for {' and '.join(allowed)} models, not {provider} (put a provider field under params.extra)")


class CandidateConfig(ModelConfig):
    name: str
    prompts: list[str] | None = None
    """Prompt names this candidate runs; default every prompt."""


class SourceConfig(ModelConfig):
    provider: Provider = "replay"
    prompt: str | None = None
    """The prompt the recorded answers came from; default the first prompt."""


class EmbeddingsConfig(_Strict):
    """The embedding model of the ``answer_relevancy`` and ``semantic_similarity`` metrics."""

    provider: Literal["local", "openai"] = "local"
    model_id: str = "smollm2-135m-instruct"
    base_url: str | None = None
    api_key_env: str | None = None


class JudgeConfig(ModelConfig):
    """The ``judge:`` section: the model that scores answers for ``llm_judge``, Ragas and DeepEval metrics.

    Any provider works (the local model by default, an OpenAI-compatible endpoint, Bedrock). Its calls
    go through the same runner as the candidates' (concurrency, retries, cache) and its tokens and
    cost are logged apart from theirs (``judge_cost_usd_total``).
    """

    provider: Provider = "local"
    model_id: str = "smollm2-135m-instruct"
    params: InferenceParams = Field(default_factory=lambda: InferenceParams(max_tokens=512))
    criteria: str | None = None
    """What ``llm_judge`` weighs (default: correctness, relevance, detail and helpfulness against the reference)."""
    style_guide: str | None = None
    """An SME's style guide the judge also holds answers to: inline text or a file path relative to the config."""
    geval: dict[str, str] = Field(default_factory=dict)
    """DeepEval GEval criteria by name; metric ``geval_<name>`` scores each, e.g. ``{conciseness: "..."}``."""
    max_attempts: int = Field(3, ge=1, le=10)
    """Judge replies that are not the expected JSON are asked again this many times in all, then recorded as the sample's error."""
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)

    @field_validator("provider")
    @classmethod
    def _not_replay(cls, value: str) -> str:
        if value == "replay":
            raise ValueError("a judge must call a model: use local, openai or bedrock")
        return value

    @field_validator("geval")
    @classmethod
    def _geval_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, criteria in value.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"GEval name '{name}': use letters, digits and '_' (it becomes metric geval_{name})")
            if not criteria.strip():
                raise ValueError(f"GEval '{name}': criteria text is empty")
        return value


class RunSettings(_Strict):
    concurrency: int = Field(8, ge=1, le=256)
    cache: bool = True
    max_retries: int = Field(6, ge=0, le=20)
    timeout_s: float = Field(120.0, gt=0)
    traces: bool = True
    """Log one MLflow trace per sample (inputs, outputs, token usage)."""


class PriceConfig(_Strict):
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    """USD per 1M input tokens read from the prompt cache (default: unknown; cost is unknown when some are)."""
    cache_write: float | None = Field(None, ge=0)
    """USD per 1M input tokens written to the prompt cache."""
    batch_input: float | None = Field(None, ge=0)
    """USD per 1M input tokens of a ``mode: batch`` candidate (default: ``input`` less ``batch_discount``)."""
    batch_output: float | None = Field(None, ge=0)
    """USD per 1M output tokens of a ``mode: batch`` candidate."""
    batch_discount: float | None = Field(None, ge=0, lt=1)
    """Off the on-demand rates in batch mode, e.g. 0.5 (default: the providers' published 50%)."""

    @model_validator(mode="after")
    def _batch_pair(self) -> PriceConfig:
        if (self.batch_input is None) != (self.batch_output is None):
            raise ValueError("give batch_input and batch_output together (or batch_discount)")
        return self


class Range(_Strict):
    """A numeric search range; integer parameters (``max_tokens``) are searched as integers."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


class Choices(_Strict):
    choices: list[Any] = Field(min_length=1)


class SweepConfig(_Strict):
    """The ``sweep:`` section: an Optuna search over prompts, models and inference parameters."""

    prompts: list[str] | None = None
    """Config prompt names or registry URIs (``prompts:/NAME/N``); default every config prompt."""
    instructions: list[str] = Field(default_factory=lambda: [""])
    """Add-on instructions appended to the user message (``""``: none), e.g. "Answer in one sentence."."""
    candidates: list[str] | None = None
    """Candidate names to search over; their ``params`` are the base the search space overrides."""
    params: dict[str, Range | Choices] = Field(default_factory=dict)
    objective: str | list[str] | dict[str, float] | None = None
    """A metric, several (multi-objective, Pareto front) or ``{metric: weight}`` (weighted sum, maximized).
    Default: the first metric in ``metrics:``."""
    constraints: list[str] = Field(default_factory=list)
    """``METRIC <= VALUE`` or ``METRIC >= source - 0.02`` (``source``: the source run's value)."""
    sampler: Literal["tpe", "random", "grid", "nsga2", "qmc"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    slices: int = Field(4, ge=1, le=100)
    """Trials evaluate the dataset in this many slices and report after each, so a pruner can stop them."""
    n_trials: int = Field(20, ge=1)
    seed: int | None = 0
    study: str | None = None
    """Optuna study name; default ``<experiment>-sweep``."""
    storage: str | None = None
    """Optuna storage URL; default sqlite beside the tracking store (``optuna.db``)."""
    heartbeat_s: int = Field(30, ge=1)
    """Trials of a dead worker on another machine are failed after two missed heartbeats."""

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        searchable = {"temperature", "top_p", "max_tokens", "seed", "top_k", "reasoning_effort", "thinking_budget"}
        for name in value:
            if name not in searchable and not (name.startswith("extra.") and len(name) > len("extra.")):
                raise ValueError(f"cannot search '{name}' (searchable: {', '.join(sorted(searchable))}, extra.FIELD)")
        return value


class SplitConfig(_Strict):
    """How ``agility optimize`` splits the samples, fixed by ``sample_id``: train feeds the reflection,
    validation picks the best prompt, test is touched once by the final candidate run."""

    train: float = Field(0.6, gt=0, lt=1)
    validation: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    stratify: str | None = None
    """A dataset column whose values each split keeps in proportion (e.g. ``question_type``)."""

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1, got {total:g}")
        return self


class ReflectionConfig(ModelConfig):
    """The model that reads failures and proposes new prompts (``optimize.reflection``); any backend."""

    provider: Provider = "local"
    model_id: str = "smollm2-135m-instruct"
    params: InferenceParams = Field(default_factory=lambda: InferenceParams(temperature=0.7, max_tokens=1024))

    @field_validator("provider")
    @classmethod
    def _not_replay(cls, value: str) -> str:
        if value == "replay":
            raise ValueError("a reflection model must call a model: use local, openai or bedrock")
        return value


class OptimizeConfig(_Strict):
    """The ``optimize:`` section: reflective prompt evolution (GEPA) on one candidate, proven on a held-out split."""

    objective: str | dict[str, float] | None = None
    """A metric, or ``{metric: weight}`` (weighted sum, maximized), e.g. ``{numeric_match: 1.0, output_tokens_mean: -0.002}``.
    Default: the first metric in ``metrics:``."""
    reflection: ReflectionConfig | None = None
    """Default: the judge's model when there is a ``judge:``, else the local model."""
    split: SplitConfig = Field(default_factory=SplitConfig)
    max_calls: int = Field(400, ge=1)
    """Target + judge + reflection calls in all, the final test run included: never crossed."""
    feedback: list[str] | None = None
    """Metrics whose per-sample results (and judges' reasons) the reflection reads; default every metric."""
    criteria: str | None = None
    """The SME's criteria every new prompt must respect (file or text); default ``judge.style_guide``."""
    minibatch: int = Field(3, ge=1, le=50)
    """Training samples the reflection reads per proposal."""
    seed: int = 0


# The runs a comparison can decide: ``agility run`` candidates and ``agility sweep`` trials.
RunRole = Literal["candidate", "trial"]
_RUN_ROLES: tuple[RunRole, ...] = ("candidate", "trial")


class DecisionConfig(_Strict):
    """The ``decision:`` section: when a candidate may replace the source (``agility compare``).

    A candidate passes when, on the samples both runs answered, every primary quality metric is
    non-inferior to the source (the confidence interval of candidate - source stays within the
    metric's margin) and it keeps every cost, latency and error limit.
    """

    primary: list[str] | None = None
    """Metrics that decide the verdict; default every metric in ``metrics:``."""
    margin: float = Field(0.05, ge=0)
    """Non-inferiority margin, absolute on the metric's own scale, for metrics without their own."""
    margins: dict[str, float] = Field(default_factory=dict)
    """Per-metric margins, e.g. ``{token_f1: 0.03, answer_length: 5}``."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Two-sided confidence level of the intervals (its lower bound is a one-sided test at half the rest)."""
    power: float = Field(0.8, gt=0.5, lt=1.0)
    """Power assumed when estimating how many samples an undecided comparison needs."""
    method: Literal["auto", "bootstrap"] = "auto"
    """``auto``: McNemar with a Newcombe interval for 0/1 metrics, paired bootstrap otherwise."""
    bootstrap_resamples: int = Field(2000, ge=100, le=1_000_000)
    seed: int = 0
    """Bootstrap seed: the same runs give the same intervals."""
    min_samples: int = Field(30, ge=2)
    """Fewer paired samples than this give the verdict ``insufficient``."""
    max_cost_per_sample_usd: float | None = Field(None, ge=0)
    max_latency_p95_s: float | None = Field(None, gt=0)
    max_cost_ratio: float | None = Field(None, gt=0)
    """Candidate cost per sample over the source's, e.g. 1.0: no more expensive than the source."""
    max_latency_p95_ratio: float | None = Field(None, gt=0)
    max_error_rate: float = Field(0.05, ge=0, le=1)
    """Failed samples are left out of the pairing, so too many of them would flatter a candidate."""
    tie_break: list[str] = Field(default_factory=lambda: ["quality", "cost_usd_per_sample", "latency_p95_s"], min_length=1)
    """Order that picks the winner among passing candidates: ``quality`` (the first primary metric)
    or any run metric name."""
    roles: list[RunRole] = Field(default_factory=lambda: list(_RUN_ROLES))
    """Which runs compete: ``agility run`` candidates, ``agility sweep`` trials, or both."""
    max_runs: int = Field(50, ge=1)
    """Decide at most this many runs (the best by the first primary metric); the rest are listed only."""
    worst_samples: int = Field(5, ge=0, le=100)
    """Samples per candidate shown for error analysis in the report."""
    slices: list[str] = Field(default_factory=list)
    """Dataset columns to decide on value by value as well (``question_type``, a segment, a language);
    the slice tests are Holm-adjusted and a passing candidate worse on a slice is named ``COLUMN=VALUE``."""
    slice_min_samples: int = Field(10, ge=2)
    """A slice with fewer paired samples than this is reported as insufficient, not tested."""

    @field_validator("margins")
    @classmethod
    def _non_negative_margins(cls, value: dict[str, float]) -> dict[str, float]:
        for name, margin in value.items():
            if margin < 0:
                raise ValueError(f"margin for '{name}' must be 0 or more, got {margin}")
        return value


class AnalysisConfig(_Strict):
    """The ``analysis:`` section: which samples ``agility analyze`` categorizes, and into what.

    A candidate's sample is analyzed when it scores below the source on ``metric`` (paired by
    sample id) or below ``threshold``. With a ``judge:`` the judge names each one's category and
    reason; without one the categories come from the drift signals and a clustering of the answers.
    """

    metric: str | None = None
    """The score that says a sample failed; default the first primary metric (``decision.primary``, else ``metrics:``)."""
    threshold: float | None = None
    """Also analyze samples scoring below this on ``metric`` (the source's too), not only those below the source."""
    categories: dict[str, str] | None = None
    """Your own taxonomy ``{name: description}``; default: wrong_number, missing_unit, unsupported_claim,
    incomplete, too_verbose, refusal, format, ignored_instruction, other."""
    clusters: int | None = Field(None, ge=1, le=50)
    """Offline: k-means clusters of the failing answers; default about one per five failing samples (at most 8)."""
    seed: int = 0
    """Offline clustering seed: the same runs give the same clusters."""
    examples: int = Field(2, ge=0, le=20)
    """Examples shown per category."""

    @field_validator("categories")
    @classmethod
    def _category_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one category, or leave the key out for the default taxonomy")
            for name, description in value.items():
                if not name.replace("_", "").replace("-", "").isalnum():
                    raise ValueError(f"category '{name}': use letters, digits, '-' and '_' (it becomes a metric name)")
                if not str(description).strip():
                    raise ValueError(f"category '{name}': description is empty")
        return value


class StepConfig(_Strict):
    """One LLM call of a multi-step application (``steps:``); its output is a variable of later steps.

    A step replays recorded outputs (``replay: COLUMN``), calls a fixed model (``model:``), or, with
    neither, is the step being migrated: each candidate (and the source) answers it.
    """

    name: str
    prompt: str
    """A config prompt name; it may use dataset columns and earlier steps' outputs."""
    output: str | None = None
    """The variable later steps read this step's output as (default: the step's name)."""
    replay: str | None = None
    """Dataset column holding this step's recorded outputs: no call is made."""
    replay_latency: str | None = None
    """Dataset column with the recorded latency (seconds) of a replayed step."""
    replay_input_tokens: str | None = None
    replay_output_tokens: str | None = None
    model: ModelConfig | None = None
    """A fixed model for this step, the same for every candidate."""

    @model_validator(mode="after")
    def _one_way(self) -> StepConfig:
        if self.replay and self.model:
            raise ValueError(f"step '{self.name}': use replay or model, not both")
        return self

    @property
    def variable(self) -> str:
        return self.output or self.name

    @property
    def migrated(self) -> bool:
        return not self.replay and self.model is None


# Which automated metrics fit which use case (the AWS method's table): string metrics always, judged
# ones when the config has a judge. See the README, "Metric presets".
METRIC_PRESETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "qa": (("exact_match", "token_f1", "rouge_l", "numeric_match"), ("answer_correctness", "llm_judge")),
    "rag": (("token_f1", "rouge_l", "numeric_match"), ("faithfulness", "answer_relevancy", "context_precision", "context_recall", "llm_judge")),
    "summarization": (("rouge_l", "bleu", "answer_length"), ("deepeval_summarization", "llm_judge")),
    "classification": (("exact_match", "token_f1"), ()),
}


class MetricPreset(_Strict):
    """``metrics: {preset: rag, add: [numeric_match]}``: a use case's metrics, plus any named in ``add``."""

    preset: Literal["qa", "rag", "summarization", "classification"]
    add: list[str] = Field(default_factory=list)

    def names(self, with_judge: bool) -> list[str]:
        """The preset's metric names (judged ones only ``with_judge``), then ``add``, without repeats.

        Example:
            >>> MetricPreset(preset="qa").names(with_judge=False)
            ['exact_match', 'token_f1', 'rouge_l', 'numeric_match']
            >>> MetricPreset(preset="rag", add=["bleu"]).names(with_judge=True)[-2:]
            ['llm_judge', 'bleu']
        """
        plain, judged = METRIC_PRESETS[self.preset]
        return list(dict.fromkeys([*plain, *(judged if with_judge else ()), *self.add]))


class Config(_Strict):
    experiment: str
    tracking_uri: str | None = None
    dataset: DatasetConfig
    prompts: list[PromptConfig] = Field(min_length=1)
    source: SourceConfig | None = None
    candidates: list[CandidateConfig] = Field(default_factory=list)
    metrics: list[str] | MetricPreset = Field(default_factory=lambda: ["exact_match", "token_f1", "rouge_l", "numeric_match"])
    """Metric names, or a use-case preset (``{preset: qa|rag|summarization|classification, add: [...]}``);
    after validation always the list of names."""
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)
    run: RunSettings = Field(default_factory=RunSettings)
    sweep: SweepConfig | None = None
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    judge: JudgeConfig | None = None
    """The judge model; metrics that need one (``llm_judge``, Ragas, DeepEval) fail fast without it."""
    steps: list[StepConfig] | None = None
    """A multi-step application: the calls in order; the last step's output is the answer scored."""
    optimize: OptimizeConfig | None = None
    """``agility optimize``: reflective prompt evolution on a candidate, decided on held-out samples."""

    path: Path = Field(Path("agility.yaml"), exclude=True)
    """Where the config was read from; relative paths resolve against its folder."""

    @field_validator("metrics", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        try:
            return MetricPreset.model_validate(value)
        except ValidationError as exc:  # one plain message, not one per branch of the union
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"])
            if err["type"] == "extra_forbidden":
                raise ValueError(f"unknown key '{where}' (a preset takes 'preset' and 'add')") from None
            if err["type"] == "literal_error":
                raise ValueError(f"unknown preset {err['input']!r} (known: {', '.join(METRIC_PRESETS)})") from None
            raise ValueError(f"{where}: {err['msg']}") from None

    @property
    def metric_names(self) -> list[str]:
        """``metrics:`` as names (validation resolves a preset into them once)."""
        if isinstance(self.metrics, MetricPreset):
            return self.metrics.names(with_judge=self.judge is not None)
        return self.metrics

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        if isinstance(self.metrics, MetricPreset):  # resolved once, so every module sees plain names
            object.__setattr__(self, "metrics", self.metrics.names(with_judge=self.judge is not None))
        prompt_names = [p.name for p in self.prompts]
        problems = _duplicates("prompts", prompt_names) + _duplicates("candidates", [c.name for c in self.candidates])
        for i, cand in enumerate(self.candidates):
            for name in cand.prompts or []:
                if name not in prompt_names:
                    problems.append(f"key 'candidates[{i}].prompts': unknown prompt '{name}' (known: {', '.join(prompt_names)})")
        if self.source and self.source.prompt and self.source.prompt not in prompt_names:
            problems.append(f"key 'source.prompt': unknown prompt '{self.source.prompt}'")
        batch_models = {"source": self.source, "judge": self.judge, "optimize.reflection": self.optimize.reflection if self.optimize else None,
                        **{f"steps[{i}].model": step.model for i, step in enumerate(self.steps or [])}}
        for key, model in batch_models.items():
            if model is not None and model.mode == "batch":
                problems.append(f"key '{key}.mode': batch is for candidates only (this model answers one call at a time)")
        if self.steps:
            problems += _duplicates("steps", [step.name for step in self.steps])
            problems += [f"key 'candidates[{i}].mode': batch does not run multi-step applications (steps:): each step needs the one before"
                         for i, c in enumerate(self.candidates) if c.mode == "batch"]
            for i, step in enumerate(self.steps):
                if step.prompt not in prompt_names:
                    problems.append(f"key 'steps[{i}].prompt': unknown prompt '{step.prompt}' (known: {', '.join(prompt_names)})")
            migrated = [step.name for step in self.steps if step.migrated]
            if len(migrated) != 1:
                problems.append(f"key 'steps': exactly one step must be left to the candidates (no replay:, no model:); found {len(migrated)}")
        if self.sweep:
            for name in self.sweep.prompts or []:
                if name not in prompt_names and not name.startswith("prompts:/"):
                    problems.append(f"key 'sweep.prompts': unknown prompt '{name}' (a config prompt name or prompts:/NAME/N)")
            for name in self.sweep.candidates or []:
                if name not in [c.name for c in self.candidates]:
                    problems.append(f"key 'sweep.candidates': unknown candidate '{name}'")
                elif next(c for c in self.candidates if c.name == name).provider == "replay":
                    problems.append(f"key 'sweep.candidates': '{name}' replays recorded outputs: there is nothing to search")
            for candidate in self.candidates:
                if candidate.provider == "replay" or (self.sweep.candidates and candidate.name not in self.sweep.candidates):
                    continue
                for param in self.sweep.params:
                    try:
                        unsupported_param(candidate.provider, param)
                    except ValueError as exc:
                        problems.append(f"key 'sweep.params.{param}': candidate '{candidate.name}': {exc}")
            if not any(c.provider != "replay" for c in self.candidates):
                problems.append("key 'sweep': needs at least one entry under candidates that calls a model (not replay)")
        if problems:  # every one of them, one line each (see _describe)
            raise ValueError("\n".join(problems))
        return self

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, path: str | Path) -> Path:
        """``path`` relative to the config file's folder."""
        return (self.base_dir / path).resolve()

    def resolved_tracking_uri(self) -> str | None:
        """The config's tracking URI with a relative sqlite path made relative to the config file."""
        uri = self.tracking_uri
        path = sqlite_path(uri)
        if path is not None and not path.is_absolute():
            return SQLITE_PREFIX + str(self.resolve(path))
        return uri

    def price_overrides(self) -> dict[str, dict[str, float]]:
        """The ``pricing:`` section as ``lookup_price`` takes it: ``{model_id: {input: ..., output: ...}}``."""
        return {model_id: price.model_dump() for model_id, price in self.pricing.items()}

    @property
    def migrated_step(self) -> StepConfig | None:
        """The step the candidates answer, when the application has ``steps:``."""
        return next((step for step in self.steps or [] if step.migrated), None)

    def public_dict(self) -> dict[str, Any]:
        """The resolved config with secrets removed: safe to log as an artifact."""
        return redact(self.model_dump(mode="json"))


def _duplicates(section: str, names: list[str]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for i, name in enumerate(names):
        if name in seen:
            problems.append(f"key '{section}[{i}].name': duplicate name '{name}'")
        seen.add(name)
    return problems


def redact(value: Any) -> Any:
    """``value`` with every credential in it replaced by ``<redacted>``; applied to whatever is logged from config.

    Example:
        >>> redact({"max_tokens": 16, "extra": {"extra_headers": {"X-Api-Key": "k1"}, "auth": "Bearer t0k"}, "api_key": None})
        {'max_tokens': 16, 'extra': {'extra_headers': {'X-Api-Key': '<redacted>'}, 'auth': '<redacted>'}, 'api_key': None}
    """
    if isinstance(value, Mapping):
        return {k: REDACTED if _SECRET_NAME.search(str(k)) and v not in (None, "") else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and _SECRET_VALUE.fullmatch(value):
        return REDACTED
    return value


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; :class:`InputError` naming the file and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}{where}: invalid YAML ({problem})") from None
    if raw is None:
        raise InputError(f"{path}: the config file is empty (start from the example in the README, 'The project config')")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of config keys, got {type(raw).__name__}")
    try:
        config = Config.model_validate({**raw, "path": path.resolve()})
    except ValidationError as exc:
        raise InputError([f"{path}: {problem}" for problem in _describe(exc)]) from None
    dataset_path = config.resolve(config.dataset.path)
    if not dataset_path.is_file():
        raise InputError(f"{path}: key 'dataset.path': file not found: {dataset_path}")
    return config


def _describe(exc: ValidationError) -> list[str]:
    """Every validation problem, each as ``key 'a.b[0].c': message``."""
    problems: list[str] = []
    for err in exc.errors():
        for problem in _describe_one(err).split("\n"):  # cross-reference checks join theirs with newlines
            if problem not in problems:  # a union reports one problem once per branch
                problems.append(problem)
    return problems


def _describe_one(err: Any) -> str:
    loc = ""
    for part in err["loc"]:
        if isinstance(part, str) and ("[" in part or part[:1].isupper()):
            continue  # a union's branch (``list[str]``, ``MetricPreset``), not a key the user wrote
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{loc}'"
    if kind == "missing":
        return f"missing key '{loc}'"
    message = err["msg"].removeprefix("Value error, ")
    if kind == "literal_error" and loc.endswith("provider"):
        message = f"unknown provider {err['input']!r} (expected one of: {', '.join(PROVIDERS)})"
    return f"key '{loc}': {message}" if loc else message
