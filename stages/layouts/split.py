"""split (layouts): deal whole groups of samples into train/val/test (see bps/data/layouts/split.py).

Writes data/split/{train,val,test}.csv, meta.csv's normalised rows (controls dropped or labelled
``control`` per ``data.layout.controls``), and summary.json: samples, groups, controls and
per-class counts per split, the classes in index order, and whether any group is shared.
"""

from bps.core.files import write_json, write_text
from bps.core.params import Params
from bps.core.paths import META, SPLIT_SUMMARY, SPLITS, split_table
from bps.core.stage import LAYOUT_SOURCES, run_stage
from bps.data.layouts.meta import class_names, read_normalised, with_controls
from bps.data.layouts.split import assign_splits, layout_groups, summarise


def main(params: Params) -> None:
    config, layout = params.split, params.data.layout
    table = read_normalised(META)
    classes = class_names(table, layout)
    table = with_controls(table, layout.controls)
    groups = layout_groups(table, layout.group_columns, config.group_by)
    split = assign_splits(groups, config.group_by, (config.train, config.val, config.test), config.seed)
    summary = summarise(table, groups, split, config, classes, layout.label_separator, layout.controls)
    for name in SPLITS:
        write_text(split_table(name), table[split == name].to_csv(index=False))
    write_json(SPLIT_SUMMARY, summary)
    counts = ", ".join(f"{name} {summary['splits'][name]['samples']}" for name in SPLITS)
    print(f"split (by {config.group_by}): {counts}; {len(classes)} classes; "
          f"{'group-disjoint' if summary['group_disjoint'] else 'groups shared between splits'}")


if __name__ == "__main__":
    run_stage(main, LAYOUT_SOURCES)
