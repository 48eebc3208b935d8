"""evaluate: score every model, and its negative control, on the whole test split, with intervals.

Writes metrics/evaluate.json (per model: headline metrics with 95 % grouped-bootstrap intervals,
the protocol, the bootstrap unit, the negative control; per pair of models: a paired test),
metrics/comparison.md (the same for people, plus accuracy per hour and per condition),
metrics/accuracy_by_{condition,hour}.csv, and per model metrics/per_class/, metrics/confusion/
and metrics/calibration/ CSVs (DVC plots), and the CNN's saliency pictures in metrics/saliency/.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from bps.classical import families
from bps.core.errors import PipelineError
from bps.core.files import write_csv, write_json, write_text
from bps.core.params import EvaluateParams, Params
from bps.core.paths import METRICS, MODELS, control_name
from bps.core.stage import run_stage
from bps.data.arrays import load_split
from bps.data.layouts.split import layout_groups
from bps.evaluation.comparison import (
    LAYOUT_MULTILABEL_HEADLINE,
    cell,
    control_fold_table,
    frame_table,
    headline_table,
    markdown,
    more_table,
    paired_table,
)
from bps.evaluation.intervals import GroupedBootstrap, paired_comparison
from bps.evaluation.layout_scores import TOP_K, multilabel_scores, single_label_scores
from bps.evaluation.saliency import input_gradients, render, sample_per_class
from bps.evaluation.scores import (
    accuracy_by,
    accuracy_by_condition,
    control_scores,
    cross_validated_control_scores,
    describe_protocol,
    model_scores,
    reliability_table,
    strata,
)
from bps.models import pixel_mlp, sklearn_io
from bps.models.card import read_card
from bps.models.inference import pick_device, predict_proba
from bps.models.networks import load_checkpoint
from bps.targets.labels import Target, get_target, task_target
from bps.targets.metrics import confusion_rows, is_sham, per_class
from bps.targets.multilabel import per_label
from bps.training.negative_control import CONTROL_TARGET, read_held_out

# (model folder, prepared test images N×C×H×W uint8, their rows of data/prepared/test.csv, target)
#   → probabilities of the target's outputs (its classes, or per head: Target.outputs).
Predict = Callable[[Path, np.ndarray, pd.DataFrame, Target], np.ndarray]


@dataclass(frozen=True)
class ScoredModel:
    """A model that evaluate scores: ``name`` is its key in evaluate.json and its folder under
    models/; with ``control``, models/<name>-control holds its negative control and the
    predictions it made for the sham images it held out (bps/controls.py)."""

    name: str
    label: str
    predict: Predict
    control: bool = True


def mlp_probabilities(folder: Path, images: np.ndarray, table: pd.DataFrame, target: Target) -> np.ndarray:
    return target.marginals(sklearn_io.load(folder).predict_proba(pixel_mlp.flatten(images)))


def cnn_probabilities(folder: Path, images: np.ndarray, table: pd.DataFrame, target: Target,
                      device: torch.device) -> np.ndarray:
    model, _ = load_checkpoint(folder, device)
    return predict_proba(model, images, device, target.head_sizes, target.multilabel)


def classical_probabilities(folder: Path, images: np.ndarray, table: pd.DataFrame, target: Target) -> np.ndarray:
    return target.marginals(families.probabilities_for(folder, table))


def scored_models(params: Params) -> list[ScoredModel]:
    """Every model evaluate scores, in table order. Adding one is one line here (and its stages in dvc.yaml).

    On a layout only the image models: the controls and the classical baselines are BPS-only.
    """
    device = pick_device(params.train.device)
    layout = params.data.source == "layout"
    models = [
        ScoredModel("baseline", "MLP baseline", mlp_probabilities, control=not layout),
        ScoredModel("lenet", "LeNet-5" if params.train.model == "lenet" else params.train.model,
                    partial(cnn_probabilities, device=device), control=not layout),
        ScoredModel("appearance", "appearance only (no foci)", classical_probabilities),
        ScoredModel("foci", "foci count", classical_probabilities),
    ]
    return models[:2] if layout else models


def check_target(folder: Path, target: str) -> None:
    """Refuse to score a model trained for another target (e.g. after editing params by hand)."""
    trained_for = read_card(folder).target  # also refuses a folder whose training did not finish
    if trained_for != target:
        raise PipelineError(f"{folder} was trained for {trained_for!r} but evaluate expects {target!r}")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text)


def write_saliency(name: str, target: Target, images: np.ndarray, table: pd.DataFrame, labels: np.ndarray,
                   params: Params) -> list[str]:
    """The CNN's input-gradient maps for a seeded sample of test nuclei, one PNG per true class."""
    device = pick_device(params.train.device)
    model, _ = load_checkpoint(MODELS / name, device)
    chosen = np.array(sample_per_class(labels, params.evaluate.saliency_per_class, params.evaluate.seed), dtype=int)
    if not len(chosen):
        return []
    saliency, outputs = input_gradients(model, np.asarray(images[chosen]), device, target.head_sizes)
    proba = target.joint(outputs)  # over the target's classes, each head's prediction joined
    written = []
    for label in np.unique(labels[chosen]):
        rows = np.flatnonzero(labels[chosen] == label)
        rows_of = table.iloc[chosen[rows]]
        captions = [f"{p} {d:g} Gy {h} h, {well}: predicted {target.classes[pr.argmax()]} (p={pr.max():.2f})"
                    for p, d, h, well, pr in zip(rows_of["particle_type"], rows_of["dose_Gy"],
                                                 rows_of["hr_post_exposure"], rows_of["well"], proba[rows])]
        title = f"{name}, true class {target.classes[label]}: input | |d log p / d pixel| | overlay"
        path = METRICS / "saliency" / f"{name}_{slug(target.classes[label])}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        render(np.asarray(images[chosen[rows]]), saliency[rows], captions, title).save(path)
        written.append(str(path))
    return written


def score_control(folder: Path, settings: EvaluateParams) -> tuple[dict | None, str]:
    """A negative control from its pooled held-out predictions, and how it was scored, for people.

    Cross-validated over hours (leave_hour_out), its models change with the folds, so its
    intervals come from the spread of the fold scores; otherwise it is scored on the test split
    with the usual grouped bootstrap.
    """
    table, proba = read_held_out(folder)
    particles = sorted(set(table["particle_type"]))
    if particles != ["Fe", "X-ray"]:
        return None, (f"**not scored here**: its held-out images include shams of {particles or 'no particle'}; "
                      "scoring needs Fe and X-ray sham images")
    folds = list(table["fold"].unique())
    labels = get_target(CONTROL_TARGET).encode(table)
    if len(folds) > 1:
        scores = {**cross_validated_control_scores(labels, proba, table["fold"].to_numpy()),
                  "scored_on": "every sham plate, by hour folds",
                  "interval": f"corrected t over {len(folds)} hour folds (Nadeau & Bengio 2003)"}
        how = (f"cross-validated over hours: each hour's sham plates held out in turn ({', '.join(folds)}), "
               f"trained on the other hours' shams, and scored on all {len(labels)} sham images of "
               f"{table['plate'].nunique()} plates (a test split of one sham plate per particle could not measure "
               "it); its intervals come from the spread of the fold scores, because the trained models change with "
               "the folds, and are as wide as so few plates allow")
    else:
        unit = settings.bootstrap_unit
        bootstrap = GroupedBootstrap.draw(table[unit], labels, settings.resamples, settings.seed)
        scores = {**control_scores(labels, proba, bootstrap), "scored_on": "test split shams",
                  "interval": f"grouped bootstrap over test {unit}s"}
        how = (f"trained on training-split shams and scored on the {len(labels)} test sham images "
               f"({bootstrap.n_groups} {unit}s)")
    return scores, how + "; leakage = its balanced accuracy − 0.5, the plate signal"


def write_not_applicable_csv(path: Path, why: str) -> None:
    """A declared out that has no meaning on a layout: one row saying so."""
    write_csv(path, pd.DataFrame({"not_applicable": [why]}))


def evaluate_layout(params: Params) -> None:
    """Score the MLP and the CNN on a layout's whole test split (bps/layout_evaluation.py)."""
    target, settings = task_target(params), params.evaluate
    models = scored_models(params)
    for model in models:
        check_target(MODELS / model.name, target.name)
    images, table = load_split("test")
    labels = target.encode(table)
    group_by = params.split.group_by
    groups = layout_groups(table, params.data.layout.group_columns, group_by)
    bootstrap = GroupedBootstrap.draw(groups, np.zeros(len(table)), settings.resamples, settings.seed)
    unit = "sample" if group_by == "none" else group_by
    context = {"task": target.name, "multilabel": target.multilabel, "protocol": describe_protocol(params.split),
               "bootstrap_unit": unit, "n_test_groups": bootstrap.n_groups}
    results, labels_of = {}, {model.name: model.label for model in models}
    for model in tqdm(models, desc="evaluate", unit="model"):
        proba = model.predict(MODELS / model.name, images, table, target)
        if target.multilabel:
            thresholds = np.asarray(read_card(MODELS / model.name).thresholds)
            results[model.name] = {**context, **multilabel_scores(labels, proba, thresholds, bootstrap),
                                   "thresholds": dict(zip(target.classes, thresholds.tolist()))}
            rows = pd.DataFrame(per_label(labels, proba, thresholds, target.classes)).rename(columns={"label": "class"})
            write_csv(METRICS / "per_class" / f"{model.name}.csv", rows)
            write_csv(METRICS / "confusion" / f"{model.name}.csv", rows[["class", "tn", "fp", "fn", "tp"]])
        else:
            predicted = proba.argmax(axis=1)
            results[model.name] = {**context, **single_label_scores(labels, proba, bootstrap)}
            write_csv(METRICS / "per_class" / f"{model.name}.csv", pd.DataFrame(per_class(target, labels, predicted)))
            write_csv(METRICS / "confusion" / f"{model.name}.csv", confusion_rows(target, labels, predicted))
            write_csv(METRICS / "calibration" / f"{model.name}.csv",
                      reliability_table(labels, proba, settings.calibration_bins))
    for folder in ("calibration", "saliency"):  # DVC outputs even when they hold nothing
        (METRICS / folder).mkdir(parents=True, exist_ok=True)
    for name in ("accuracy_by_condition.csv", "accuracy_by_hour.csv"):
        write_not_applicable_csv(METRICS / name, "BPS conditions and hours post exposure: not in a layout")
    write_json(METRICS / "evaluate.json", results)
    keys = list(LAYOUT_MULTILABEL_HEADLINE) if target.multilabel else ["accuracy", "macro_f1"]
    if not target.multilabel and len(target.classes) > TOP_K:
        keys.append(f"top_{TOP_K}_accuracy")
    headline = markdown(["model", *keys], [[labels_of[name], *(cell(scores, key) for key in keys)]
                                           for name, scores in results.items()])
    kind = f"multi-label, {len(target.classes)} labels" if target.multilabel else f"{len(target.classes)} classes"
    notes = [f"Labels are predicted at each model's thresholds (task.threshold: {params.task.threshold}), chosen on "
             "the validation split after training and stored in its model card. Average precisions carry no "
             "interval (a replicate would re-rank every label's scores)."] if target.multilabel else []
    if bootstrap.n_groups == 1:
        notes.append(f"The test split is one {unit}: every replicate redraws it, so the intervals are single points "
                     f"and say nothing about {unit}-to-{unit} variation.")
    write_text(METRICS / "comparison.md", "\n".join([
        f"# Test split: {len(labels)} samples from {bootstrap.n_groups} {unit}s, target `{target.name}` ({kind}), "
        f"protocol: {context['protocol']}\n",
        f"Every interval is a 95 % percentile interval of {settings.resamples} bootstrap replicates that redraw "
        f"whole test {unit}s with replacement (grouped by {unit}, unstratified; bps/layout_evaluation.py). "
        + " ".join(notes) + "\n",
        headline,
        "The negative controls and the classical appearance and foci baselines are BPS-only (they need sham "
        "plates and nucleus foci features) and are not scored on a layout: see NOT_APPLICABLE.md in their folders.\n",
    ]))
    print(headline)


def main(params: Params) -> None:
    if params.data.source == "layout":
        evaluate_layout(params)
        return
    target, control_target = get_target(params.task.target), get_target(CONTROL_TARGET)
    models = scored_models(params)
    for model in models:
        check_target(MODELS / model.name, target.name)
        if model.control:
            check_target(MODELS / control_name(model.name), control_target.name)
    settings = params.evaluate
    images, table = load_split("test")
    labels, sham = target.encode(table), is_sham(table)
    unit = settings.bootstrap_unit
    bootstrap = GroupedBootstrap.draw(table[unit], strata(target, labels, sham), settings.resamples, settings.seed)
    context = {"task": target.name, "protocol": describe_protocol(params.split), "bootstrap_unit": unit,
               "n_test_groups": bootstrap.n_groups}
    results, correct, labels_of = {}, {}, {model.name: model.label for model in models}
    control_text = "none of these models has one"
    for model in tqdm(models, desc="evaluate", unit="model"):
        proba = model.predict(MODELS / model.name, images, table, target)
        predicted = target.predict(proba)
        results[model.name] = {**context, **model_scores(target, labels, proba, sham, bootstrap,
                                                         settings.calibration_bins)}
        if model.control:
            control, control_text = score_control(MODELS / control_name(model.name), settings)
            if control is not None:
                results[model.name]["control"] = control
        correct[model.name] = predicted == labels
        for folder, frame in (("per_class", pd.DataFrame(per_class(target, labels, predicted))),
                              ("confusion", confusion_rows(target, labels, predicted)),
                              ("calibration", reliability_table(labels, target.joint(proba),
                                                                settings.calibration_bins))):
            write_csv(METRICS / folder / f"{model.name}.csv", frame)
    pairs = {f"{a}_vs_{b}": paired_comparison(correct[a], correct[b], bootstrap)
             for a, b in combinations(correct, 2)}
    by_condition = accuracy_by_condition(table, correct)
    by_hour = accuracy_by(table, correct, ["hr_post_exposure"], bootstrap)
    write_csv(METRICS / "accuracy_by_condition.csv", by_condition)
    write_csv(METRICS / "accuracy_by_hour.csv", by_hour)
    (METRICS / "saliency").mkdir(parents=True, exist_ok=True)  # a DVC output even when it holds no picture
    pictures = write_saliency("lenet", target, images, table, labels, params)
    write_json(METRICS / "evaluate.json", {**results, "paired": pairs})
    headline, control_folds = headline_table(results, labels_of), control_fold_table(results, labels_of)
    write_text(METRICS / "comparison.md", "\n".join([
        f"# Test split: {len(labels)} images from {bootstrap.n_groups} {unit}s, target `{target.name}`, "
        f"protocol: {context['protocol']}\n",
        f"Every interval is a 95 % percentile interval of {settings.resamples} bootstrap replicates that redraw "
        f"whole test {unit}s, with replacement, within (true class × sham/irradiated) strata (bps/uncertainty.py). "
        f"The negative control is the same model family trained on sham images to tell Fe from X-ray, labels no "
        f"nucleus shows: {control_text}.\n",
        headline,
        *(["## Negative controls, fold by fold (balanced accuracy)\n", control_folds] if control_folds else []),
        "## More metrics\n", more_table(results, labels_of),
        "## Model pairs (same test images)\n",
        "A pair is a tie when the paired bootstrap interval of the difference includes 0 or McNemar's p ≥ 0.05.\n",
        paired_table(pairs, labels_of) if pairs else "(one model)\n",
        f"## Accuracy per hour post exposure (intervals over test {unit}s)\n", frame_table(by_hour, labels_of),
        "## Accuracy per condition (one plate each; no interval: see the wells column)\n",
        frame_table(by_condition, labels_of),
        "## Pictures (`dvc plots show`)\n",
        markdown(["what", "files"], [["reliability (binned confidence vs accuracy)", "metrics/calibration/*.csv"],
                                     ["CNN saliency per true class", ", ".join(pictures) or "none"]]),
    ]))
    print(headline)
    print(paired_table(pairs, labels_of) if pairs else "")


if __name__ == "__main__":
    run_stage(main, layouts=True)
