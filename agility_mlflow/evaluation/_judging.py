"""The judge model: built from the config's ``judge:`` section and bound into the judged metrics."""

from __future__ import annotations

import logging

from agility_mlflow.backends import create_backend
from agility_mlflow.config import Config
from agility_mlflow.errors import AgilityError, InputError
from agility_mlflow.evaluation._entities import Project
from agility_mlflow.pricing import lookup_price
from agility_mlflow.runner import Runner
from agility_mlflow.scoring import Judge, get_metric

logger = logging.getLogger(__name__)


def create_judge(project: Project, runner: Runner) -> Judge | None:
    """The project's judge (``None`` when no metric needs one); the project's judged metrics are rebuilt with it.

    The judge's backend is built like a candidate's, so a missing key fails before any run.
    """
    from agility_mlflow.scoring import Embedder

    cfg = project.config
    if not project.judged_metrics or cfg.judge is None:
        return None
    judge = build_judge(cfg, runner)
    embeddings = cfg.judge.embeddings
    judge.embedder = Embedder(embeddings, runner, lookup_price(embeddings.provider, embeddings.model_id, cfg.price_overrides()))
    # Judged metrics are built with the judge that scores them (string metrics ignore it).
    project.metrics = [get_metric(m.name, judge=judge) for m in project.metrics]
    return judge


def build_judge(cfg: Config, runner: Runner) -> Judge:
    """The config's ``judge:`` model behind ``runner``, priced; a bad judge section is an :class:`InputError`.

    The caller closes ``judge.backend``.
    """
    assert cfg.judge is not None
    try:
        backend = create_backend(cfg.judge, cfg.run)
    except AgilityError as exc:
        raise InputError(f"{cfg.path.name}: judge: {exc}") from None
    price = lookup_price(cfg.judge.provider, cfg.judge.model_id, cfg.price_overrides())
    if price is None:
        logger.warning("no price known for judge model '%s': judge cost is reported as unknown (add it under pricing:)", cfg.judge.model_id)
    return Judge(cfg.judge, runner, backend, price, style_guide=judge_style_guide(cfg))


def judge_style_guide(cfg: Config) -> str | None:
    """The judge's style guide: a file relative to the config when one exists by that name, else the text itself."""
    text = cfg.judge.style_guide if cfg.judge else None
    if not text:
        return None
    if "\n" not in text and len(text) < 256:
        path = cfg.resolve(text)
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{cfg.path.name}: key 'judge.style_guide': {path.name} is not UTF-8 text (byte {exc.start})") from None
    return text


def warn_same_family(project: Project) -> None:
    """A judge tends to prefer answers of its own family: say so when it judges one."""
    from agility_mlflow.scoring import model_family

    judge = project.config.judge
    if judge is None or not project.judged_metrics:
        return
    family = model_family(judge.model_id)
    for configuration in project.configurations:
        if configuration.role != "source" and model_family(configuration.model.model_id) == family:
            logger.warning(
                "the judge %s is of the same model family ('%s') as candidate '%s': it may favour it; prefer a judge of another family",
                judge.model_id, family, configuration.name,
            )
