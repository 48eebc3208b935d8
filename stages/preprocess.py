"""preprocess: decode, normalise and shrink each split's images into one .npy array.

Writes data/prepared/{split}_images.npy (N×1×size×size uint8; value/255 is the normalised
intensity), {split}.csv (labels, row for row) and report.json (settings but the worker count,
counts, skipped files).
"""

import pandas as pd

from bps.core.params import Params
from bps.core.paths import RAW, split_table
from bps.core.stage import BPS_SOURCES, run_stage
from bps.data.arrays import PreparedArray, prepare_images, write_prepared


def main(params: Params) -> None:
    def prepare_split(split: str) -> tuple[pd.DataFrame, PreparedArray]:
        table = pd.read_csv(split_table(split))
        return table, prepare_images([RAW / name for name in table["filename"]], params.preprocess, desc=split)

    report = write_prepared(prepare_split, params.preprocess)
    print(f"preprocess: {report['splits']}")


if __name__ == "__main__":
    run_stage(main, BPS_SOURCES)
