"""Seeded stratified train/validation/test split."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

from enrich_model.schema import CatalogueSchema

T = TypeVar("T")


def stratified_split(
    items: Sequence[T], key: Callable[[T], str | None], fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 42,
) -> tuple[list[T], list[T], list[T]]:
    """Split each stratum (e.g. articleType) by `fractions`, so rare classes appear in every split they can.

    A stratum too small to reach validation or test keeps its items in train: a class seen only at
    test time could never be predicted anyway.
    """
    rng = random.Random(seed)
    strata: dict[str, list[T]] = defaultdict(list)
    for item in items:
        strata[key(item) or ""].append(item)
    train: list[T] = []
    validation: list[T] = []
    test: list[T] = []
    for name in sorted(strata):
        group = strata[name]
        rng.shuffle(group)
        n_test = round(len(group) * fractions[2])
        n_val = round(len(group) * fractions[1])
        test += group[:n_test]
        validation += group[n_test:n_test + n_val]
        train += group[n_test + n_val:]
    for split in (train, validation, test):
        rng.shuffle(split)
    return train, validation, test


def stratum_attribute(schema: CatalogueSchema) -> str | None:
    """What the split stratifies by: the product attribute (else the tree's root, else the first single one)."""
    return schema.roles.get("product") or (schema.tree or schema.single or (None,))[0]


def stratum(schema: CatalogueSchema) -> Callable:
    key = stratum_attribute(schema)
    return (lambda item: item.labels.get(key)) if key else (lambda item: None)
