"""preprocess: decode, normalise and shrink each split's TIFFs into one .npy array.

Writes data/prepared/{split}_images.npy (N×1×size×size uint8; value/255 is the normalised
intensity), {split}.csv (labels, row for row) and report.json (settings but the worker count, counts, skipped files).
"""

import pandas as pd

from bps.cli import run_stage
from bps.files import write_json, write_text
from bps.layout import PREPARED, RAW, prepared_images, prepared_table, split_table
from bps.params import Params
from bps.prepare import prepare_images, save_array
from bps.split import SPLITS


def main(params: Params) -> None:
    # Settings that shape the arrays; `workers` only sets the speed, and recording it would make a
    # new worker count look like new data to every stage after this one.
    settings = params.preprocess.model_dump(mode="json", exclude={"workers"})
    report = {"settings": settings, "splits": {}, "skipped": {}}
    for split in SPLITS:
        table = pd.read_csv(split_table(split))
        prepared = prepare_images([RAW / name for name in table["filename"]], params.preprocess, desc=split)
        save_array(prepared_images(split), prepared.images)
        write_text(prepared_table(split), table.iloc[prepared.kept].to_csv(index=False))
        report["splits"][split] = {"images": len(prepared.kept), "skipped": len(prepared.failures)}
        report["skipped"].update(prepared.failures)
    write_json(PREPARED / "report.json", report)
    print(f"preprocess: {report['splits']}")


if __name__ == "__main__":
    run_stage(main)
