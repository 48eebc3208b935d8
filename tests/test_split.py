"""bps.split: whole groups per split, every condition in every split, reproducible for a seed."""

import pandas as pd
import pytest

from bps.meta import CONDITION_COLUMNS, with_groups
from bps.simulate import plan_dataset
from bps.split import SPLITS, _group_counts, assign_splits, summarise

FRACTIONS = (0.7, 0.15, 0.15)
PER_CONDITION = 30


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return with_groups(plan_dataset(PER_CONDITION, [4, 24, 48], seed=0))


@pytest.mark.parametrize(
    ("n_groups", "expected"),
    [
        (1, (1, 0, 0)),
        (2, (1, 0, 1)),
        (3, (1, 1, 1)),
        (4, (2, 1, 1)),  # round(0.6) = 1 each
        (8, (6, 1, 1)),  # round(1.2) = 1 each
        (20, (14, 3, 3)),
        (30, (22, 4, 4)),  # round(4.5) = 4 (half to even)
    ],
)
def test_group_counts(n_groups, expected):
    assert _group_counts(n_groups, FRACTIONS) == expected
    assert sum(expected) == n_groups


def test_group_counts_leave_train_at_least_one_group():
    assert _group_counts(3, (0.2, 0.4, 0.4)) == (1, 1, 1)
    assert _group_counts(5, (0.2, 0.4, 0.4)) == (1, 2, 2)


@pytest.mark.parametrize("group_by", ["well", "field"])
def test_no_group_straddles_two_splits(table, group_by):
    split = assign_splits(table, group_by, FRACTIONS, seed=0)
    assert set(split) == set(SPLITS)
    splits_per_group = split.groupby(table[group_by]).nunique()
    assert (splits_per_group == 1).all()


@pytest.mark.parametrize("group_by", ["well", "field", "none"])
def test_every_condition_in_every_split(table, group_by):
    split = assign_splits(table, group_by, FRACTIONS, seed=0)
    present = pd.crosstab([table[c] for c in CONDITION_COLUMNS], split)
    assert len(present) == 17
    assert list(present.columns) == sorted(SPLITS)
    assert (present > 0).all().all()


@pytest.mark.parametrize(("group_by", "tolerance"), [("field", 0.06), ("well", 0.1)])
def test_fractions_roughly_respected_in_images(table, group_by, tolerance):
    split = assign_splits(table, group_by, FRACTIONS, seed=0)
    shares = split.value_counts(normalize=True)
    for name, fraction in zip(SPLITS, FRACTIONS):
        assert abs(shares[name] - fraction) <= tolerance, (name, shares[name])


def test_group_by_none_splits_single_images_exactly(table):
    split = assign_splits(table, "none", FRACTIONS, seed=0)
    # 30 images per condition: 22 / 4 / 4 (see test_group_counts), for each of 17 conditions.
    assert split.value_counts().to_dict() == {"train": 22 * 17, "val": 4 * 17, "test": 4 * 17}
    per_condition = pd.crosstab([table[c] for c in CONDITION_COLUMNS], split)
    assert (per_condition["train"] == 22).all()
    assert (per_condition["val"] == 4).all()


def test_group_by_none_with_a_filtered_table(table):
    # A table whose index is not 0..n-1 (rows filtered out) must split just the same.
    subset = table[table["hr_post_exposure"] == 24]
    assert subset.index[-1] >= len(subset)
    split = assign_splits(subset, "none", FRACTIONS, seed=0)
    assert split.index.equals(subset.index)
    assert split.value_counts().to_dict() == {"train": 22 * 6, "val": 4 * 6, "test": 4 * 6}


def test_grouped_split_of_a_filtered_table(table):
    subset = table[table["particle_type"] == "X-ray"]
    split = assign_splits(subset, "well", FRACTIONS, seed=0)
    assert split.index.equals(subset.index)
    assert set(split) == set(SPLITS)
    assert (split.groupby(subset["well"]).nunique() == 1).all()


def test_deterministic_for_a_seed_and_different_for_another(table):
    first = assign_splits(table, "well", FRACTIONS, seed=0)
    pd.testing.assert_series_equal(first, assign_splits(table, "well", FRACTIONS, seed=0))
    assert not first.equals(assign_splits(table, "well", FRACTIONS, seed=1))


def test_independent_of_row_order(table):
    shuffled = table.sample(frac=1.0, random_state=4)
    first = assign_splits(table, "field", FRACTIONS, seed=2)
    again = assign_splits(shuffled, "field", FRACTIONS, seed=2)
    pd.testing.assert_series_equal(first, again.loc[first.index])


@pytest.mark.parametrize("group_by", ["well", "field", "none"])
def test_summary_counts_add_up(table, group_by):
    split = assign_splits(table, group_by, FRACTIONS, seed=0)
    summary = summarise(table, split, group_by)
    assert summary["group_by"] == group_by
    assert list(summary["splits"]) == list(SPLITS)
    assert sum(part["images"] for part in summary["splits"].values()) == len(table)
    for name, part in summary["splits"].items():
        rows = table[split == name]
        assert part["images"] == len(rows)
        assert sum(part["per_condition"].values()) == part["images"]
        assert len(part["per_condition"]) == 17
        expected_groups = rows[group_by].nunique() if group_by != "none" else len(rows)
        assert part["groups"] == expected_groups
    if group_by != "none":
        total_groups = sum(part["groups"] for part in summary["splits"].values())
        assert total_groups == table[group_by].nunique()


def test_summary_condition_keys(table):
    split = assign_splits(table, "none", FRACTIONS, seed=0)
    per_condition = summarise(table, split, "none")["splits"]["val"]["per_condition"]
    assert per_condition["Fe 0.82 Gy 4 h"] == 4
    assert per_condition["X-ray 0 Gy 48 h"] == 4
    assert "Fe 0.3 Gy 48 h" not in per_condition
