"""Every name agility_mlflow writes to MLflow and reads back: one place, so writer and reader never drift.

The per-sample result columns (``eval_results.json``), the run metrics with their direction, the
``agility.*`` run and trace tags, the artifact names and the tags of a registered model version.
Nothing here imports from the package: every module may use it. The names are the contracts of
``shared/DESIGN.md``; they are extended, never renamed.

Example:
    >>> RESULTS_ARTIFACT, ROLE, score_key("token_f1")
    ('eval_results.json', 'agility.role', 'agility.score.token_f1')
    >>> lower_is_better("cost_usd_per_sample"), lower_is_better("latency_s"), lower_is_better("token_f1")
    (True, True, False)
"""

from __future__ import annotations

# --- Result columns: one row per sample in eval_results.json -------------------------------------
SAMPLE_ID = "sample_id"
OUTPUT = "output"
REFERENCE = "reference"
ERROR = "error"
"""The sample's error (``None`` when the model answered); an errored sample has no scores."""
LATENCY = "latency_s"
TTFT = "ttft_s"
PROVIDER_LATENCY = "provider_latency_s"
INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"
COST = "cost_usd"
REASONING_TOKENS = "reasoning_tokens"
CACHED_INPUT_TOKENS = "cached_input_tokens"
CACHE_WRITE_TOKENS = "cache_write_tokens"
FINISH_REASON = "finish_reason"
CACHED = "cached"
INPUT_DIGEST = "input_digest"
"""Fingerprint of what a sample gave the model and the judge: rows whose digests differ are not the same question."""
BOOKKEEPING_COLUMNS = frozenset({LATENCY, TTFT, PROVIDER_LATENCY, INPUT_TOKENS, OUTPUT_TOKENS, COST, FINISH_REASON, CACHED})
"""Measurement columns of a result row: neither the answer nor a score."""

# --- Run metrics (scoring.run_metrics) ---------------------------------------------------------
N_SAMPLES = "n_samples"
N_ERRORS = "n_errors"
LATENCY_MEAN = "latency_mean_s"
LATENCY_P50 = "latency_p50_s"
LATENCY_P95 = "latency_p95_s"
TTFT_P50 = "ttft_p50_s"
TTFT_P95 = "ttft_p95_s"
PROVIDER_LATENCY_P50 = "provider_latency_p50_s"
PROVIDER_LATENCY_P95 = "provider_latency_p95_s"
TOKENS_MEAN_SUFFIX = "_mean"
"""``input_tokens_mean`` and the like: a token column's mean over the answered samples."""
COST_TOTAL = "cost_usd_total"
COST_PER_SAMPLE = "cost_usd_per_sample"
LOWER_IS_BETTER_RUN_METRICS = frozenset(
    {
        COST_TOTAL,
        COST_PER_SAMPLE,
        LATENCY_MEAN,
        LATENCY_P50,
        LATENCY_P95,
        TTFT_P50,
        TTFT_P95,
        INPUT_TOKENS + TOKENS_MEAN_SUFFIX,
        OUTPUT_TOKENS + TOKENS_MEAN_SUFFIX,
        N_ERRORS,
    }
)
"""Run metrics where less is better (cost, latency, time to first token, tokens, errors)."""
LOWER_IS_BETTER_COLUMNS = frozenset({LATENCY, TTFT, INPUT_TOKENS, OUTPUT_TOKENS, COST})
"""Result columns where less is better: a sample's own latency, tokens and cost."""


def lower_is_better(name: str) -> bool:
    """Whether less is better for a run metric or result column of this module's vocabulary.

    Quality metrics carry their own direction (``scoring.higher_is_better`` asks them); for any
    other name this says ``False``.
    """
    return name in LOWER_IS_BETTER_RUN_METRICS or name in LOWER_IS_BETTER_COLUMNS


# --- Run params ---------------------------------------------------------------------------------
DATASET_DIGEST = "dataset_digest"
"""The run param holding the golden dataset's digest: runs on different digests are never paired."""

# --- Run tags -------------------------------------------------------------------------------------
ROLE = "agility.role"
"""``source``, ``candidate``, ``trial``, ``comparison``, ``check``, ``study`` ..."""
CANDIDATE = "agility.candidate"
PROMPT = "agility.prompt"
HOST = "agility.host"
PID = "agility.pid"
RUN_ERROR = "agility.error"
"""Why a run FAILED (the tag; not the result column :data:`ERROR`)."""
OPTIMIZATION = "agility.optimization"
"""The optimization run an evaluation belongs to."""
STUDY = "agility.study"
"""A sweep's trials and its study run: the Optuna study's name."""
TRIAL = "agility.trial"
FEASIBLE = "agility.feasible"
OPTIMIZATION_KEY = "agility.optimization_key"
SPLIT = "agility.split"
"""Which split of the golden set an optimization evaluated on (``train``, ``validation``, ``test``)."""
EVALUATION = "agility.evaluation"
ITERATION = "agility.iteration"
"""The optimizer's iteration a training-minibatch evaluation belongs to."""
WINNER = "agility.winner"
WINNER_NAME = "agility.winner_name"
SOURCE_RUN = "agility.source_run_id"
CHECK = "agility.check"
CHECK_MODEL = "agility.check_model"
CHECK_REASONS = "agility.check_reasons"
CHECK_VERSION = "agility.check_version"
BEST = "agility.best"
"""On each trial run: whether it is on the sweep's best (Pareto) front; the study run names them."""
BEST_RUN_IDS = "agility.best_run_ids"
BEST_TRIAL = "agility.best_trial"
BEST_PARAMS = "agility.best_params"
OPTIMIZED_FROM = "agility.optimized_from"
RESUMED_FROM = "agility.resumed_from"
PROJECT_RUN = "agility.project_run"
"""On a run logged in another experiment for a project run (an MLflow Project): that project run."""
RUNS_UNDER = "agility.runs_under"
SCORE_PREFIX = "agility.score."
"""A sample trace's score attribute, and a registered version's score tag: ``agility.score.<metric>``."""

# --- Trace attributes -------------------------------------------------------------------------------
TRACE_SAMPLE_ID = "agility.sample_id"
TRACE_CACHED = "agility.cached"

# --- Artifacts ------------------------------------------------------------------------------------
RESULTS_ARTIFACT = "eval_results.json"
CONFIG_ARTIFACT = "config.yaml"
VERDICTS_ARTIFACT = "verdicts.json"
"""A comparison run's verdicts, read back by register."""
ANALYSIS_ARTIFACT = "analysis.json"
"""An analyzed run's per-sample error categories (and a comparison's analyses)."""
HUMAN_REVIEW_ARTIFACT = "human_review.json"

# --- Tags of a registered model version (written by register, read by check) ------------------------
REGISTERED_FROM = "agility.registered_from_run"
DATASET_COLUMNS = "agility.dataset_columns"
EXPERIMENT = "agility.experiment"
METRICS = "agility.metrics"
"""JSON list of the quality metrics the version was registered on."""
MARGINS = "agility.margins"
"""JSON ``{metric: margin}``."""
CONFIDENCE = "agility.confidence"
MAX_ERROR_RATE = "agility.max_error_rate"
JUDGE = "agility.judge"
"""The judge's config as JSON, when the version was judged."""
VERDICT_PREFIX = "agility.verdict."
SERVED_INPUTS = "agility.served_inputs"
"""JSON list of the input columns the registered pipeline is served with."""

# --- Tags of a registered prompt version ----------------------------------------------------------
ORIGIN = "agility.origin"
"""Where the text came from (a file, ``inline``, a migration or an optimization)."""
MIGRATED_FROM = "agility.migrated_from"
MIGRATION_METHOD = "agility.migration_method"
TARGET_MODEL = "agility.target_model"
MIGRATION_ANALYSIS = "agility.analysis"
PARENT_VERSION = "agility.parent_version"
"""An optimized prompt's parent version in the search."""
TRAIN_SCORE = "agility.train_score"
VALIDATION_SCORE = "agility.validation_score"
TEST_RUN = "agility.test_run"


def score_key(metric: str) -> str:
    """The ``agility.score.<metric>`` tag or trace attribute of ``metric``."""
    return SCORE_PREFIX + metric
