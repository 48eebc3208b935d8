"""A soft vote's negative control: the mean of its members' held-out predictions, row for row."""

import numpy as np
import pandas as pd
import pytest

from bps.core.errors import PipelineError
from bps.evaluation.scoreboard import mean_held_out
from bps.training.negative_control import HELD_OUT_FILE


def write_held_out(folder, rows):
    folder.mkdir()
    pd.DataFrame(rows, columns=["filename", "fold", "particle_type", "p_Fe", "p_X-ray"]).to_csv(
        folder / HELD_OUT_FILE, index=False)
    return folder


def test_the_mean_pairs_rows_by_image_and_fold_whatever_their_order(tmp_path):
    first = write_held_out(tmp_path / "a", [("x.tif", "hour-4", "Fe", 0.9, 0.1), ("y.tif", "hour-4", "X-ray", 0.2, 0.8),
                                            ("x.tif", "hour-24", "Fe", 0.6, 0.4)])
    second = write_held_out(tmp_path / "b", [("x.tif", "hour-24", "Fe", 0.0, 1.0), ("x.tif", "hour-4", "Fe", 0.5, 0.5),
                                             ("y.tif", "hour-4", "X-ray", 0.4, 0.6)])
    table, proba = mean_held_out([first, second])
    assert table["filename"].tolist() == ["x.tif", "y.tif", "x.tif"]  # the first control's rows, in its order
    np.testing.assert_allclose(proba, [[0.7, 0.3], [0.3, 0.7], [0.3, 0.7]])


def test_controls_that_held_out_other_images_are_refused(tmp_path):
    first = write_held_out(tmp_path / "a", [("x.tif", "hour-4", "Fe", 0.9, 0.1)])
    second = write_held_out(tmp_path / "b", [("z.tif", "hour-4", "Fe", 0.5, 0.5)])
    with pytest.raises(PipelineError, match="held out other images"):
        mean_held_out([first, second])
