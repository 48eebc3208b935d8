"""evaluate: score every model, the soft vote of the CNN and the foci count, and their negative controls.

Writes metrics/evaluate.json (per model: every metric with its 95 % grouped-bootstrap interval,
the protocol, the bootstrap unit, the negative control; per pair of models: a paired test on all
test images, and one on the irradiated images alone, with the ROC AUC difference for two classes),
metrics/headline.json (what dvc exp show and dvc metrics diff compare: a few figures per model),
metrics/comparison.md (for people: a verdict, then tables, accuracy per hour and per condition),
metrics/accuracy_by_{condition,hour}.csv, and per model metrics/per_class/, metrics/confusion/
and metrics/calibration/ CSVs (DVC plots), and the CNN's saliency pictures in metrics/saliency/.
"""

from itertools import combinations

import pandas as pd
from tqdm import tqdm

from bps.core.files import write_csv, write_json, write_text
from bps.core.params import Params
from bps.core.paths import METRICS, MODELS, control_name
from bps.core.stage import BPS_SOURCES, run_stage
from bps.data.arrays import load_split
from bps.evaluation.comparison import bps_page, headline, headline_table, paired_table
from bps.evaluation.intervals import GroupedBootstrap, paired_comparison
from bps.evaluation.saliency import write_saliency
from bps.evaluation.scoreboard import check_target, model_inputs, score_control, scored_models
from bps.evaluation.scores import (
    accuracy_by,
    accuracy_by_condition,
    describe_protocol,
    irradiated_auc,
    model_scores,
    paired_auc,
    ranks_irradiated,
    reliability_table,
    strata,
)
from bps.models.card import read_card
from bps.models.loader import load_model
from bps.targets.labels import get_target
from bps.targets.metrics import confusion_rows, is_sham, per_class
from bps.training.negative_control import CONTROL_TARGET


def main(params: Params) -> None:
    target, settings = get_target(params.task.target), params.evaluate
    images, table = load_split("test")
    labels, sham = target.encode(table), is_sham(table)
    unit = settings.bootstrap_unit
    bootstrap = GroupedBootstrap.draw(table[unit], strata(target, labels, sham), settings.resamples, settings.seed)
    context = {"task": target.name, "protocol": describe_protocol(params.split), "bootstrap_unit": unit,
               "n_test_groups": bootstrap.n_groups}
    models = scored_models(params)
    results, correct, loaded, labels_of = {}, {}, {}, {model.name: model.label for model in models}
    probabilities, ranked = {}, {}
    control_text = "none of these models has one"
    for scored in tqdm(models, desc="evaluate", unit="model"):
        if scored.members:
            proba = sum(probabilities[name] for name in scored.members) / len(scored.members)
        else:
            model = loaded[scored.name] = load_model(MODELS / scored.name, params.train.device)
            check_target(model.folder, model.card, target.name)
            proba = model.probabilities(model_inputs(model, images, table))
        probabilities[scored.name], predicted = proba, target.predict(proba)
        if ranks_irradiated(target, sham):
            ranked[scored.name] = irradiated_auc(labels, proba, sham, bootstrap)
        results[scored.name] = {**context, **model_scores(target, labels, proba, sham, bootstrap,
                                                          settings.calibration_bins, ranked.get(scored.name))}
        if scored.control:
            folders = [MODELS / control_name(name) for name in scored.members or (scored.name,)]
            for folder in folders:
                check_target(folder, read_card(folder), CONTROL_TARGET)
            control, control_text = score_control(folders, settings)
            if control is not None:
                results[scored.name]["control"] = control
        correct[scored.name] = predicted == labels
        reliability = reliability_table(labels, target.joint(proba), settings.calibration_bins)
        for folder, frame in (("per_class", pd.DataFrame(per_class(target, labels, predicted))),
                              ("confusion", confusion_rows(target, labels, predicted)), ("calibration", reliability)):
            write_csv(METRICS / folder / f"{scored.name}.csv", frame)
    named_pairs = {f"{a}_vs_{b}": (a, b) for a, b in combinations(correct, 2)}
    pairs = {key: paired_comparison(correct[a], correct[b], bootstrap) for key, (a, b) in named_pairs.items()}
    # Sham nuclei carry no damage to read: on the irradiated ones alone, the pairs compare what each model reads of it.
    irradiated_pairs = {key: paired_comparison(correct[a], correct[b], bootstrap, ~sham)
                        | (paired_auc(ranked[a], ranked[b]) if ranked else {})
                        for key, (a, b) in named_pairs.items()} if sham.any() and (~sham).any() else {}
    by_condition = accuracy_by_condition(table, correct)
    by_hour = accuracy_by(table, correct, ["hr_post_exposure"], bootstrap)
    write_csv(METRICS / "accuracy_by_condition.csv", by_condition)
    write_csv(METRICS / "accuracy_by_hour.csv", by_hour)
    pictures = write_saliency(loaded["lenet"], images, table, labels, settings.saliency_per_class, settings.seed,
                              METRICS / "saliency")
    write_json(METRICS / "evaluate.json", {**results, "paired": pairs, "paired_irradiated": irradiated_pairs})
    write_json(METRICS / "headline.json", headline(results))
    header = (f"# Test split: {len(labels)} images from {bootstrap.n_groups} {unit}s, target `{target.name}`, "
              f"protocol: {context['protocol']}")
    write_text(METRICS / "comparison.md", bps_page(results, pairs, irradiated_pairs, by_hour, by_condition, labels_of,
                                                   header, settings.resamples, unit, control_text, pictures,
                                                   context["protocol"]))
    print(headline_table(results, labels_of))
    print(paired_table(pairs, labels_of) if pairs else "")


if __name__ == "__main__":
    run_stage(main, BPS_SOURCES)
