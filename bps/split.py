"""Leak-free train/val/test split, stratified by condition and grouped by well or field.

Each plate holds one condition and neighbouring nuclei in a field (or a well) share staining,
focus and culture history, so a random image-level split lets a model score on neighbours it
has already seen. Here whole groups go to one split, and groups are dealt out within each
(particle, dose, hours) condition, which stratifies every target derived from it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bps.meta import CONDITION_COLUMNS

SPLITS = ("train", "val", "test")


def _group_counts(n_groups: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many groups each split gets; val and test get at least one when there are three."""
    if n_groups < 3:
        return (1, 0, 1) if n_groups == 2 else (n_groups, 0, 0)
    n_val = max(1, round(fractions[1] * n_groups))
    n_test = max(1, round(fractions[2] * n_groups))
    while n_val + n_test > n_groups - 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_groups - n_val - n_test, n_val, n_test


def assign_splits(
    table: pd.DataFrame,
    group_by: str,
    fractions: tuple[float, float, float],
    seed: int,
) -> pd.Series:
    """Return the split name of every row.

    ``group_by`` is a column of ``table`` (``well``, ``field``) or ``none`` for single images.
    """
    groups = pd.Series(table.index.astype(str), index=table.index) if group_by == "none" else table[group_by]
    split = pd.Series("", index=table.index, dtype=object)
    rng = np.random.default_rng(seed)
    for _, rows in table.groupby(CONDITION_COLUMNS, sort=True):
        names = np.array(sorted(set(groups[rows.index])))
        rng.shuffle(names)
        counts = _group_counts(len(names), fractions)
        bounds = np.cumsum(counts)
        for split_name, chunk in zip(SPLITS, np.split(names, bounds[:-1])):
            split[rows.index[groups[rows.index].isin(chunk)]] = split_name
    return split


def summarise(table: pd.DataFrame, split: pd.Series, group_by: str) -> dict:
    """Image and group counts per split and condition, for people to check the balance."""
    summary: dict = {"group_by": group_by, "splits": {}}
    for name in SPLITS:
        rows = table[split == name]
        per_condition = rows.groupby(CONDITION_COLUMNS).size()
        summary["splits"][name] = {
            "images": int(len(rows)),
            "groups": int(rows[group_by].nunique()) if group_by != "none" else int(len(rows)),
            "per_condition": {f"{p} {d:g} Gy {h} h": int(n) for (p, d, h), n in per_condition.items()},
        }
    return summary
