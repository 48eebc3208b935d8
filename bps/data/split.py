"""Train/val/test split protocols: what a test score can claim depends on what training saw.

Every BPS condition is one plate, and the Fe and X-ray plates are two experiment batches on two
well layouts, so a model can score by recognising a plate, a batch or a well position instead
of radiation damage. ``split.protocol`` chooses what the test split holds out:

* ``grouped`` (default): whole groups (``split.group_by``: well, field, or single images) are
  dealt to train/val/test within each (particle, dose, hours) condition, which stratifies every
  target. Neighbouring nuclei never straddle splits, but every test plate is also a training
  plate: plate recognition is rewarded.
* ``leave_hour_out``: the test split is every image taken ``split.test_hour`` hours after
  exposure; train and val deal whole groups of the other hours' plates. Plate-disjoint: no test
  plate (and no test hour) is seen in training. Validation shares plates with training, unless
  ``split.val_unit`` is ``plate``: then it is whole irradiated plates of the training hours (each
  batch's share, at least one), so what is chosen on validation is chosen on unseen plates too.
  Sham plates stay in training: a sham's particle label is its batch's, so a sham plate in
  validation would score plate reading, the thing plate-disjoint validation is there to catch.
* ``leave_wells_out``: whole well *positions* (e.g. ``C7``) of each batch (the Fe plates, the
  X-ray plates) go to test, and others to val, on every plate of that batch. Well-disjoint
  (in case wells are animals or strains) but not plate-disjoint: every plate is in every split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bps.core.errors import PipelineError
from bps.core.params import SplitParams
from bps.core.paths import SPLITS
from bps.data.meta import CONDITION_COLUMNS

PROTOCOLS = ("grouped", "leave_hour_out", "leave_wells_out")
# The experiment batch a plate belongs to: in BPS the Fe and X-ray plates were two experiments.
BATCH_COLUMN = "particle_type"
MORE_IMAGES = "raise data.max_per_condition (or data.synthetic.images_per_condition)"


class SplitError(PipelineError, ValueError):
    """The selected images cannot fill every split under the chosen protocol."""


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


def _val_count(n_groups: int, fractions: tuple[float, float, float]) -> int:
    """Validation groups when test is held out otherwise: val's share of train + val, at least one each."""
    share = fractions[1] / (fractions[0] + fractions[1])
    return min(n_groups - 1, max(1, round(share * n_groups)))


def well_position(table: pd.DataFrame) -> pd.Series:
    """The well's position on its plate (``C7``), without the plate (``well`` is ``P242-C7``)."""
    return table["well"].str.split("-", n=1).str[1]


def condition_name(particle: str, dose_gy: float, hours: int) -> str:
    return f"{particle} {dose_gy:g} Gy {hours} h"


def _groups(table: pd.DataFrame, group_by: str) -> pd.Series:
    return pd.Series(table.index.astype(str), index=table.index) if group_by == "none" else table[group_by]


def _unit_name(group_by: str) -> str:
    return {"none": "images", "well": "wells", "field": "fields"}[group_by]


def _more_groups(group_by: str) -> str:
    """What to change when a condition has too few groups: more images, or smaller groups."""
    smaller = {"well": "field or none", "field": "none", "none": ""}[group_by]
    return f"{MORE_IMAGES}, or split.group_by: {smaller}" if smaller else MORE_IMAGES


def _too_few(what: str, count: int, unit: str, needed: str, protocol: str, fix: str) -> SplitError:
    return SplitError(
        f"split: {what} has {count} {unit}, too few to give {needed} one each (split.protocol {protocol}); {fix}"
    )


def _deal(split: pd.Series, rows: pd.Index, groups: pd.Series, names: np.ndarray, counts, splits) -> None:
    """Give the rows of the first ``counts[0]`` shuffled group names to ``splits[0]``, and so on."""
    bounds = np.cumsum(counts)
    for split_name, chunk in zip(splits, np.split(names, bounds[:-1])):
        split[rows[groups[rows].isin(chunk)]] = split_name


def _grouped(table, group_by, fractions, rng, split) -> None:
    groups = _groups(table, group_by)
    fix = _more_groups(group_by)
    for key, rows in table.groupby(CONDITION_COLUMNS, sort=True):
        names = np.array(sorted(set(groups[rows.index])))
        if len(names) < len(SPLITS):
            raise _too_few(f"condition {condition_name(*key)}", len(names), _unit_name(group_by),
                           "train, val and test", "grouped", fix)
        rng.shuffle(names)
        _deal(split, rows.index, groups, names, _group_counts(len(names), fractions), SPLITS)


def _leave_hour_out(table, group_by, fractions, rng, split, test_hour: int, val_unit: str) -> None:
    held_out = table["hr_post_exposure"] == test_hour
    present = sorted(table["hr_post_exposure"].unique().tolist())
    if not held_out.any() or held_out.all():
        raise SplitError(
            f"split: split.test_hour {test_hour} must be one of the hours in data/raw/meta.csv, "
            f"and not the only one (found {present}); change split.test_hour or data.hours"
        )
    split[held_out] = "test"
    if val_unit == "plate":
        _validation_plates(table[~held_out], fractions, rng, split)
        return
    groups = _groups(table, group_by)
    fix = _more_groups(group_by)
    for key, rows in table[~held_out].groupby(CONDITION_COLUMNS, sort=True):
        names = np.array(sorted(set(groups[rows.index])))
        if len(names) < 2:
            raise _too_few(f"condition {condition_name(*key)}", len(names), _unit_name(group_by),
                           "train and val", "leave_hour_out", fix)
        rng.shuffle(names)
        n_val = _val_count(len(names), fractions)
        _deal(split, rows.index, groups, names, (len(names) - n_val, n_val), ("train", "val"))


def _validation_plates(table, fractions, rng, split) -> None:
    """Per batch, its val share of the plates (at least one) from its irradiated ones; the rest train."""
    split[table.index] = "train"
    for batch, rows in table.groupby(BATCH_COLUMN, sort=True):
        irradiated = np.array(sorted(set(rows.loc[rows["dose_Gy"] > 0, "plate"])))
        if len(irradiated) < 2:
            raise _too_few(f"batch {batch}", len(irradiated), "irradiated plates outside the test hour",
                           "train and val", "leave_hour_out with split.val_unit plate",
                           "add an hour to data.hours, or use split.val_unit group")
        rng.shuffle(irradiated)
        n_val = min(len(irradiated) - 1, _val_count(rows["plate"].nunique(), fractions))
        split[rows.index[rows["plate"].isin(irradiated[:n_val])]] = "val"


def _leave_wells_out(table, fractions, rng, split) -> None:
    positions = well_position(table)
    for batch, rows in table.groupby(BATCH_COLUMN, sort=True):
        names = np.array(sorted(set(positions[rows.index])))
        if len(names) < len(SPLITS):
            raise _too_few(f"batch {batch}", len(names), "well positions", "train, val and test",
                           "leave_wells_out", f"{MORE_IMAGES}, or use split.protocol grouped")
        rng.shuffle(names)
        _deal(split, rows.index, positions, names, _group_counts(len(names), fractions), SPLITS)


def assign_splits(
    table: pd.DataFrame,
    group_by: str,
    fractions: tuple[float, float, float],
    seed: int,
    protocol: str = "grouped",
    test_hour: int = 24,
    val_unit: str = "group",
) -> pd.Series:
    """Return the split name of every row, or raise :class:`SplitError` before any is assigned.

    ``group_by`` is a column of ``table`` (``well``, ``field``) or ``none`` for single images;
    ``leave_wells_out`` ignores it (its unit is the well position), and ``leave_hour_out``
    ignores ``fractions[2]`` (its test split is the whole held-out hour) and, with ``val_unit``
    ``plate``, ``group_by`` too (its validation unit is the plate).
    """
    split = pd.Series("", index=table.index, dtype=object)
    rng = np.random.default_rng(seed)
    if protocol == "grouped":
        _grouped(table, group_by, fractions, rng, split)
    elif protocol == "leave_hour_out":
        _leave_hour_out(table, group_by, fractions, rng, split, test_hour, val_unit)
    elif protocol == "leave_wells_out":
        _leave_wells_out(table, fractions, rng, split)
    else:
        raise SplitError(f"split: unknown split.protocol {protocol!r} (allowed: {list(PROTOCOLS)})")
    _check_training_holds_every_condition(table, split, protocol, val_unit)
    return split


def _check_training_holds_every_condition(table: pd.DataFrame, split: pd.Series, protocol: str,
                                          val_unit: str) -> None:
    """Training must see every condition it is meant to (all but a held-out hour's and held-out plates')."""
    held_out = ["test", "val"] if val_unit == "plate" else ["test"]
    meant = table if protocol != "leave_hour_out" else table[~split.isin(held_out)]
    trained = set(map(tuple, table.loc[split == "train", CONDITION_COLUMNS].drop_duplicates().to_numpy()))
    for key in sorted(set(map(tuple, meant[CONDITION_COLUMNS].drop_duplicates().to_numpy()))):
        if key not in trained:
            raise SplitError(
                f"split: condition {condition_name(*key)} has no training images under split.protocol {protocol} "
                f"(its images all lie in held-out well positions); {MORE_IMAGES}"
            )


def _contents(table: pd.DataFrame, rows: pd.Index) -> dict:
    """The plates, well positions (per batch) and hours that some rows hold."""
    part = table.loc[rows]
    positions = well_position(part)
    return {
        "plates": sorted(part["plate"].unique().tolist()),
        "well_positions": {
            str(batch): sorted(positions[index].unique().tolist())
            for batch, index in part.groupby(BATCH_COLUMN, sort=True).groups.items()
        },
        "hours": sorted(int(h) for h in part["hr_post_exposure"].unique()),
    }


def summarise(table: pd.DataFrame, split: pd.Series, params: SplitParams) -> dict:
    """Per split: images, groups, conditions, and which plates, well positions and hours it holds.

    ``shared_with_train`` lists what a val or test split has in common with training, and
    ``plate_disjoint`` / ``well_position_disjoint`` say whether the test split shares none:
    computed from the assignment, not promised by the protocol's name.
    """
    group_by = params.group_by
    summary: dict = {
        "protocol": params.protocol,
        "group_by": group_by,
        "fractions": {"train": params.train, "val": params.val, "test": params.test},
        "seed": params.seed,
        "splits": {},
    }
    if params.protocol == "leave_hour_out":
        summary["test_hour"] = params.test_hour
    if params.val_unit == "plate":  # only when set: the default's summary.json stays byte for byte
        summary["val_unit"] = params.val_unit
    contents = {name: _contents(table, split.index[split == name]) for name in SPLITS}
    for name in SPLITS:
        rows = table[split == name]
        per_condition = rows.groupby(CONDITION_COLUMNS).size()
        summary["splits"][name] = {
            "images": int(len(rows)),
            "groups": int(rows[group_by].nunique()) if group_by != "none" else int(len(rows)),
            "per_condition": {condition_name(p, d, h): int(n) for (p, d, h), n in per_condition.items()},
            **contents[name],
        }
        if name != "train":
            summary["splits"][name]["shared_with_train"] = _shared(contents[name], contents["train"])
    shared = summary["splits"]["test"]["shared_with_train"]
    summary["plate_disjoint"] = not shared["plates"]
    summary["well_position_disjoint"] = not any(shared["well_positions"].values())
    return summary


def _shared(part: dict, train: dict) -> dict:
    return {
        "plates": sorted(set(part["plates"]) & set(train["plates"])),
        "well_positions": {
            batch: sorted(set(names) & set(train["well_positions"].get(batch, [])))
            for batch, names in part["well_positions"].items()
        },
        "hours": sorted(set(part["hours"]) & set(train["hours"])),
    }
