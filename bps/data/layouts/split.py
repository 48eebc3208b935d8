"""The grouped split of a multi-channel layout (``data.source: layout``): whole groups, never shared.

``split.group_by`` names one of ``data.layout.group_columns`` (RxRx1: ``experiment``, ``plate``,
``well``) or ``none`` (every sample its own group). Groups are dealt at random to train, val and
test with bps/data/split.py's counts (at least one group each); a group never straddles two splits.
Not stratified: a plate or an experiment holds every class, and a multi-label sample many.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bps.core.params import SplitParams
from bps.data.layouts.meta import CONTROL_CLASS, IS_CONTROL, LABEL, SAMPLE, split_labels
from bps.data.split import SPLITS, SplitError, _deal, _group_counts


def layout_groups(table: pd.DataFrame, group_columns: list[str], group_by: str) -> pd.Series:
    """Each sample's group under ``group_by``: that column joined with every column before it in
    ``group_columns`` (outermost first), since a plate number is only unique within its
    experiment; ``none``: the sample itself."""
    if group_by == "none":
        return table[SAMPLE].astype(str)
    columns = group_columns[: group_columns.index(group_by) + 1]
    return table[columns].astype(str).agg("/".join, axis=1)


def assign_splits(
    groups: pd.Series, group_by: str, fractions: tuple[float, float, float], seed: int
) -> pd.Series:
    """Each sample's split: whole groups dealt at random, at least one to each split."""
    names = np.array(sorted(set(groups)))
    if len(names) < len(SPLITS):
        finer = "a finer column of data.layout.group_columns, or none" if group_by != "none" else "more samples"
        raise SplitError(
            f"split: the samples form {len(names)} group(s) by {group_by}, too few to give train, val and test "
            f"one each; use split.group_by: {finer}"
        )
    np.random.default_rng(seed).shuffle(names)
    split = pd.Series("", index=groups.index, dtype=object)
    _deal(split, groups.index, groups, names, _group_counts(len(names), fractions), SPLITS)
    return split


def summarise(table: pd.DataFrame, groups: pd.Series, split: pd.Series, params: SplitParams,
                     classes: list[str], separator: str | None, controls: str) -> dict:
    """Per split: samples, groups, controls and per-class counts; which groups it shares with
    training (none, by construction: ``group_disjoint`` checks it from the assignment)."""
    summary: dict = {
        "protocol": params.protocol,
        "group_by": params.group_by,
        "fractions": {"train": params.train, "val": params.val, "test": params.test},
        "seed": params.seed,
        "controls": controls,
        "classes": classes,
        "splits": {},
    }
    train_groups = set(groups[split == "train"])
    for name in SPLITS:
        rows = table[split == name]
        counts = {label: 0 for label in classes}
        for label in rows[LABEL]:
            for part in split_labels(label, None if label == CONTROL_CLASS else separator):
                counts[part] += 1
        summary["splits"][name] = {
            "samples": int(len(rows)),
            "groups": int(groups[split == name].nunique()),
            "controls": int(rows[IS_CONTROL].sum()),
            "per_class": counts,
        }
        if name != "train":
            summary["splits"][name]["groups_shared_with_train"] = sorted(set(groups[split == name]) & train_groups)
    summary["group_disjoint"] = not any(summary["splits"][name]["groups_shared_with_train"] for name in ("val", "test"))
    return summary
