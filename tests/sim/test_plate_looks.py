"""The plate-looks table: the simulator's own draws, one row per plate."""

import pandas as pd
import pytest
import yaml

from bps.core.params import SyntheticParams
from bps.sim.confounds import look_for
from bps.sim.plate_looks import COLUMNS, main, plate_looks
from bps.sim.render import conditions


def test_one_row_per_plate_with_the_look_its_images_are_drawn_with():
    confounds = SyntheticParams(seed=2, well_effect=0.0)
    table = plate_looks(confounds, [4, 24])
    assert len(table) == len(conditions([4, 24])) == table["plate"].nunique()
    row = table[(table["particle"] == "Fe") & (table["dose_Gy"] == 0.3) & (table["hours"] == 24)].iloc[0]
    look = look_for("Fe", int(row["plate"][1:]), "B7", 2, confounds)  # with no well effect, any well
    assert (row["brightness"], row["blur_px"], row["texture"]) == (look.brightness, look.blur, look.texture)


def test_without_plate_drift_every_plate_of_a_particle_looks_the_same_and_the_well_effect_is_left_out():
    table = plate_looks(SyntheticParams(seed=0, plate_effect=0.0, well_effect=0.3), [4, 24, 48])
    looks = table.groupby("particle")[COLUMNS[4:]].nunique()
    assert (looks == 1).all().all()  # the batch effect alone: one look per particle
    assert (table.groupby("particle")["texture"].first()["Fe"] != table.groupby("particle")["texture"].first()["X-ray"])


@pytest.mark.parametrize("seed", [None, 2])  # the file's seed (5), or another
def test_the_command_reads_params_and_writes_the_csv(tmp_path, seed, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 5, "data": {"hours": [4, 48]}}))
    chosen = [] if seed is None else ["--seed", str(seed)]
    main(["--params", str(params), *chosen, "--plate-effect", "0.15", "--out", str(tmp_path / "looks.csv")])
    written = pd.read_csv(tmp_path / "looks.csv")
    assert capsys.readouterr().out == (tmp_path / "looks.csv").read_text()
    assert list(written.columns) == COLUMNS and set(written["hours"]) == {4, 48}
    expected = plate_looks(SyntheticParams(seed=5 if seed is None else seed, plate_effect=0.15), [4, 48])
    pd.testing.assert_frame_equal(written, expected.round(3), check_exact=False, atol=5e-4)
