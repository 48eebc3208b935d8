"""The grouped split of a layout: no group ever straddles two splits."""

from __future__ import annotations

import pytest

from bps.data.layouts import split as layout_split
from bps.data.layouts.meta import (
    normalise,
    read_metadata,
    with_controls,
)
from tests.support.layouts import layout_of


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("group_by", ["experiment", "plate", "well", "none"])
def test_no_group_ever_straddles_two_splits(rxrx1, seed, group_by):
    layout = layout_of("rxrx1", rxrx1, group_columns=["experiment", "plate", "well"])
    table = with_controls(normalise(read_metadata((rxrx1 / "metadata.csv").read_bytes(), layout), layout), "exclude")
    if group_by == "experiment":  # two experiments cannot fill three splits
        with pytest.raises(Exception, match="2 group\\(s\\) by experiment, too few"):
            layout_split.assign_splits(layout_split.layout_groups(table, layout.group_columns, group_by),
                                       group_by, (0.7, 0.15, 0.15), seed)
        return
    groups = layout_split.layout_groups(table, layout.group_columns, group_by)
    split = layout_split.assign_splits(groups, group_by, (0.7, 0.15, 0.15), seed)
    assert set(split) == {"train", "val", "test"}
    assert (split.groupby(groups).nunique() == 1).all()
    if group_by == "plate":  # plate 1 of both experiments are two groups
        assert groups.nunique() == 4
        assert (split.groupby([table["experiment"], table["plate"]]).nunique() == 1).all()
