"""evaluate (layouts): score the MLP and the CNN on a layout's whole test split, with grouped intervals.

Writes metrics/evaluate.json (per model: the scores of bps/evaluation/layout_scores.py, each with
a 95 % interval from a bootstrap over test groups, ``split.group_by``), metrics/comparison.md, and
per model metrics/per_class/ and metrics/confusion/ CSVs (and metrics/calibration/ single-label).
"""

import numpy as np
from tqdm import tqdm

from bps.core.files import write_csv, write_json, write_text
from bps.core.params import Params
from bps.core.paths import METRICS, MODELS
from bps.core.stage import LAYOUT_SOURCES, run_stage
from bps.data.arrays import load_split
from bps.data.layouts.split import layout_groups
from bps.evaluation.comparison import layout_headline, layout_page
from bps.evaluation.intervals import GroupedBootstrap
from bps.evaluation.layout_scores import headline_keys, score_model
from bps.evaluation.scoreboard import check_target, scored_models
from bps.evaluation.scores import describe_protocol
from bps.models.loader import load_model
from bps.targets.labels import task_target


def main(params: Params) -> None:
    target, settings = task_target(params), params.evaluate
    images, table = load_split("test")
    labels = target.encode(table)
    group_by = params.split.group_by
    groups = layout_groups(table, params.data.layout.group_columns, group_by)
    bootstrap = GroupedBootstrap.draw(groups, np.zeros(len(table)), settings.resamples, settings.seed)
    unit = "sample" if group_by == "none" else group_by
    context = {"task": target.name, "multilabel": target.multilabel, "protocol": describe_protocol(params.split),
               "bootstrap_unit": unit, "n_test_groups": bootstrap.n_groups}
    models = scored_models(params)
    results, labels_of = {}, {model.name: model.label for model in models}
    for scored in tqdm(models, desc="evaluate", unit="model"):
        model = load_model(MODELS / scored.name, params.train.device)
        check_target(model.folder, model.card, target.name)
        scores, tables = score_model(target, labels, model.probabilities(images), model.card.thresholds, bootstrap,
                                     settings.calibration_bins)
        results[scored.name] = {**context, **scores}
        for folder, frame in tables.items():
            write_csv(METRICS / folder / f"{scored.name}.csv", frame)
    (METRICS / "calibration").mkdir(parents=True, exist_ok=True)  # declared; a multi-label target has no table
    write_json(METRICS / "evaluate.json", results)
    kind = f"multi-label, {len(target.classes)} labels" if target.multilabel else f"{len(target.classes)} classes"
    header = (f"# Test split: {len(labels)} samples from {bootstrap.n_groups} {unit}s, target `{target.name}` "
              f"({kind}), protocol: {context['protocol']}")
    write_text(METRICS / "comparison.md", layout_page(
        results, labels_of, headline_keys(target), header, settings.resamples, unit, bootstrap.n_groups,
        params.task.threshold if target.multilabel else None))
    print(layout_headline(results, labels_of, headline_keys(target)))


if __name__ == "__main__":
    run_stage(main, LAYOUT_SOURCES)
