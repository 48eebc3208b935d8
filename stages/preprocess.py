"""preprocess: decode, normalise and shrink each split's images into one .npy array.

Writes data/prepared/{split}_images.npy (N×C×size×size uint8; value/255 is the normalised
intensity; BPS: C = 1), {split}.csv (labels, row for row) and report.json (settings but the
worker count, counts, skipped files). For ``data.source: layout`` C is the number of
``data.layout.channels``, each normalised on its own (bps/channels.py), and report.json also
states the method and window of every channel.
"""

import pandas as pd

from bps.core.files import write_json, write_text
from bps.core.params import Params, PreprocessParams
from bps.core.paths import PREPARED, RAW, prepared_images, prepared_table, split_table
from bps.core.stage import run_stage
from bps.data.arrays import PreparedArray, prepare_images, save_array
from bps.data.layouts.channels import prepare_samples
from bps.data.layouts.meta import SAMPLE, channel_columns, read_normalised
from bps.data.split import SPLITS

WINDOWS = {
    "percentile": "that image's own percentiles {percentiles} of the channel",
    "minmax": "that image's own minimum and maximum of the channel",
    "fixed": "the fixed intensities {fixed_range}, the same for every image",
}


def normalisation(config: PreprocessParams, channels: list[str]) -> dict:
    """What maps each channel to 0..1 (report.json): measured per image and per channel."""
    window = WINDOWS[config.normalize].format(
        percentiles=list(config.percentiles), fixed_range=list(config.fixed_range)
    )
    return {"method": config.normalize, "per_channel": {channel: f"0..1 = {window}" for channel in channels}}


def prepare_split(params: Params, split: str) -> tuple[pd.DataFrame, PreparedArray]:
    if params.data.source != "layout":
        table = pd.read_csv(split_table(split))
        return table, prepare_images([RAW / name for name in table["filename"]], params.preprocess, desc=split)
    layout = params.data.layout
    table = read_normalised(split_table(split))
    files = [tuple(RAW / name for name in row) for row in table[channel_columns(table)].itertuples(index=False)]
    names = table[SAMPLE].tolist()
    return table, prepare_samples(files, names, len(layout.channels), layout.bit_depth, params.preprocess, desc=split)


def main(params: Params) -> None:
    # Settings that shape the arrays; `workers` only sets the speed, and recording it would make a
    # new worker count look like new data to every stage after this one.
    settings = params.preprocess.model_dump(mode="json", exclude={"workers"})
    report = {"settings": settings, "splits": {}, "skipped": {}}
    if params.data.source == "layout":
        layout = params.data.layout
        report["channels"] = layout.channels
        report["bit_depth"] = layout.bit_depth
        report["normalisation"] = normalisation(params.preprocess, layout.channels)
    for split in SPLITS:
        table, prepared = prepare_split(params, split)
        save_array(prepared_images(split), prepared.images)
        write_text(prepared_table(split), table.iloc[prepared.kept].to_csv(index=False))
        report["splits"][split] = {"images": len(prepared.kept), "skipped": len(prepared.failures)}
        report["skipped"].update(prepared.failures)
    write_json(PREPARED / "report.json", report)
    print(f"preprocess: {report['splits']}")


if __name__ == "__main__":
    run_stage(main, layouts=True)
