"""The ``agility`` command line: thin wrappers over the package's functions.

Bad input prints one line per problem on stderr and exits 2; other failures exit 1.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from agility_mlflow.errors import AgilityError, InputError

if TYPE_CHECKING:
    from agility_mlflow.evaluation import RunSummary


def _handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            for line in str(exc).splitlines():  # every problem of a validation pass, one line each
                click.echo(f"error: {line}", err=True)
            sys.exit(2)
        except AgilityError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: open runs were marked KILLED", err=True)
            sys.exit(130)
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException):
                click.echo(f"error: MLflow: {str(exc).splitlines()[0]}", err=True)
                sys.exit(1)
            raise

    return wrapper


def _setup_logging(verbose: bool) -> None:
    # MLflow hints about integer columns when it infers table schemas; our tables are read, not served.
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_logger = logging.getLogger("agility_mlflow")
    package_logger.handlers[:] = [handler]
    package_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    package_logger.propagate = False
    # Traces are flushed before each run ends; MLflow's exit-time notice about its queue is noise.
    logging.getLogger("mlflow.tracing.export.async_export_queue").setLevel(logging.WARNING)
    # A fresh sqlite store announces its tables on stderr; a bad --model must still be one line there.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


class _OneLineErrors(click.Group):
    """Bad arguments get one line on stderr, ``error: ...`` with exit code 2, like every other bad input."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_OneLineErrors)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.version_option(package_name="agility-mlflow")
def main(verbose: bool) -> None:
    """agility_mlflow: prove, with numbers in MLflow, that a new LLM can replace the one you run."""
    _setup_logging(verbose)


@main.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--tracking-uri", help="MLflow tracking URI (default: the config's, then MLFLOW_TRACKING_URI).")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N samples.")
@click.option("--candidate", "candidates", multiple=True, help="Run only this candidate (repeatable).")
@click.option("--budget-usd", type=float, help="Start no run whose worst-case cost (model and judge calls) could cross this.")
@_handle_errors
def run_command(config: str, tracking_uri: str | None, limit: int | None, candidates: tuple[str, ...], budget_usd: float | None) -> None:
    """One MLflow run per prompt x candidate, plus the source run from recorded answers."""
    from agility_mlflow.config import load_config
    from agility_mlflow.evaluation import run_project

    # Under `mlflow run`, MLFLOW_RUN_ID names the project's run: nest ours under it instead of reusing it.
    parent_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    summaries = run_project(
        config, tracking_uri=tracking_uri, limit=limit, candidates=list(candidates) or None, parent_run_id=parent_run_id,
        budget_usd=budget_usd,
    )
    metric_names = load_config(config).metric_names
    click.echo(summary_table(summaries, metric_names))


def summary_table(summaries: Sequence[RunSummary], metric_names: Sequence[str]) -> str:
    """A fixed-width table of the runs, for the terminal."""
    columns = ["run", "prompt", "n", "errors", *metric_names, "latency_p50_s", "cost_usd_total", "run_id"]
    lines = []
    for s in summaries:
        m = s.metrics
        cells = [
            s.name,
            s.prompt_uri.removeprefix("prompts:/"),
            f"{m.get('n_samples', 0):.0f}",
            f"{m.get('n_errors', 0):.0f}",
            *[_fmt(m.get(name)) for name in metric_names],
            _fmt(m.get("latency_p50_s")) if "latency_p50_s" in m else "not measured",  # batch jobs, replays without latencies
            _fmt(m.get("cost_usd_total"), digits=6) if "cost_usd_total" in m else "unknown",
            s.run_id,
        ]
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(columns, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([render(columns), *(render(cells) for cells in lines)])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@main.command("sweep")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--tracking-uri", help="MLflow tracking URI (default: the config's, then MLFLOW_TRACKING_URI).")
@click.option("--n-trials", type=click.IntRange(min=1), help="Trials the study should hold in all (default: sweep.n_trials).")
@click.option("--storage", help="Optuna storage URL shared by workers, e.g. postgresql+psycopg://user@host/db.")
@click.option("--study", "study_name", help="Optuna study name (default: sweep.study, else <experiment>-sweep).")
@click.option("--budget-usd", type=float, help="Stop before the study's model spend could cross this.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N samples.")
@_handle_errors
def sweep_command(
    config: str, tracking_uri: str | None, n_trials: int | None, storage: str | None, study_name: str | None, budget_usd: float | None,
    limit: int | None,
) -> None:
    """Optuna search over prompts, models and inference parameters; each trial is a child MLflow run."""
    from agility_mlflow.sweep import run_sweep

    result = run_sweep(config, tracking_uri=tracking_uri, n_trials=n_trials, storage=storage, study_name=study_name, budget_usd=budget_usd,
                       limit=limit)
    source = f"; source run {result.source_run_id}" if result.source_run_id else ""
    click.echo(f"study {result.study_name}: {result.n_trials} trials; parent run {result.parent_run_id}{source}")
    if result.stopped_by_budget:
        click.echo("stopped by the budget")
    if not result.best:
        click.echo("no feasible completed trial yet")
    for trial in result.best:
        values = ", ".join(f"{v:.4f}" for v in trial.values)
        click.echo(f"best trial {trial.number}: [{values}] {trial.params} run {trial.user_attrs.get('mlflow_run_id')}")


@main.command("optimize")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--prompt", required=True, help="The config prompt to optimize.")
@click.option("--candidate", required=True, help="The candidate model to optimize it on.")
@click.option("--budget-usd", type=float, help="Never spend more than this (target, judge and reflection together).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: the config's, then MLFLOW_TRACKING_URI).")
@_handle_errors
def optimize_command(config: str, prompt: str, candidate: str, budget_usd: float | None, tracking_uri: str | None) -> None:
    """Improve a prompt on a candidate model (GEPA), then evaluate the best once on held-out samples."""
    from agility_mlflow.optimize import optimize_prompt

    # Under `mlflow run`, MLFLOW_RUN_ID names the project's run: nest ours under it instead of reusing it.
    parent_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    result = optimize_prompt(config, prompt, candidate, budget_usd=budget_usd, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    calls = ", ".join(f"{role} {n}" for role, n in sorted(result.calls.items()))
    click.echo(f"optimization run {result.optimization_run_id}: {result.n_prompts} prompts evaluated, {result.n_discarded} proposals discarded"
               + (" (stopped by the budget)" if result.stopped_by_budget else ""))
    click.echo(f"validation: {result.seed_prompt_uri} {result.seed_validation_score:.4f} -> {result.best_prompt_uri} {result.best_validation_score:.4f}")
    click.echo(f"test run {result.test_run_id} ({len(result.split.test)} held-out samples): "
               + ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items() if k in _quality_names(config)))
    click.echo(f"spent: {sum(result.calls.values())} calls ({calls}), ${result.cost_usd:.4f}; decide it with: agility compare {config}")


def _quality_names(config: str) -> list[str]:
    from agility_mlflow.config import load_config

    return list(load_config(config).metric_names)


@main.command("compare")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--tracking-uri", help="MLflow tracking URI (default: the config's, then MLFLOW_TRACKING_URI).")
@click.option("--output", type=click.Path(file_okay=False), default="agility-report", show_default=True,
              help="Folder for report.html, report.md, the plots and verdicts.json.")
@_handle_errors
def compare_command(config: str, tracking_uri: str | None, output: str) -> None:
    """Decide each candidate against the source (non-inferiority, cost and latency limits), name the winner, write the report.

    Exits 0 whether or not a candidate passes: the verdict is the output.
    """
    from agility_mlflow.compare import compare

    # Under `mlflow run`, MLFLOW_RUN_ID names the project's run: nest the comparison run under it.
    parent_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    result = compare(config, tracking_uri=tracking_uri, output=output, parent_run_id=parent_run_id)
    click.echo(result.table())
    click.echo(f"report: {result.report_html}  (comparison run {result.run_id})")


@main.command("analyze")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--run-id", "run_ids", multiple=True, help="Analyze this candidate or trial run (repeatable; default: the latest of each candidate).")
@click.option("--output", type=click.Path(file_okay=False), default="agility-analysis", show_default=True,
              help="Folder for analysis.md and analysis.json.")
@click.option("--offline", is_flag=True, help="Categorize from drift signals and clustering even when the config has a judge.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: the config's, then MLFLOW_TRACKING_URI).")
@_handle_errors
def analyze_command(config: str, run_ids: tuple[str, ...], output: str, offline: bool, tracking_uri: str | None) -> None:
    """Why a candidate loses, where, and how its answers drift from the source's; logged on each analyzed run."""
    from agility_mlflow.analysis import analyze

    result = analyze(config, run_ids=run_ids, tracking_uri=tracking_uri, output=output, offline=offline)
    click.echo(result.text())


@main.command("migrate")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--prompt", "prompt", required=True, help="The config prompt to migrate.")
@click.option("--method", type=click.Choice(["metaprompt", "bedrock"]), required=True, help="How to rewrite it.")
@click.option("--target-model", required=True, help="The model the prompt is rewritten for, e.g. us.anthropic.claude-3-5-haiku-20241022-v1:0.")
@click.option("--via", help="metaprompt: the rewriting model, a candidate name or provider:model_id (default: the local model).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: the config's, then MLFLOW_TRACKING_URI).")
@_handle_errors
def migrate_command(config: str, prompt: str, method: str, target_model: str, via: str | None, tracking_uri: str | None) -> None:
    """Rewrite a prompt for a target model and register it as a new Prompt Registry version."""
    from agility_mlflow.migrate import migrate_prompt

    result = migrate_prompt(config, prompt, method, target_model, via=via, tracking_uri=tracking_uri)
    for repair in result.repairs:
        click.echo(f"repaired placeholder {repair}", err=True)
    click.echo(result.uri)


@main.command("dataset-from-traces")
@click.argument("experiment")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="The dataset file: .jsonl, .csv or .parquet.")
@click.option("--since", help="Only traces from this ISO date or time on (UTC unless a zone is given).")
@click.option("--until", help="Only traces before this ISO date or time.")
@click.option("--filter", "filter_string", help="An extra mlflow.search_traces filter, e.g. \"tags.env = 'prod'\".")
@click.option("--max-results", type=click.IntRange(min=1), help="At most this many traces.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI).")
@_handle_errors
def dataset_from_traces_command(
    experiment: str, output: str, since: str | None, until: str | None, filter_string: str | None,
    max_results: int | None, tracking_uri: str | None,
) -> None:
    """Build a golden dataset from the live application's MLflow traces in EXPERIMENT."""
    from agility_mlflow.from_traces import dataset_from_traces, write_dataset

    frame = dataset_from_traces(experiment, since=since, until=until, filter_string=filter_string,
                                max_results=max_results, tracking_uri=tracking_uri)
    if frame.empty:
        raise InputError(f"experiment '{experiment}' has no successful traces in that window: nothing written")
    path = write_dataset(frame, output)
    click.echo(f"{len(frame)} samples from traces -> {path}")


@main.group("review")
def review_group() -> None:
    """Human review: export samples for a person to score, import the scores back onto the run."""


@review_group.command("export")
@click.argument("run_id")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="The CSV to write.")
@click.option("--metric", help="Pick the worst samples by this score column.")
@click.option("--worst", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--disagree", help="Two score columns, A,B: pick the samples where they disagree most.")
@click.option("--most-disagreeing", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--sample", type=click.IntRange(min=0), default=10, show_default=True, help="Random samples of the rest.")
@click.option("--per-category", type=click.IntRange(min=0), default=0, show_default=True,
              help="Samples of each error category (after `agility analyze` on the run).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI).")
@_handle_errors
def review_export_command(
    run_id: str, output: str, metric: str | None, worst: int, disagree: str | None, most_disagreeing: int, sample: int,
    per_category: int, tracking_uri: str | None,
) -> None:
    """Write the samples of RUN_ID worth a human look to a CSV with empty human_score/human_reasoning columns."""
    from agility_mlflow.review import export_review

    pair = None
    if disagree is not None:
        parts = [p.strip() for p in disagree.split(",")]
        if len(parts) != 2 or not all(parts):
            raise InputError(f"--disagree '{disagree}': give two score columns as A,B")
        pair = (parts[0], parts[1])
    _use_tracking_uri(tracking_uri)
    count = export_review(run_id, output, metric=metric, worst=worst, disagree=pair, most_disagreeing=most_disagreeing, sample=sample,
                          per_category=per_category)
    click.echo(f"{count} samples to review -> {output}")


@review_group.command("import")
@click.argument("run_id")
@click.argument("review_csv", type=click.Path(dir_okay=False))
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI).")
@_handle_errors
def review_import_command(run_id: str, review_csv: str, tracking_uri: str | None) -> None:
    """Log the human scores of a filled-in review CSV on RUN_ID and on its sample traces."""
    from agility_mlflow.review import import_review

    _use_tracking_uri(tracking_uri)
    metrics = import_review(run_id, review_csv)
    click.echo("  ".join(f"{name}={value:.4g}" for name, value in metrics.items()))


@main.command("register")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="Registered model name (not a prompt's name, e.g. app.fin-qa).")
@click.option("--run-id", help="Register this run instead of the latest comparison's winner.")
@click.option("--alias", default="champion", show_default=True, help="Alias for the model version and its prompt version.")
@click.option("--force", is_flag=True, help="Register --run-id even though it did not pass the latest comparison.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: the config's, then MLFLOW_TRACKING_URI).")
@_handle_errors
def register_command(config: str, name: str, run_id: str | None, alias: str, force: bool, tracking_uri: str | None) -> None:
    """Register the winner (model + prompt version + parameters) in the MLflow Model Registry."""
    from agility_mlflow.registry import register

    registration = register(config, name, run_id=run_id, alias=alias, tracking_uri=tracking_uri, force=force)
    click.echo(f"{registration.alias_uri} -> version {registration.version} (run {registration.run_id}, prompt {registration.prompt_uri})")


@main.command("check")
@click.option("--model", "model_uri", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
@click.option("--dataset", required=True, type=click.Path(dir_okay=False), help="The (refreshed) golden dataset.")
@click.option("--min", "minimums", multiple=True, help="METRIC=VALUE: fail below this mean (repeatable).")
@click.option("--columns", "columns", multiple=True,
              help="KEY=COLUMN: read golden column KEY from the dataset's COLUMN (repeatable; default: the renames the model was registered with).")
@click.option("--experiment", help="Experiment for the check run (default: the one the model was registered from).")
@click.option("--no-cache", is_flag=True, help="Call the model for every sample instead of reusing cached answers.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI).")
@_handle_errors
def check_command(
    model_uri: str, dataset: str, minimums: tuple[str, ...], columns: tuple[str, ...], experiment: str | None, no_cache: bool,
    tracking_uri: str | None,
) -> None:
    """Re-evaluate a registered model; exit 1 when a threshold, its error limit or its registered scores no longer hold."""
    from agility_mlflow.registry import check_model, parse_columns, parse_minimums

    result = check_model(model_uri, dataset, minimums=parse_minimums(minimums), columns=parse_columns(columns), experiment=experiment,
                         tracking_uri=tracking_uri, cache=not no_cache)
    for reason in result.reasons:
        click.echo(reason)
    click.echo(f"{'pass' if result.passed else 'FAIL'}: {model_uri} (check run {result.run_id})")
    if not result.passed:
        sys.exit(1)


def _use_tracking_uri(tracking_uri: str | None) -> None:
    import mlflow

    from agility_mlflow.tracking import check_reachable

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    check_reachable()
