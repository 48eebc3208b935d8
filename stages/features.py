"""features: decode each split's raw TIFFs once into per-image classical features, on every core.

Writes data/features/{split}.csv: the split table's columns (file, labels, plate/well/field)
and the appearance_* and foci_* features of bps/features.py, row for row.
"""

import pandas as pd

from bps.classical.features import compute_features
from bps.core.files import write_text
from bps.core.params import Params
from bps.core.paths import RAW, feature_table, split_table
from bps.core.stage import BPS_SOURCES, run_stage
from bps.data.split import SPLITS


def main(params: Params) -> None:
    counts = {}
    for split in SPLITS:
        table = pd.read_csv(split_table(split))
        paths = [RAW / name for name in table["filename"]]
        features, kept = compute_features(paths, params.features, params.preprocess.on_error, desc=split)
        rows = pd.concat([table.iloc[kept].reset_index(drop=True), features], axis=1)
        write_text(feature_table(split), rows.to_csv(index=False, float_format="%.6g"))
        counts[split] = len(rows)
    print(f"features: {counts}")


if __name__ == "__main__":
    run_stage(main, BPS_SOURCES)
