"""The Optuna side of a sweep: storage, sampler, pruner, and cleaning up after dead workers."""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from agility_mlflow._process import process_alive
from agility_mlflow.config import SweepConfig

HOST_ATTR = "agility.host"
PID_ATTR = "agility.pid"
RUN_ATTR = "mlflow_run_id"
SPENT_ATTR = "spent_usd"
CONSTRAINTS_ATTR = "constraints"


def default_storage(tracking_uri: str | None) -> str:
    """sqlite beside a sqlite tracking store (``optuna.db``); ``./optuna.db`` otherwise."""
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri[len('sqlite:///'):]).parent / 'optuna.db'}"
    return f"sqlite:///{Path.cwd() / 'optuna.db'}"


def open_study(
    name: str,
    storage_url: str,
    sweep: SweepConfig,
    directions: Sequence[str],
    constraints: Callable[[FrozenTrial], Sequence[float]] | None,
    search_space: dict[str, list[Any]] | None = None,
) -> optuna.Study:
    """Create the study, or join it when another worker (or an earlier, killed run) made it."""
    storage = _storage(storage_url, sweep.heartbeat_s)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        directions=list(directions),
        sampler=_sampler(sweep, len(directions) > 1, constraints, search_space),
        pruner=_pruner(sweep, len(directions) > 1),
        load_if_exists=True,
    )


def _storage(url: str, heartbeat_s: int, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage; workers starting together on a fresh database race to create its tables."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.9
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=heartbeat_s,
                    grace_period=2 * heartbeat_s,
                    engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
                )
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())  # the other worker is creating the tables: use them next time
    raise AssertionError("unreachable")


def _sampler(
    sweep: SweepConfig,
    multi: bool,
    constraints: Callable[[FrozenTrial], Sequence[float]] | None,
    search_space: dict[str, list[Any]] | None,
) -> optuna.samplers.BaseSampler:
    seed = sweep.seed
    if sweep.sampler == "grid":
        assert search_space is not None
        return optuna.samplers.GridSampler(search_space, seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if sweep.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    # TPE handles categorical choices, conditional spaces, several objectives and constraints.
    return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints, multivariate=True, n_startup_trials=5)


def _pruner(sweep: SweepConfig, multi: bool) -> optuna.pruners.BasePruner:
    if multi or sweep.pruner == "none" or sweep.slices == 1:
        return optuna.pruners.NopPruner()  # Optuna prunes single-objective studies only
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=sweep.slices)
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail this host's RUNNING trials whose process is gone (``kill -9``); returns their numbers.

    Trials of live workers, here or elsewhere, are left alone; a dead worker on another machine is
    caught by Optuna's heartbeat after its grace period.
    """
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.system_attrs.get(HOST_ATTR) != host:
            continue
        pid = int(trial.system_attrs.get(PID_ATTR, 0))
        if pid and not process_alive(pid):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            _requeue(study, trial)
            failed.append(trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed


def _requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue the killed trial's configuration again, so the resumed study still evaluates it.

    As Optuna's ``RetryFailedTrialCallback`` does for heartbeat failures, but without the dead
    trial's user attributes (its MLflow run id, its spend): the retry is a trial of its own. Its
    grid id goes with it, so a grid search does not count the killed point as visited and stop short.
    """
    if not trial.params:
        return
    kept = {k: v for k, v in trial.system_attrs.items() if k in ("grid_id", "search_space")}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={**kept, "failed_trial": trial.number},
    ))


def mark_worker(study: optuna.Study, trial: optuna.Trial) -> None:
    study._storage.set_trial_system_attr(trial._trial_id, HOST_ATTR, socket.gethostname())
    study._storage.set_trial_system_attr(trial._trial_id, PID_ATTR, os.getpid())


def spent_usd(study: optuna.Study) -> float:
    """Money the study's trials have spent on model calls (cache hits cost nothing), across workers."""
    return sum(float(t.user_attrs.get(SPENT_ATTR, 0.0)) for t in study.get_trials(deepcopy=False))


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
