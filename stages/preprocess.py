"""preprocess: decode each split's images once into one .npy array and a table of classical features.

Writes data/prepared/{split}_images.npy (N×1×size×size uint8, N×2×... with the foci channel; value/255
is the normalised intensity), {split}.csv (labels, row for row) and report.json (settings but the
worker count, counts, skipped files); and data/features/{split}.csv: the split table's columns (file, labels,
plate/well/field) and the appearance_* and foci_* features of bps/classical/features.py, row for
row. Both outputs come from the same decode of each file (the features once had a stage of their
own that decoded every file again); a new ``features`` param re-runs this stage, and the prepared
arrays come out byte-identical, so the MLP stages after it do not re-run (the CNN stages, which
read the features for ``train.foci_auxiliary``, do).
"""

import pandas as pd

from bps.classical.features import prepare_with_features
from bps.core.files import write_text
from bps.core.params import Params
from bps.core.paths import RAW, feature_table, split_table
from bps.core.stage import BPS_SOURCES, run_stage
from bps.data.arrays import PreparedArray, write_prepared


def main(params: Params) -> None:
    def prepare_split(split: str) -> tuple[pd.DataFrame, PreparedArray]:
        table = pd.read_csv(split_table(split))
        paths = [RAW / name for name in table["filename"]]
        prepared, features = prepare_with_features(paths, params.preprocess, params.features, desc=split)
        rows = pd.concat([table.iloc[prepared.kept].reset_index(drop=True), features], axis=1)
        write_text(feature_table(split), rows.to_csv(index=False, float_format="%.6g"))
        return table, prepared

    report = write_prepared(prepare_split, params.preprocess)
    print(f"preprocess: {report['splits']}")


if __name__ == "__main__":
    run_stage(main, BPS_SOURCES)
