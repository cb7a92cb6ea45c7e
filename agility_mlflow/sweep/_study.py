"""The Optuna side of a sweep: storage, sampler, pruner, and cleaning up after dead workers."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from agility_mlflow._process import process_alive
from agility_mlflow.config import SQLITE_PREFIX, SweepConfig, sqlite_path
from agility_mlflow.sweep._objectives import Direction
from agility_mlflow.vocabulary import HOST as HOST_ATTR
from agility_mlflow.vocabulary import PID as PID_ATTR

logger = logging.getLogger(__name__)
T = TypeVar("T")

RUN_ATTR = "mlflow_run_id"
SPENT_ATTR = "spent_usd"
CONSTRAINTS_ATTR = "constraints"
CLAIM_ATTR = "agility.claim"
"""``granted``, or why the trial was not run (``trials`` or ``budget``): set once, before the trial runs."""
RESERVED_ATTR = "agility.reserved_usd"
"""The trial's worst-case cost, counted against the budget until its real spend is known."""


def default_storage(tracking_uri: str | None) -> str:
    """sqlite beside a sqlite tracking store (``optuna.db``); ``./optuna.db`` otherwise."""
    store = sqlite_path(tracking_uri)
    return f"{SQLITE_PREFIX}{(store.parent if store is not None else Path.cwd()) / 'optuna.db'}"


def open_study(
    name: str,
    storage_url: str,
    sweep: SweepConfig,
    directions: Sequence[Direction],
    constraints: Callable[[FrozenTrial], Sequence[float]] | None,
    search_space: dict[str, list[Any]] | None = None,
) -> optuna.Study:
    """Create the study, or join it when another worker (or an earlier, killed run) made it."""
    storage = _storage(storage_url, sweep.heartbeat_s)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        directions=list(directions),
        sampler=_sampler(sweep, constraints, search_space),
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


def committed_usd(trials: Sequence[FrozenTrial], reserve_usd: float) -> float:
    """Spend known, plus the reservation of every trial that holds a place and has no spend recorded yet.

    A trial that ran but died before recording its spend keeps its reservation: its calls were paid.
    A queued (WAITING) trial will run with the study's worst case.
    """
    total = 0.0
    for trial in trials:
        if not holds_place(trial) and not (trial.state == TrialState.FAIL and trial.system_attrs.get(CLAIM_ATTR) == GRANTED):
            continue
        if SPENT_ATTR in trial.user_attrs:
            total += float(trial.user_attrs[SPENT_ATTR])
        else:
            total += float(trial.system_attrs.get(RESERVED_ATTR, reserve_usd))
    return total


GRANTED = "granted"


@dataclass(frozen=True)
class Claim:
    """Whether a trial may run: ``refused`` is ``None`` when it may, else ``"trials"`` or ``"budget"``."""

    refused: str | None
    message: str


class ClaimRefused(Exception):
    """Raised inside a trial that claimed a place past the study's total or budget: the trial ends FAIL, unrun."""


def claim(
    study: optuna.Study,
    trial: optuna.Trial,
    *,
    total_trials: int,
    reserve_usd: float,
    budget_usd: float | None,
    poll_s: float = 0.05,
) -> Claim:
    """Claim a place for ``trial`` in the study before it runs, exactly, whatever the number of workers.

    The storage numbers trials atomically (Optuna locks the study row to number a new trial), so
    places are given in trial-number order: a trial first records its worst-case cost, waits until
    every lower-numbered trial has decided (milliseconds; a dead worker's trial is failed by the
    heartbeat), and then runs only when fewer than ``total_trials`` lower trials hold a place and the
    lower trials' spend and reservations plus its own stay within ``budget_usd``. Every worker
    sees the same lower trials, so no two can take the same last place or the same last dollar.

    Example:
        >>> study = optuna.create_study()
        >>> claims = [claim(study, study.ask(), total_trials=2, reserve_usd=0.0, budget_usd=None) for _ in range(3)]
        >>> [c.refused for c in claims]
        [None, None, 'trials']
    """
    storage = study._storage
    storage.set_trial_system_attr(trial._trial_id, RESERVED_ATTR, reserve_usd)
    earlier = _decided_earlier_trials(study, trial.number, poll_s)
    places = sum(holds_place(t) for t in earlier)
    committed = committed_usd(earlier, reserve_usd)
    if places >= total_trials:
        decision = Claim("trials", f"the study already holds its {total_trials} trials")
    elif budget_usd is not None and committed + reserve_usd > budget_usd + 1e-12:
        decision = Claim("budget", f"${committed:.4f} spent or reserved; a trial may cost up to ${reserve_usd:.4f}, "
                                   f"over the budget of ${budget_usd:.4f}")
    else:
        decision = Claim(None, f"place {places + 1} of {total_trials}")
    storage.set_trial_system_attr(trial._trial_id, CLAIM_ATTR, decision.refused or GRANTED)
    return decision


def holds_place(trial: FrozenTrial) -> bool:
    """A trial that counts towards the total: finished, running with a granted claim, or queued to run."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING):
        return trial.system_attrs.get(CLAIM_ATTR, GRANTED) == GRANTED
    return trial.state == TrialState.RUNNING and trial.system_attrs.get(CLAIM_ATTR) == GRANTED


def _decided_earlier_trials(study: optuna.Study, number: int, poll_s: float) -> list[FrozenTrial]:
    """The trials numbered below ``number``, once none of them is still deciding whether to run."""
    waited, next_cleanup = 0.0, 5.0
    while True:
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
        deciding = [t for t in earlier if t.state == TrialState.RUNNING and CLAIM_ATTR not in t.system_attrs]
        if not deciding:
            return earlier
        if waited >= next_cleanup:  # a worker that died between creating its trial and claiming
            logger.info("trial %d waits for trial %d of another worker to claim its place", number, deciding[0].number)
            fail_dead_trials(study)
            next_cleanup += 5.0
        time.sleep(poll_s)
        waited += poll_s


def refused(trial: FrozenTrial) -> bool:
    """A trial refused its place (past the total or the budget): it never ran."""
    return trial.system_attrs.get(CLAIM_ATTR, GRANTED) != GRANTED


def trials_to_ask(study: optuna.Study, total_trials: int) -> int:
    """How many trials this worker's ``study.optimize`` should take to fill the study's total.

    Queued (WAITING) trials hold a place, but ``optimize`` runs them within its own ``n_trials``
    (a killed trial's configuration, queued again, is the first one a resumed sweep takes): counting
    them as taken too left a resumed sweep one trial short. The claim in each trial keeps the total exact.

    Example:
        >>> study = optuna.create_study()
        >>> study.enqueue_trial({"x": 1.0})
        >>> trials_to_ask(study, 4)
        4
    """
    started = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    return max(total_trials - sum(holds_place(t) for t in started), 0)


def first_worker_first(study: optuna.Study, key: str, action: Callable[[], T], *, timeout_s: float = 600.0, poll_s: float = 0.2) -> T:
    """Run ``action`` in the first worker of the study to get here; the others wait until it is done, then run it too.

    For an action that reuses what an earlier call made (search, then create: the source run), workers
    starting together then create it once. The claim is atomic in the storage: the study attribute
    ``key`` is a row unique per study, so of two workers inserting it one fails, on PostgreSQL and
    sqlite alike. A waiter stops waiting when the first worker is done (or failed), when its process is
    gone (same host), or after ``timeout_s``. A storage that is not a database runs ``action`` at once.

    Example:
        >>> study = optuna.create_study(storage="sqlite:///:memory:")
        >>> first_worker_first(study, "agility.demo", lambda: "made"), study._storage.get_study_system_attrs(study._study_id)["agility.demo"]["done"]
        ('made', 'ok')
    """
    rdb = getattr(study._storage, "_backend", study._storage)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return action()
    claim: dict[str, str | int] = {HOST_ATTR: socket.gethostname(), PID_ATTR: os.getpid(), "token": uuid.uuid4().hex}
    if _insert_once(rdb, study._study_id, key, claim):
        try:
            result = action()
        except BaseException:
            rdb.set_study_system_attr(study._study_id, key, {**claim, "done": "failed"})  # the others then try it themselves
            raise
        rdb.set_study_system_attr(study._study_id, key, {**claim, "done": "ok"})
        return result
    waited = 0.0
    while True:
        holder = rdb.get_study_system_attrs(study._study_id).get(key) or {}
        gone = holder.get(HOST_ATTR) == claim[HOST_ATTR] and not process_alive(int(holder.get(PID_ATTR, 0)))
        if holder.get("done") or gone or waited >= timeout_s:
            return action()
        time.sleep(poll_s)
        waited += poll_s


def _insert_once(rdb: optuna.storages.RDBStorage, study_id: int, key: str, value: dict[str, Any]) -> bool:
    """Insert the study attribute; ``False`` when it exists (Optuna's own setter would overwrite it)."""
    from optuna.storages._rdb import models
    from sqlalchemy.exc import IntegrityError

    session = rdb.scoped_session()
    try:
        session.add(models.StudySystemAttributeModel(study_id=study_id, key=key, value_json=json.dumps(value)))
        session.commit()
        return True
    except IntegrityError:
        session.rollback()
        return False
    finally:
        session.close()
