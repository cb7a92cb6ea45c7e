"""Everything agility_mlflow writes to MLflow, and nothing else: runs, prompts, tables, traces.

Contract (README.md): tags ``agility.role``, ``agility.candidate``, ``agility.prompt``;
params ``provider``, ``model_id``, every inference parameter, ``dataset_digest``; metrics
``n_samples``, ``n_errors``, latency, tokens, cost and one per quality metric; the artifact
``eval_results.json`` with one row per sample; the resolved config; one trace per sample.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from agility_mlflow._process import process_alive
from agility_mlflow._trace_writer import Judgement as Judgement  # re-exported: log_sample_trace takes them
from agility_mlflow._trace_writer import SampleCall as SampleCall  # re-exported: log_sample_trace takes one
from agility_mlflow.config import redact, sqlite_path
from agility_mlflow.prompts import Template

# The run tags other modules name as tracking.ROLE and so on: the vocabulary's, re-exported.
from agility_mlflow.vocabulary import CANDIDATE as CANDIDATE
from agility_mlflow.vocabulary import HOST, ORIGIN, PID, PROJECT_RUN, RESULTS_ARTIFACT, RUN_ERROR, RUNS_UNDER, TRACE_SAMPLE_ID
from agility_mlflow.vocabulary import PROMPT as PROMPT
from agility_mlflow.vocabulary import ROLE as ROLE

logger = logging.getLogger(__name__)

_PARAM_VALUE_LIMIT = 6000
PREFLIGHT_TIMEOUT_S = 5.0
"""How long the reachability check waits for a tracking server's first answer."""
# The operating system's reason inside urllib3's message, e.g. "[Errno 111] Connection refused".
_CONNECTION_REASON = re.compile(r"\[Errno -?\d+\] [^'\")]+|timed out|Name or service not known")


def _redact_text(text: str) -> str:
    """A tag value with its credentials redacted, also inside JSON text (a config section kept as a tag)."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return redact(text)
    cleaned = redact(parsed)
    return text if cleaned == parsed else json.dumps(cleaned)


def check_reachable(tracking_uri: str | None = None) -> None:
    """Fail within seconds, with one line naming the URI, when an HTTP tracking server does not answer.

    MLflow's client retries a dead server for minutes (seven retries with backoff) and then prints
    urllib3's raw error; this one request has no retry and a short timeout. Any HTTP answer counts
    (an authentication error or a proxy's 404 is for the real requests to report). Local stores
    (``sqlite:``, files) need no check.

    Raises:
        AgilityError: The server did not answer (exit code 1 in the CLI).

    Example:
        >>> check_reachable("http://127.0.0.1:9")
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.AgilityError: tracking server http://127.0.0.1:9 is unreachable ([Errno 111] Connection refused); start it or pass another --tracking-uri
    """
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    from agility_mlflow.errors import AgilityError

    uri = tracking_uri or mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        http_request(get_default_host_creds(uri), "/health", "GET", max_retries=0, timeout=PREFLIGHT_TIMEOUT_S, raise_on_status=False)
    except MlflowException as exc:
        found = _CONNECTION_REASON.search(str(exc))
        reason = found.group(0).strip() if found else "no answer"
        raise AgilityError(f"tracking server {uri} is unreachable ({reason}); start it or pass another --tracking-uri") from None


def configure(tracking_uri: str | None, experiment: str) -> str:
    """Point MLflow at ``tracking_uri`` (if given) and return the id of ``experiment``, created if new."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    check_reachable()
    store = sqlite_path(mlflow.get_tracking_uri())
    if store is not None and MlflowClient().get_experiment_by_name(experiment) is None:
        # MLflow's default artifact root for a sqlite store is ./mlruns in whatever folder the command
        # runs from: keep artifacts beside the database instead, where the next command finds them.
        root = store.resolve().parent / "mlartifacts"
        try:
            MlflowClient().create_experiment(experiment, artifact_location=root.as_uri())
        except MlflowException:
            pass  # created meanwhile by another process
    return mlflow.set_experiment(experiment).experiment_id


def existing_experiment(config: Any, tracking_uri: str | None) -> str:
    """Point MLflow at ``config``'s store (or ``tracking_uri``); the id of its experiment, which must exist."""
    from agility_mlflow.errors import InputError

    uri = tracking_uri or config.resolved_tracking_uri()
    if uri:
        mlflow.set_tracking_uri(uri)
    check_reachable()
    experiment = MlflowClient().get_experiment_by_name(config.experiment)
    if experiment is None:
        raise InputError(f"{config.path.name}: experiment '{config.experiment}' not found in {mlflow.get_tracking_uri()}; run `agility run` first")
    return experiment.experiment_id


def register_prompt(template: Template, tags: Mapping[str, str] | None = None) -> str:
    """Register ``template`` in the Prompt Registry, reusing a version whose text is identical.

    Returns the ``prompts:/NAME/VERSION`` URI. Switching between two texts never piles up versions,
    and several processes registering the same prompt at once end up sharing one version. ``tags``
    go on a newly registered version.
    """
    if template.registry_uri is not None:
        return template.registry_uri
    content = template.registry_template()
    for attempt in range(3):
        existing = _identical_version(template.name, content)
        if existing is not None:
            return existing
        try:
            return mlflow.genai.register_prompt(
                name=template.name,
                template=content,
                commit_message=f"agility_mlflow: from {template.origin}",
                tags={ORIGIN: template.origin, **(tags or {})},
            ).uri
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" or attempt == 2:
                raise
    raise AssertionError("unreachable")


def set_prompt_version_tags(prompt_uri: str, tags: Mapping[str, str]) -> None:
    """Tags on a registered prompt version (``prompts:/NAME/N``), credentials redacted."""
    name, _, version = prompt_uri.removeprefix("prompts:/").partition("/")
    client = MlflowClient()
    for key, value in tags.items():
        client.set_prompt_version_tag(name, version, key, _redact_text(str(value)))


def log_metric_steps(run_id: str, series: Mapping[str, Sequence[tuple[int, float]]]) -> None:
    """Metric histories ``{name: [(step, value), ...]}`` in one batched request (the UI charts them by step)."""
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, int(step)) for name, points in series.items() for step, value in points]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def _identical_version(name: str, content: Any) -> str | None:
    """The URI of the newest version of prompt ``name`` holding ``content``, if any."""
    client = MlflowClient()
    try:
        versions = client.search_prompt_versions(name)
    except MlflowException:
        return None  # no such prompt yet
    matches = [v for v in versions if v.template == content]
    return max(matches, key=lambda v: int(v.version)).uri if matches else None


def fail_abandoned_runs(experiment_id: str) -> list[str]:
    """Mark FAILED the runs this host started whose process is gone (``kill -9``, power loss).

    Returns their ids. Runs of live processes and of other hosts are left alone.
    """
    client = MlflowClient()
    host = socket.gethostname()
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST}` = '{host}'",
        max_results=1000,
    )
    failed = []
    for run in runs:
        pid = int(run.data.tags.get(PID, "0") or 0)
        if pid and not process_alive(pid):
            fail_if_running(run.info.run_id, f"interrupted: process {pid} ended without closing the run")
            failed.append(run.info.run_id)
    return failed


def fail_if_running(run_id: str, reason: str) -> bool:
    """End ``run_id`` FAILED with ``reason`` if it is still RUNNING; True when it was."""
    client = MlflowClient()
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    client.set_tag(run_id, RUN_ERROR, reason)
    client.set_terminated(run_id, status="FAILED")
    return True


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """Several tags (credentials redacted) in one batched request."""
    MlflowClient().log_batch(run_id, tags=[RunTag(k, _redact_text(str(v))) for k, v in tags.items()])


@contextmanager
def quiet_artifact_downloads() -> Iterator[None]:
    """MLflow's artifact download progress bars off inside the block, unless the user set them.

    One bar per downloaded table would flood the terminal.
    """
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if name in os.environ:
        yield
        return
    os.environ[name] = "false"
    try:
        yield
    finally:
        os.environ.pop(name, None)


@contextmanager
def evaluation_run(
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    *,
    prompt_uri: str | None = None,
    parent_run_id: str | None = None,
) -> Iterator[str]:
    """An MLflow run that ends FINISHED only when its body completes.

    An exception ends it FAILED (with the reason in the ``agility.error`` tag), Ctrl-C ends it
    KILLED; a process killed outright is caught later by :func:`fail_abandoned_runs`.
    """
    all_tags = {**tags, HOST: socket.gethostname(), PID: str(os.getpid())}
    if prompt_uri:
        all_tags[PROMPT] = prompt_uri
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags, nested=parent_run_id is not None)
    run_id = run.info.run_id
    try:
        if prompt_uri:
            MlflowClient().link_prompt_version_to_run(run_id, prompt_uri)
        yield run_id
    except KeyboardInterrupt:
        _end(run_id, RunStatus.to_string(RunStatus.KILLED), "interrupted by the user")
        raise
    except BaseException as exc:
        # An exception may say how its run ends (a pruned trial is KILLED, not FAILED).
        status = getattr(exc, "run_status", RunStatus.to_string(RunStatus.FAILED))
        _end(run_id, status, f"{type(exc).__name__}: {exc}")
        raise
    else:
        mlflow.end_run("FINISHED")


# Tags of an `mlflow run` project run that say where it came from; its stand-in parent carries them too.
_PROJECT_TAGS = ("mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit", "mlflow.source.git.repoURL",
                 "mlflow.gitRepoURL", "mlflow.project.entryPoint", "mlflow.project.env", "mlflow.project.backend", "mlflow.user")


@contextmanager
def parent_in_experiment(parent_run_id: str | None, experiment_id: str) -> Iterator[str | None]:
    """The run to nest under: ``parent_run_id`` itself, or a stand-in for it in ``experiment_id``.

    ``mlflow run . -e run`` without ``--experiment-name`` opens its run in the Default experiment, while
    agility's runs go to the config's experiment: the UI then shows the parent without children in
    one place and orphans in the other. A run cannot move between experiments, so the entry point's
    run gets a stand-in in the config's experiment (same name and source tags, tagged
    ``agility.project_run``) that ends with the command, and the original is tagged with where it went.
    """
    client = MlflowClient()
    if parent_run_id is None or client.get_run(parent_run_id).info.experiment_id == experiment_id:
        yield parent_run_id
        return
    project_run = client.get_run(parent_run_id)
    tags = {k: v for k, v in project_run.data.tags.items() if k in _PROJECT_TAGS}
    stand_in = client.create_run(experiment_id, run_name=project_run.info.run_name, tags={**tags, PROJECT_RUN: parent_run_id})
    client.set_tag(parent_run_id, RUNS_UNDER, f"{stand_in.info.run_id} (experiment {experiment_id})")
    logger.warning("mlflow run opened run %s in another experiment; agility's runs are under run %s in the config's experiment "
                   "(pass --experiment-name to mlflow run to keep one)", parent_run_id, stand_in.info.run_id)
    try:
        yield stand_in.info.run_id
    except BaseException:
        client.set_terminated(stand_in.info.run_id, status="FAILED")
        raise
    client.set_terminated(stand_in.info.run_id, status="FINISHED")


def _end(run_id: str, status: str, reason: str) -> None:
    try:
        MlflowClient().set_tag(run_id, RUN_ERROR, reason[:5000])
    finally:
        mlflow.end_run(status)


def log_run_data(run_id: str, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """Params (credentials redacted) and metrics in one batched request (each REST call to a server costs ~40 ms)."""
    now = int(time.time() * 1000)
    MlflowClient().log_batch(
        run_id,
        metrics=[Metric(name, float(value), now, 0) for name, value in metrics.items()],
        params=[Param(name, _param_text(value)) for name, value in redact(params).items()],
    )


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_PARAM_VALUE_LIMIT]


def log_results_table(run_id: str, rows: Sequence[Mapping[str, Any]], artifact_file: str = RESULTS_ARTIFACT) -> None:
    """A per-sample table (by default ``eval_results.json``, which the MLflow UI shows under Evaluation)."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # schema inference hints about integer columns
        mlflow.log_table(pd.DataFrame(list(rows)), artifact_file=artifact_file, run_id=run_id)


def read_table(run_id: str, artifact_file: str = RESULTS_ARTIFACT, *, directory: str | Path, client: MlflowClient | None = None) -> list[dict[str, Any]]:
    """The rows of a per-sample table written by :func:`log_results_table` or :func:`replace_table`, downloaded into ``directory``.

    Raises what the download or the JSON raises (``MlflowException``, ``OSError``, ``ValueError``,
    ``KeyError``, ``TypeError``): each reader says in its own words what a missing table means.
    """
    path = (client or MlflowClient()).download_artifacts(run_id, artifact_file, str(directory))
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    columns, data = table["columns"], table["data"]
    return [dict(zip(columns, values)) for values in data]


def replace_table(run_id: str, rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
    """A per-sample table in ``log_table``'s JSON layout (``columns``, ``data``), replaced if it exists.

    ``log_table`` appends to an existing table, so an analysis run twice would double its rows; this writes it anew.
    """
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    table = json.loads(frame.to_json(orient="split", index=False, date_format="iso", default_handler=str))
    MlflowClient().log_dict(run_id, {"columns": table["columns"], "data": table["data"]}, artifact_file)


def log_category_assessments(run_id: str, categories: Mapping[str, tuple[str, str]], *, judge: str | None) -> int:
    """Each analyzed sample's ``error_category`` (with its reason) as feedback on the sample's trace; returns how many landed.

    ``judge`` (``provider:model_id``) sources them to an LLM judge; ``None``: to the offline analysis (code).
    Samples without a trace (``traces: false``, runs logged by other tools) are skipped.
    """
    from mlflow.entities import AssessmentSource

    source = (AssessmentSource(source_type="LLM_JUDGE", source_id=judge) if judge
              else AssessmentSource(source_type="CODE", source_id="agility analyze (offline)"))
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    logged = 0
    for trace in mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list"):
        spans = trace.data.spans
        sample_id = str(spans[0].attributes.get(TRACE_SAMPLE_ID)) if spans else None
        if sample_id is not None and sample_id in categories:
            category, reason = categories[sample_id]
            mlflow.log_feedback(trace_id=trace.info.trace_id, name="error_category", value=category, rationale=reason or None, source=source)
            logged += 1
    return logged


def log_artifacts(run_id: str, paths: Sequence[Path]) -> None:
    """Files (a report, its verdicts) as artifacts of ``run_id``."""
    client = MlflowClient()
    for path in paths:
        client.log_artifact(run_id, str(path))


def log_figure(run_id: str, figure: Any, artifact_file: str) -> None:
    """A matplotlib or plotly figure as an image artifact."""
    MlflowClient().log_figure(run_id, figure, artifact_file)


def log_human_assessments(run_id: str, scores: Mapping[str, tuple[float, str]], name: str = "human_score") -> int:
    """Human feedback ``{sample_id: (score, reasoning)}`` on the run's sample traces; returns how many landed.

    Samples without a trace (runs logged with ``traces: false``) are skipped: the scores are on the run anyway.
    """
    from mlflow.entities import AssessmentSource

    logged = 0
    # The run's own experiment: by default MLflow searches the active one, which a fresh process does not have.
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    for trace in mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list"):
        spans = trace.data.spans
        sample_id = str(spans[0].attributes.get(TRACE_SAMPLE_ID)) if spans else None
        if sample_id is not None and sample_id in scores:
            score, reasoning = scores[sample_id]
            mlflow.log_feedback(trace_id=trace.info.trace_id, name=name, value=score, rationale=reasoning or None,
                                source=AssessmentSource(source_type="HUMAN", source_id="agility review import"))
            logged += 1
    return logged


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """A text artifact (a diff, an analysis)."""
    MlflowClient().log_text(run_id, text, artifact_file)


def log_config(run_id: str, config: Mapping[str, Any]) -> None:
    """The resolved config as ``config.yaml``, credentials redacted."""
    MlflowClient().log_dict(run_id, redact(config), "config.yaml")


def log_dataset(rows: Sequence[Mapping[str, Any]], source: str, name: str, digest: str) -> None:
    """The golden dataset as the active run's evaluation input (the UI's Datasets column)."""
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # schema inference hints about integer columns
        dataset = from_pandas(pd.DataFrame(list(rows)), source=source, name=name, digest=digest)
    try:
        mlflow.log_input(dataset, context="evaluation")
    except MlflowException:
        # Two processes logging the same dataset at once collide on its unique key; the row now exists.
        time.sleep(0.2)
        mlflow.log_input(dataset, context="evaluation")


def prepare_traces() -> None:
    """Get the background trace writer ready for the current tracking URI; call it before any call's thread starts."""
    from agility_mlflow import _trace_writer

    _trace_writer.prepare(mlflow.get_tracking_uri())


def flush_traces() -> None:
    """Wait until the queued sample traces are written, so a run ends only after its traces are stored."""
    from agility_mlflow import _trace_writer

    _trace_writer.flush()


def log_sample_trace(call: SampleCall, judgements: Sequence[Judgement] = ()) -> str:
    """One trace for one sample, timed as the call was, with token usage and cost for MLflow's views,
    and ``judgements``, the judge's feedback on it.

    Must be called while the sample's run is active, so the trace is linked to it. Returns the
    trace id at once: the trace is written in bulk in the background (:func:`flush_traces` waits),
    so logging it never waits on the tracking store.
    """
    from agility_mlflow import _trace_writer

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_sample_trace needs an active run")
    trace_id, span = _trace_writer.sample_span(call)
    _trace_writer.submit(mlflow.get_tracking_uri(), run.info.experiment_id, run.info.run_id, trace_id, span, judgements)
    return trace_id


def log_pyfunc_model(
    code: Path, model_config: Mapping[str, Any], *, code_paths: Sequence[Path] = (), input_columns: Sequence[str] = ()
) -> Any:
    """A models-from-code pyfunc model logged to the active run.

    Its signature takes one string column per name in ``input_columns`` and returns one string per row.
    ``model_config`` is stored in the model's ``MLmodel`` file: credentials in it are redacted.
    """
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    signature = ModelSignature(Schema([ColSpec(DataType.string, name) for name in input_columns]), Schema([ColSpec(DataType.string)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            model_config=redact(model_config),
            code_paths=[str(p) for p in code_paths],
            signature=signature,
            pip_requirements=[f"mlflow=={mlflow.__version__}", "llama-cpp-python", "openai", "boto3", "pydantic", "tenacity"],
        )


def register_model(model_uri: str, name: str, alias: str, tags: Mapping[str, str], prompt_uri: str, description: str = "") -> str:
    """Register ``model_uri`` as a new version of ``name`` with ``tags`` and ``alias``; alias the prompt version too.

    Credentials in ``tags`` are redacted, also inside tags holding JSON. Returns the model version.
    """
    client = MlflowClient()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        version = mlflow.register_model(model_uri, name, tags={k: _redact_text(str(v)) for k, v in tags.items()}).version
    if description:
        client.update_model_version(name, version, description=description)
    client.set_registered_model_alias(name, alias, version)
    prompt_name, _, prompt_version = prompt_uri.removeprefix("prompts:/").partition("/")
    if prompt_version.isdigit():
        mlflow.genai.set_prompt_alias(prompt_name, alias, int(prompt_version))
    return str(version)
