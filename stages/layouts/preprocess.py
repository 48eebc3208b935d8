"""preprocess (layouts): each sample's channel files into one C×size×size slice of a split's .npy array.

C is the number of ``data.layout.channels``, each normalised on its own (bps/data/layouts/channels.py).
Writes data/prepared/{split}_images.npy, {split}.csv and report.json, which also states the
channels, their bit depth and the method and window that maps each to 0..1.
"""

import pandas as pd

from bps.core.params import Params, PreprocessParams
from bps.core.paths import RAW, split_table
from bps.core.stage import LAYOUT_SOURCES, run_stage
from bps.data.arrays import PreparedArray, write_prepared
from bps.data.images import NUCLEUS_WINDOW
from bps.data.layouts.channels import prepare_samples
from bps.data.layouts.meta import SAMPLE, channel_columns, read_normalised

WINDOWS = {
    "percentile": "that image's own percentiles {percentiles} of the channel",
    "minmax": "that image's own minimum and maximum of the channel",
    "fixed": "the fixed intensities {fixed_range}, the same for every image",
    "nucleus": "that image's background to {nucleus_window:g} times its brightest object's contrast over it",
}


def normalisation(config: PreprocessParams, channels: list[str]) -> dict:
    """What maps each channel to 0..1 (report.json): measured per image and per channel."""
    window = WINDOWS[config.normalize].format(
        percentiles=list(config.percentiles), fixed_range=list(config.fixed_range), nucleus_window=NUCLEUS_WINDOW
    )
    return {"method": config.normalize, "per_channel": {channel: f"0..1 = {window}" for channel in channels}}


def main(params: Params) -> None:
    layout = params.data.layout

    def prepare_split(split: str) -> tuple[pd.DataFrame, PreparedArray]:
        table = read_normalised(split_table(split))
        files = [tuple(RAW / name for name in row) for row in table[channel_columns(table)].itertuples(index=False)]
        return table, prepare_samples(files, table[SAMPLE].tolist(), len(layout.channels), layout.bit_depth,
                                      params.preprocess, desc=split)

    report = write_prepared(prepare_split, params.preprocess, channels=layout.channels, bit_depth=layout.bit_depth,
                            normalisation=normalisation(params.preprocess, layout.channels))
    print(f"preprocess: {report['splits']}")


if __name__ == "__main__":
    run_stage(main, LAYOUT_SOURCES)
