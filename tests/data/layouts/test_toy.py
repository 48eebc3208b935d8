"""The toy HPA and RxRx1 copies: the real names and columns, deterministic, with a batch effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from bps.data.layouts.toy import HPA_CLASSES, RXRX1_COLUMNS, write_rxrx1


def test_fixture_writers_use_the_real_names_and_columns(hpa, rxrx1):
    train = pd.read_csv(hpa / "train.csv", dtype=str)
    assert list(train.columns) == ["Id", "Target"] and len(train) == 120
    assert train["Id"].str.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-11e8-[0-9a-f]{4}-[0-9a-f]{12}").all()
    labels = train["Target"].str.split(" ")
    assert labels.map(len).between(1, 3).all() and set(labels.explode()) == set(HPA_CLASSES)
    files = sorted(path.name for path in (hpa / "train").iterdir())
    assert files[:4] == [f"{train['Id'].min()}_{c}.png" for c in ("blue", "green", "red", "yellow")]
    assert len(files) == 4 * len(train)

    meta = pd.read_csv(rxrx1 / "metadata.csv", dtype=str)
    assert tuple(meta.columns) == RXRX1_COLUMNS and len(meta) == 152
    assert set(meta["well_type"]) == {"treatment", "negative_control", "positive_control"}
    assert meta.groupby(["experiment", "plate"]).ngroups == 4 and set(meta["site"]) == {"1", "2"}
    row = meta.iloc[0]
    for w in range(1, 7):
        path = rxrx1 / "images" / row.experiment / f"Plate{row.plate}" / f"{row.well}_s{row.site}_w{w}.png"
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (64, 64))


def test_fixtures_are_deterministic_and_carry_a_plate_batch_effect(tmp_path, rxrx1):
    write_rxrx1(tmp_path / "again")
    assert (tmp_path / "again" / "metadata.csv").read_bytes() == (rxrx1 / "metadata.csv").read_bytes()
    some = next((rxrx1 / "images").rglob("*_w3.png")).relative_to(rxrx1)
    assert (tmp_path / "again" / some).read_bytes() == (rxrx1 / some).read_bytes()
    meta = pd.read_csv(rxrx1 / "metadata.csv", dtype=str)
    negatives = meta[meta["well_type"] == "negative_control"]

    def brightness(r) -> float:
        path = rxrx1 / "images" / r.experiment / f"Plate{r.plate}" / f"{r.well}_s{r.site}_w2.png"
        return float(np.asarray(Image.open(path), dtype=float).mean())

    means = {key: np.mean([brightness(r) for r in rows.itertuples()])
             for key, rows in negatives.groupby(["experiment", "plate"])}
    assert max(means.values()) - min(means.values()) > 5  # the same (empty) wells, plate by plate apart
