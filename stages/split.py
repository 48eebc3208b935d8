"""split: deal images into train/val/test under ``split.protocol`` (see bps/split.py).

Writes data/split/{train,val,test}.csv (file name, labels, plate/well/field) and summary.json:
the protocol and its parameters, and per split its images, groups, conditions, plates, well
positions and hours. A selection that cannot fill every split is refused before anything is written.
For ``data.source: layout`` the tables are meta.csv's normalised rows (controls dropped or
labelled ``control`` per ``data.layout.controls``) and summary.json lists samples, groups and
per-class counts (bps/layout_split.py).
"""

from bps.core.files import write_json, write_text
from bps.core.params import Params
from bps.core.paths import META, SPLIT_SUMMARY, split_table
from bps.core.stage import run_stage
from bps.data.layouts import split as layout_split
from bps.data.layouts.meta import class_names, read_normalised, with_controls
from bps.data.meta import read_meta, with_groups
from bps.data.split import SPLITS, assign_splits, summarise


def split_layout(params: Params) -> None:
    config, layout = params.split, params.data.layout
    table = read_normalised(META)
    classes = class_names(table, layout)
    table = with_controls(table, layout.controls)
    groups = layout_split.layout_groups(table, layout.group_columns, config.group_by)
    split = layout_split.assign_splits(groups, config.group_by, (config.train, config.val, config.test), config.seed)
    summary = layout_split.summarise(table, groups, split, config, classes, layout.label_separator, layout.controls)
    for name in SPLITS:
        write_text(split_table(name), table[split == name].to_csv(index=False))
    write_json(SPLIT_SUMMARY, summary)
    counts = ", ".join(f"{name} {summary['splits'][name]['samples']}" for name in SPLITS)
    print(f"split (layout, by {config.group_by}): {counts}; {len(classes)} classes; "
          f"{'group-disjoint' if summary['group_disjoint'] else 'groups shared between splits'}")


def main(params: Params) -> None:
    if params.data.source == "layout":
        split_layout(params)
        return
    config = params.split
    table = with_groups(read_meta(META))
    fractions = (config.train, config.val, config.test)
    split = assign_splits(table, config.group_by, fractions, config.seed, config.protocol, config.test_hour)
    summary = summarise(table, split, config)
    for name in SPLITS:
        write_text(split_table(name), table[split == name].to_csv(index=False))
    write_json(SPLIT_SUMMARY, summary)
    counts = ", ".join(f"{name} {summary['splits'][name]['images']}" for name in SPLITS)
    disjoint = "plate-disjoint" if summary["plate_disjoint"] else "test plates also in training"
    print(f"split ({config.protocol}, by {config.group_by}): {counts}; {disjoint}")


if __name__ == "__main__":
    run_stage(main, layouts=True)
