"""split: deal images into train/val/test under ``split.protocol`` (see bps/data/split.py).

Writes data/split/{train,val,test}.csv (file name, labels, plate/well/field) and summary.json:
the protocol and its parameters, and per split its images, groups, conditions, plates, well
positions and hours. A selection that cannot fill every split is refused before anything is written.
"""

from bps.core.files import write_json, write_text
from bps.core.params import Params
from bps.core.paths import META, SPLIT_SUMMARY, split_table
from bps.core.stage import BPS_SOURCES, run_stage
from bps.data.meta import read_meta, with_groups
from bps.data.split import SPLITS, assign_splits, summarise


def main(params: Params) -> None:
    config = params.split
    table = with_groups(read_meta(META))
    fractions = (config.train, config.val, config.test)
    split = assign_splits(table, config.group_by, fractions, config.seed, config.protocol, config.test_hour,
                          config.val_unit)
    summary = summarise(table, split, config)
    for name in SPLITS:
        write_text(split_table(name), table[split == name].to_csv(index=False))
    write_json(SPLIT_SUMMARY, summary)
    counts = ", ".join(f"{name} {summary['splits'][name]['images']}" for name in SPLITS)
    disjoint = "plate-disjoint" if summary["plate_disjoint"] else "test plates also in training"
    unit = "val by plate" if config.val_unit == "plate" else f"by {config.group_by}"
    print(f"split ({config.protocol}, {unit}): {counts}; {disjoint}")


if __name__ == "__main__":
    run_stage(main, BPS_SOURCES)
