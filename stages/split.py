"""split: deal whole wells (or fields) into train/val/test, stratified by condition.

Writes data/split/{train,val,test}.csv (file name, labels, plate/well/field) and a summary of
image and group counts per split and condition.
"""

from bps.cli import run_stage
from bps.files import write_json, write_text
from bps.layout import META, SPLIT_SUMMARY, split_table
from bps.meta import read_meta, with_groups
from bps.params import Params
from bps.split import SPLITS, assign_splits, summarise


def main(params: Params) -> None:
    table = with_groups(read_meta(META))
    fractions = (params.split.train, params.split.val, params.split.test)
    split = assign_splits(table, params.split.group_by, fractions, params.split.seed)
    for name in SPLITS:
        write_text(split_table(name), table[split == name].to_csv(index=False))
    summary = summarise(table, split, params.split.group_by)
    write_json(SPLIT_SUMMARY, summary)
    counts = ", ".join(f"{name} {summary['splits'][name]['images']}" for name in SPLITS)
    print(f"split by {params.split.group_by}: {counts}")


if __name__ == "__main__":
    run_stage(main)
