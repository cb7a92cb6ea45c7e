"""The train / validation / test split, fixed by ``sample_id``.

Each sample's split is decided by a hash of its id and the seed, not by its row position: adding,
removing or reordering rows never moves a sample that stays from one split to another, and the same
config always gives the same split. With ``stratify``, each value of that column is split on its own,
so every split keeps the column's proportions.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agility_mlflow.config import SplitConfig
from agility_mlflow.dataset import SAMPLE_ID
from agility_mlflow.errors import InputError


@dataclass(frozen=True)
class Split:
    """Sample ids of each split, in dataset order."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def sizes(self) -> str:
        return f"{len(self.train)}/{len(self.validation)}/{len(self.test)}"


def split_samples(rows: Sequence[Mapping[str, Any]], config: SplitConfig, where: str = "optimize.split") -> Split:
    """Assign each row to train, validation or test by its ``sample_id``.

    Every split gets at least one sample (so the dataset needs three); within each stratum the
    counts follow the fractions, rounded so that they add up.

    Example:
        >>> rows = [{"sample_id": f"q{i}", "kind": "ab"[i % 2]} for i in range(10)]
        >>> split = split_samples(rows, SplitConfig(train=0.6, validation=0.2, test=0.2, seed=0))
        >>> split.sizes(), sorted(split.train + split.validation + split.test) == sorted(r["sample_id"] for r in rows)
        ('6/2/2', True)
        >>> split_samples(rows, SplitConfig(seed=0)) == split
        True
    """
    if len(rows) < 3:
        raise InputError(f"{where}: needs at least 3 samples (one per split), the dataset has {len(rows)}")
    strata: dict[Any, list[str]] = defaultdict(list)
    for i, row in enumerate(rows, start=1):
        if config.stratify is not None:
            if config.stratify not in row:
                raise InputError(f"{where}.stratify: no column '{config.stratify}' in the dataset")
            key = row[config.stratify]
            if key is None:
                raise InputError(f"{where}.stratify: row {i} (sample_id '{row[SAMPLE_ID]}') has no value in '{config.stratify}'")
        else:
            key = None
        strata[key].append(str(row[SAMPLE_ID]))
    chosen: dict[str, str] = {}
    for ids in strata.values():
        ordered = sorted(ids, key=lambda sample_id: _rank(sample_id, config.seed))
        n_train, n_validation = _counts(len(ordered), config)
        for position, sample_id in enumerate(ordered):
            chosen[sample_id] = "train" if position < n_train else "validation" if position < n_train + n_validation else "test"
    _ensure_each_split(chosen, config.seed)
    order = [str(row[SAMPLE_ID]) for row in rows]
    return Split(*(tuple(i for i in order if chosen[i] == name) for name in ("train", "validation", "test")))


def _rank(sample_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()


def _counts(n: int, config: SplitConfig) -> tuple[int, int]:
    """Train and validation counts of a stratum of ``n``; test gets the rest (largest remainders round up)."""
    exact = [n * config.train, n * config.validation, n * config.test]
    counts = [int(x) for x in exact]
    for i in sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    return counts[0], counts[1]


def _ensure_each_split(chosen: dict[str, str], seed: int) -> None:
    """Small strata can leave a split empty: move one sample into it from the largest split."""
    for name in ("validation", "test", "train"):
        members = {split: [i for i, s in chosen.items() if s == split] for split in ("train", "validation", "test")}
        if not members[name]:
            donor = max(members, key=lambda split: len(members[split]))
            chosen[min(members[donor], key=lambda sample_id: _rank(sample_id, seed))] = name
