"""bps.data.meta: the meta.csv schema, name safety, group parsing and reproducible row selection."""

import pandas as pd
import pytest

from bps.data.meta import COLUMNS, MetaError, check_safe_name, read_meta, select_rows, validate_meta, with_groups

GOOD_CSV = b"""filename,dose_Gy,particle_type,hr_post_exposure
P242_73665006707-A6_003_013_proj.tif,0.82,Fe,4
P243_73665098237-A8_010_001_proj.tif,0.3,Fe,24
P244_73665165741-C6_001_002_proj.tif,0,Fe,48
P278_73668090728-A7_002_001_proj.tif,0.0,X-ray,4
P279_73668277350-C7_004_003_proj.tif,0.1,X-ray,24
P280_73668439105-D5_040_010_proj.tif,1,X-ray,48
"""


def _table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _good_rows() -> list[tuple]:
    return [
        ("P242_73665006707-A6_003_013_proj.tif", 0.82, "Fe", 4),
        ("P278_73668090728-A7_002_001_proj.tif", 0.0, "X-ray", 24),
        ("P280_73668439105-D5_040_010_proj.tif", 1.0, "X-ray", 48),
    ]


def test_read_meta_good_table():
    table = read_meta(GOOD_CSV)
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 6
    assert table["particle_type"].tolist() == ["Fe", "Fe", "Fe", "X-ray", "X-ray", "X-ray"]
    assert table["dose_Gy"].tolist() == [0.82, 0.3, 0.0, 0.0, 0.1, 1.0]
    assert table["hr_post_exposure"].tolist() == [4, 24, 48, 4, 24, 48]
    assert table["hr_post_exposure"].dtype.kind == "i"


def test_read_meta_from_path(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_bytes(GOOD_CSV)
    assert len(read_meta(str(path))) == 6


def test_validate_meta_snaps_doses_and_drops_extra_columns():
    table = _table(_good_rows())
    table["dose_Gy"] = [0.8200000001, 0.0, 0.9999999999]
    table["extra"] = 1
    checked = validate_meta(table)
    assert checked["dose_Gy"].tolist() == [0.82, 0.0, 1.0]
    assert list(checked.columns) == list(COLUMNS)


def test_missing_column():
    table = _table(_good_rows()).drop(columns="hr_post_exposure")
    with pytest.raises(MetaError, match=r"missing column\(s\) \['hr_post_exposure'\]"):
        validate_meta(table)


def test_missing_column_in_csv():
    with pytest.raises(MetaError, match="missing column"):
        read_meta(b"filename,dose_Gy,particle_type\nP1_1-A1_001_001_proj.tif,0.3,Fe\n")


def test_unreadable_csv():
    with pytest.raises(MetaError, match="not a readable CSV"):
        read_meta(b"")


def test_unknown_particle():
    rows = _good_rows()
    rows[1] = (rows[1][0], 0.0, "proton", 24)
    with pytest.raises(MetaError, match=r"meta.csv line 3: unknown particle_type 'proton'"):
        validate_meta(_table(rows))


@pytest.mark.parametrize(("particle", "dose"), [("Fe", 0.1), ("X-ray", 0.82), ("Fe", 1.0), ("X-ray", 0.3)])
def test_dose_not_in_the_particles_set(particle, dose):
    rows = _good_rows()
    rows[2] = (rows[2][0], dose, particle, 48)
    with pytest.raises(MetaError, match=rf"meta.csv line 4: dose_Gy {dose} is not a known {particle} dose"):
        validate_meta(_table(rows))


def test_non_numeric_dose():
    rows = _good_rows()
    rows[0] = (rows[0][0], "high", "Fe", 4)
    with pytest.raises(MetaError, match="meta.csv line 2: dose_Gy 'high'"):
        validate_meta(_table(rows))


@pytest.mark.parametrize("hours", [0, 12, 72, 4.5])
def test_hours_not_in_the_known_set(hours):
    rows = _good_rows()
    rows[1] = (rows[1][0], 0.0, "X-ray", hours)
    with pytest.raises(MetaError, match=rf"meta.csv line 3: hr_post_exposure {hours!r} is not one of \[4, 24, 48\]"):
        validate_meta(_table(rows))


def test_duplicate_name_names_its_line():
    rows = [*_good_rows(), ("P278_73668090728-A7_002_001_proj.tif", 0.0, "X-ray", 24)]
    # The duplicate is row index 3: header is line 1, so it is line 5.
    with pytest.raises(MetaError, match=r"meta.csv line 5: duplicated file name 'P278_73668090728-A7_002_001_proj"):
        validate_meta(_table(rows))


@pytest.mark.parametrize("name", ["../x.tif", "/abs.tif", "a/b.tif", "C:x.tif", "..", "a\\b.tif", ""])
def test_unsafe_names_rejected(name):
    with pytest.raises(MetaError, match="unsafe file name"):
        check_safe_name(name)


@pytest.mark.parametrize("name", ["../x.tif", "/abs.tif", "a/b.tif", "C:x.tif"])
def test_unsafe_names_rejected_in_table(name):
    rows = _good_rows()
    rows[2] = (name, 1.0, "X-ray", 48)
    with pytest.raises(MetaError, match=r"meta.csv line 4: unsafe file name"):
        validate_meta(_table(rows))


def test_plain_names_are_safe():
    check_safe_name("P242_73665006707-A6_003_013_proj.tif")
    check_safe_name("x..tif")


def test_empty_name_rejected_in_table():
    table = read_meta(GOOD_CSV)
    table.loc[1, "filename"] = None
    with pytest.raises(MetaError, match="meta.csv line 3: file name is empty"):
        validate_meta(table)


def test_with_groups_parses_plate_well_field():
    table = with_groups(_table(_good_rows()))
    first = table.iloc[0]
    assert (first["plate"], first["well"], first["field"]) == ("P242", "P242-A6", "P242-A6_003")
    last = table.iloc[2]
    assert (last["plate"], last["well"], last["field"]) == ("P280", "P280-D5", "P280-D5_040")
    # The original columns are kept and the input is not modified.
    assert list(table.columns) == [*COLUMNS, "plate", "well", "field"]


def test_with_groups_rejects_unparsable_names():
    rows = _good_rows()
    rows[1] = ("nucleus_7.tif", 0.0, "X-ray", 24)
    with pytest.raises(MetaError, match="meta.csv line 3: file name 'nucleus_7.tif' does not match"):
        with_groups(_table(rows))


def _condition_table() -> pd.DataFrame:
    """Ten images for each of four conditions, at 4 and 24 h."""
    rows = []
    for plate, (particle, dose, hours) in enumerate(
        [("Fe", 0.82, 4), ("Fe", 0.0, 24), ("X-ray", 1.0, 4), ("X-ray", 1.0, 24)], start=1
    ):
        for field in range(10):
            rows.append((f"P{plate}_1-A1_{field:03d}_001_proj.tif", dose, particle, hours))
    return _table(rows)


def test_select_rows_filters_hours_without_cap():
    table = _condition_table()
    chosen = select_rows(table, [24], None, 0)
    assert len(chosen) == 20
    assert set(chosen["hr_post_exposure"]) == {24}
    assert list(chosen.columns) == list(COLUMNS)
    assert chosen["filename"].is_monotonic_increasing


def test_select_rows_caps_per_condition():
    table = _condition_table()
    chosen = select_rows(table, [4, 24], 3, 0)
    assert list(chosen.columns) == list(COLUMNS)
    counts = chosen.groupby(["particle_type", "dose_Gy", "hr_post_exposure"]).size()
    assert counts.to_dict() == {("Fe", 0.0, 24): 3, ("Fe", 0.82, 4): 3, ("X-ray", 1.0, 4): 3, ("X-ray", 1.0, 24): 3}
    assert chosen["filename"].is_monotonic_increasing
    # Every chosen row is an original row, labels intact.
    merged = chosen.merge(table, on=list(COLUMNS), how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_select_rows_cap_larger_than_group_keeps_all():
    table = _condition_table()
    assert len(select_rows(table, [4], 50, 0)) == 20


def test_select_rows_is_reproducible_regardless_of_row_order():
    table = _condition_table()
    shuffled = table.sample(frac=1.0, random_state=123)
    assert not shuffled["filename"].equals(table["filename"])
    first = select_rows(table, [4, 24], 4, seed=5)
    again = select_rows(shuffled, [4, 24], 4, seed=5)
    pd.testing.assert_frame_equal(first, again)
    others = [set(select_rows(table, [4, 24], 4, seed=s)["filename"]) for s in range(6, 11)]
    assert any(names != set(first["filename"]) for names in others)


def test_select_rows_with_no_matching_hours_is_an_error_naming_the_hours_there_are():
    table = _condition_table()
    present = sorted(set(table["hr_post_exposure"]))
    with pytest.raises(MetaError, match=rf"data.hours \[48\] selects none of the {len(table)} images in meta.csv, "
                                        rf"whose hours are \{present}"):
        select_rows(table, [48], 3, 0)


def test_select_rows_from_an_empty_table_is_an_error():
    with pytest.raises(MetaError, match="meta.csv lists no images"):
        select_rows(_condition_table().iloc[:0], [4], None, 0)
