"""bps.data.split: whole groups per split, every condition in every split, reproducible for a seed;
plate-disjoint and well-disjoint protocols that never leak a held-out plate or position into training."""

from pathlib import Path

import pandas as pd
import pytest

from bps.core.params import Params, SplitParams
from bps.data.meta import CONDITION_COLUMNS, read_meta, select_rows, with_groups
from bps.data.split import SPLITS, SplitError, _group_counts, assign_splits, summarise, well_position
from bps.sim.render import plan_dataset

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
    summary = summarise(table, split, SplitParams(group_by=group_by))
    assert summary["group_by"] == group_by
    assert summary["protocol"] == "grouped"
    assert summary["plate_disjoint"] is False
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
    per_condition = summarise(table, split, SplitParams(group_by="none"))["splits"]["val"]["per_condition"]
    assert per_condition["Fe 0.82 Gy 4 h"] == 4
    assert per_condition["X-ray 0 Gy 48 h"] == 4
    assert "Fe 0.3 Gy 48 h" not in per_condition


# ---------------------------------------------------------------- protocols

REAL_META = Path(__file__).resolve().parents[3] / "shared" / "bps-real" / "meta.csv"
HOURS = (4, 24, 48)
SEEDS = range(12)


def _split(table: pd.DataFrame, params: SplitParams) -> pd.Series:
    return assign_splits(table, params.group_by, (params.train, params.val, params.test), params.seed,
                         params.protocol, params.test_hour, params.val_unit)


def _positions(table: pd.DataFrame) -> pd.Series:
    """(batch, position) keys: position C7 of the Fe plates is another well than C7 of the X-ray plates."""
    return table["particle_type"] + " " + well_position(table)


@pytest.mark.parametrize("per_condition", [6, 30])
@pytest.mark.parametrize("test_hour", HOURS)
def test_leave_hour_out_never_puts_a_test_plate_in_training(per_condition, test_hour):
    # Property over many data and split seeds: tables of other sizes and samples, then every split seed.
    for data_seed in range(3):
        table = with_groups(plan_dataset(per_condition, list(HOURS), seed=data_seed))
        for seed in SEEDS:
            for group_by in ("well", "field", "none"):
                split = _split(table, SplitParams(protocol="leave_hour_out", test_hour=test_hour, seed=seed,
                                                  group_by=group_by))
                test_plates = set(table.loc[split == "test", "plate"])
                assert test_plates.isdisjoint(table.loc[split != "test", "plate"]), (data_seed, seed)
                assert set(table.loc[split == "test", "hr_post_exposure"]) == {test_hour}
                assert (split[table["hr_post_exposure"] == test_hour] == "test").all()
                assert set(split) == set(SPLITS)
                assert (split.groupby(table[group_by] if group_by != "none" else table.index).nunique() == 1).all()


@pytest.mark.parametrize("per_condition", [6, 30])
def test_leave_wells_out_never_puts_a_test_well_position_in_training(per_condition):
    for data_seed in range(3):
        table = with_groups(plan_dataset(per_condition, list(HOURS), seed=data_seed))
        positions = _positions(table)
        for seed in SEEDS:
            try:
                split = _split(table, SplitParams(protocol="leave_wells_out", seed=seed))
            except SplitError as error:  # tiny tables may leave a plate only held-out positions
                assert per_condition == 6 and "no training images" in str(error)
                continue
            train = set(positions[split == "train"])
            for held_out in ("val", "test"):
                assert train.isdisjoint(positions[split == held_out]), (data_seed, seed, held_out)
            assert set(positions[split == "val"]).isdisjoint(positions[split == "test"])
            # Each batch holds out whole positions: one of eight each for val and test here.
            for batch in ("Fe", "X-ray"):
                in_batch = table["particle_type"] == batch
                assert positions[in_batch & (split == "test")].nunique() == 1


def test_leave_wells_out_is_not_plate_disjoint(table):
    split = _split(table, SplitParams(protocol="leave_wells_out"))
    summary = summarise(table, split, SplitParams(protocol="leave_wells_out"))
    assert summary["well_position_disjoint"] is True
    assert summary["plate_disjoint"] is False
    assert summary["splits"]["test"]["shared_with_train"]["plates"] == sorted(set(table["plate"]))


@pytest.mark.skipif(not REAL_META.is_file(), reason="real BPS meta.csv not available")
@pytest.mark.parametrize("protocol", ["leave_hour_out", "leave_wells_out"])
def test_protocols_on_the_real_metadata(protocol):
    table = with_groups(read_meta(REAL_META))
    for seed in range(2):
        params = SplitParams(protocol=protocol, seed=seed, test_hour=48)
        split = _split(table, params)
        summary = summarise(table, split, params)
        if protocol == "leave_hour_out":
            assert summary["plate_disjoint"] is True
            assert set(table.loc[split == "test", "plate"]) == {"P251", "P253", "P286", "P287", "P288"}
        else:
            assert summary["well_position_disjoint"] is True
            positions = _positions(table)
            assert set(positions[split == "train"]).isdisjoint(positions[split == "test"])


def test_summary_states_plates_positions_and_hours_per_split(table):
    params = SplitParams(protocol="leave_hour_out", test_hour=48)
    split = _split(table, params)
    summary = summarise(table, split, params)
    assert (summary["protocol"], summary["test_hour"], summary["group_by"]) == ("leave_hour_out", 48, "well")
    assert summary["fractions"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert summary["plate_disjoint"] is True
    test = summary["splits"]["test"]
    assert test["hours"] == [48]
    assert test["plates"] == ["P251", "P253", "P286", "P287", "P288"]
    assert test["shared_with_train"]["plates"] == [] and test["shared_with_train"]["hours"] == []
    assert summary["splits"]["train"]["hours"] == [4, 24]
    assert set(summary["splits"]["val"]["plates"]) <= set(summary["splits"]["train"]["plates"])
    for part in summary["splits"].values():
        assert set(part["well_positions"]) == {"Fe", "X-ray"}
        assert part["well_positions"]["Fe"] == sorted(part["well_positions"]["Fe"])


def test_leave_hour_out_deals_train_and_val_by_their_share(table):
    split = _split(table, SplitParams(protocol="leave_hour_out", test_hour=4))
    trained = table[table["hr_post_exposure"] != 4]
    for _, rows in trained.groupby(CONDITION_COLUMNS):
        wells = rows.groupby(split[rows.index])["well"].nunique()
        # val gets its share of train + val (0.15 / 0.85) of the condition's wells, at least one.
        assert wells["val"] == max(1, round(0.15 / 0.85 * rows["well"].nunique()))
        assert wells["train"] + wells["val"] == rows["well"].nunique()


@pytest.mark.parametrize("test_hour", HOURS)
def test_validation_by_plate_holds_out_whole_irradiated_plates_that_training_never_sees(table, test_hour):
    chosen = set()
    for seed in SEEDS:
        params = SplitParams(protocol="leave_hour_out", test_hour=test_hour, val_unit="plate", seed=seed)
        split = _split(table, params)
        by_group = _split(table, SplitParams(protocol="leave_hour_out", test_hour=test_hour, seed=seed))
        assert ((split == "test") == (by_group == "test")).all()  # the test split is the protocol's, unchanged
        val, train = table[split == "val"], table[split == "train"]
        assert set(val["plate"]).isdisjoint(train["plate"])
        assert (val["dose_Gy"] > 0).all()  # shams stay in training: their label is their batch's
        assert (split[(table["dose_Gy"] == 0) & (table["hr_post_exposure"] != test_hour)] == "train").all()
        assert val.groupby("particle_type")["plate"].nunique().to_dict() == {"Fe": 1, "X-ray": 1}  # 1 of 5 or 6
        summary = summarise(table, split, params)
        assert summary["val_unit"] == "plate" and summary["plate_disjoint"] is True
        assert summary["splits"]["val"]["shared_with_train"]["plates"] == []
        chosen.add(tuple(sorted(set(val["plate"]))))
    assert len(chosen) > 3  # the seed chooses which plates


def test_validation_by_plate_needs_two_irradiated_plates_per_batch_outside_the_test_hour():
    one_dose = with_groups(plan_dataset(6, [4, 24], seed=0))
    one_dose = one_dose[one_dose["dose_Gy"].isin([0.0, 0.82, 1.0])]  # one irradiated plate per batch in hour 4
    with pytest.raises(SplitError) as caught:
        _split(one_dose, SplitParams(protocol="leave_hour_out", test_hour=24, val_unit="plate"))
    assert str(caught.value) == (
        "split: batch Fe has 1 irradiated plates outside the test hour, too few to give train and val one each "
        "(split.protocol leave_hour_out with split.val_unit plate); add an hour to data.hours, "
        "or use split.val_unit group")


def test_default_protocol_is_unchanged_by_the_new_parameters(table):
    grouped = assign_splits(table, "well", FRACTIONS, seed=3)
    pd.testing.assert_series_equal(grouped, _split(table, SplitParams(seed=3, test_hour=48)))


def test_too_few_groups_is_refused_naming_the_condition_and_the_fix():
    # Issue 11: data.max_per_condition=2 left validation empty and failed later with a traceback.
    table = with_groups(select_rows(plan_dataset(30, list(HOURS), seed=0), list(HOURS), 2, 0))
    with pytest.raises(SplitError) as caught:
        assign_splits(table, "well", FRACTIONS, seed=0)
    message = str(caught.value)
    assert "\n" not in message
    assert "condition Fe 0 Gy 4 h has 2 wells" in message
    assert "train, val and test" in message and "data.max_per_condition" in message
    assert "split.group_by: field or none" in message
    with pytest.raises(SplitError, match="has 2 images, too few .*data.max_per_condition"):
        assign_splits(table, "none", FRACTIONS, seed=0)


def test_leave_hour_out_refuses_a_missing_hour_and_too_few_groups():
    table = with_groups(plan_dataset(30, [4, 24], seed=0))
    with pytest.raises(SplitError, match="split.test_hour 48 must be one of the hours .*found \\[4, 24\\]"):
        _split(table, SplitParams(protocol="leave_hour_out", test_hour=48))
    one_well = with_groups(select_rows(plan_dataset(30, [4, 24], seed=0), [4, 24], 1, 0))
    with pytest.raises(SplitError, match="has 1 wells, too few to give train and val one each"):
        _split(one_well, SplitParams(protocol="leave_hour_out", test_hour=24))


def test_split_stage_refuses_before_writing_anything(tmp_path, monkeypatch):
    from stages import split as stage

    table = select_rows(plan_dataset(30, list(HOURS), seed=0), list(HOURS), 2, 0)
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/meta.csv").write_text(table.to_csv(index=False))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SplitError, match="data.max_per_condition"):
        stage.main(Params())
    assert not (tmp_path / "data/split").exists()
