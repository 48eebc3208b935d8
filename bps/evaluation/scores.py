"""What evaluate reports for a model: headline metrics with grouped-bootstrap 95 % intervals, its
negative control, accuracy per condition and per hour, and reliability (calibration) bins.

Point estimates are :func:`bps.targets.metrics.summary`'s whole-split values; every interval comes from
one :class:`~bps.evaluation.intervals.GroupedBootstrap` shared by all models, so the same replicates score
every model and pairs can be compared replicate by replicate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from bps.core.params import SplitParams
from bps.data.meta import CONDITION_COLUMNS
from bps.evaluation.intervals import (
    GroupedBootstrap,
    accuracy,
    balanced_accuracy,
    cross_validation_interval,
    interval,
    macro_f1,
)
from bps.targets.labels import Target
from bps.targets.metrics import per_image_losses, summary

LOW, HIGH = "_ci95_low", "_ci95_high"
CHANCE = 0.5  # balanced accuracy of any constant guess between Fe and X-ray


def strata(target: Target, y_true: np.ndarray, sham: np.ndarray) -> np.ndarray:
    """Each image's bootstrap stratum: its true class and whether it is sham, so that every
    replicate keeps the test split's class balance and sham/irradiated mix."""
    names = np.array(target.classes, dtype=object)[y_true]
    return np.where(sham, names + "|sham", names + "|irradiated")


def describe_protocol(split: SplitParams) -> str:
    """How the test split was drawn, in a few words that every headline number carries."""
    if split.protocol == "leave_hour_out":
        return f"leave_hour_out (test: the {split.test_hour} h plates, unseen in training)"
    if split.protocol == "leave_wells_out":
        return "leave_wells_out (test: well positions unseen in training; plates seen)"
    return f"grouped by {split.group_by}"


def with_bounds(scores: dict, bounds: dict[str, tuple[float, float]]) -> dict:
    """``scores`` with ``<name>_ci95_low`` / ``<name>_ci95_high`` beside every value that has bounds."""
    result = dict(scores)
    for name, (low, high) in bounds.items():
        if result.get(name) is not None:
            result[name + LOW], result[name + HIGH] = round(low, 6), round(high, 6)
    return result


def with_intervals(scores: dict, replicates: dict[str, np.ndarray]) -> dict:
    """``scores`` with the percentile interval of its bootstrap ``replicates`` beside each value."""
    return with_bounds(scores, {name: interval(values) for name, values in replicates.items()})


def model_scores(target: Target, y_true: np.ndarray, proba: np.ndarray, sham: np.ndarray,
                 bootstrap: GroupedBootstrap, calibration_bins: int,
                 ranking: tuple[float, np.ndarray] | None = None) -> dict:
    """Headline metrics over the whole test split, each with its grouped-bootstrap interval.

    ``proba`` holds the model's outputs (per head for a multi-head target); intervals, calibration
    and per-image losses use the joint classes (:meth:`Target.joint`). ``ranking``, the model's
    :func:`irradiated_auc` where :func:`ranks_irradiated`, adds its ROC AUC on the irradiated nuclei
    (computed by the caller, which pairs it with the other models' too).
    """
    joint = target.joint(proba)
    ece, ece_replicates = calibration_error(y_true, joint, calibration_bins, bootstrap)
    replicates = {
        **_class_replicates(y_true, joint, sham, bootstrap),
        **{name: bootstrap.mean(values) for name, values in per_image_losses(target, y_true, joint).items()},
        "calibration_error": ece_replicates,
    }
    if len(target.heads) > 1:  # each head's own scores too: particle_accuracy, dose_log_loss...
        for head, truth, block in zip(target.heads, target.head_labels(y_true), target.split(proba), strict=True):
            head_replicates = {**_class_replicates(truth, block, sham, bootstrap),
                               "log_loss": bootstrap.mean(per_image_losses(head, truth, block)["log_loss"])}
            replicates |= {f"{head.name}_{name}": values for name, values in head_replicates.items()}
    scores = {**summary(target, y_true, proba, sham), "calibration_error": round(ece, 6)}
    if ranking is not None:
        auc, replicates["irradiated_auc"] = ranking
        scores["irradiated_auc"] = round(auc, 6)
    return with_intervals(scores, replicates)


def ranks_irradiated(target: Target, sham: np.ndarray) -> bool:
    """Whether the irradiated nuclei get a ROC AUC: a two-class target, and some irradiated test nuclei."""
    return len(target.classes) == 2 and bool((~np.asarray(sham, dtype=bool)).any())


def irradiated_auc(y_true: np.ndarray, proba: np.ndarray, sham: np.ndarray,
                   bootstrap: GroupedBootstrap) -> tuple[float, np.ndarray]:
    """A two-class model's ROC AUC on the irradiated nuclei, and its replicates.

    Accuracy takes each model's probabilities at 0.5. On plates no model saw, a model can rank
    the nuclei well and still misplace that threshold; the AUC asks only whether it ranks them.
    """
    return bootstrap.roc_auc(proba[:, 1], y_true == 1, ~np.asarray(sham, dtype=bool))


def paired_auc(first: tuple[float, np.ndarray], second: tuple[float, np.ndarray]) -> dict:
    """ROC AUC difference A − B on the irradiated nuclei from each model's :func:`irradiated_auc` (the
    same replicates rank both, so the interval is paired); ``auc_tie`` when the interval includes 0."""
    (auc_a, replicates_a), (auc_b, replicates_b) = first, second
    low, high = interval(replicates_a - replicates_b)
    return {"auc_difference": round(auc_a - auc_b, 6), "auc_difference" + LOW: round(low, 6),
            "auc_difference" + HIGH: round(high, 6), "auc_tie": bool(low <= 0.0 <= high)}


def _class_replicates(y_true: np.ndarray, proba: np.ndarray, sham: np.ndarray,
                      bootstrap: GroupedBootstrap) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the scores of one softmax's argmax: accuracy, balanced accuracy,
    macro F1, and accuracy on sham and on irradiated images."""
    y_pred = proba.argmax(axis=1)
    confusions = bootstrap.confusions(y_true, y_pred, proba.shape[1])
    correct = (y_pred == y_true).astype(np.float64)
    return {
        "accuracy": accuracy(confusions),
        "balanced_accuracy": balanced_accuracy(confusions),
        "macro_f1": macro_f1(confusions),
        "sham_accuracy": bootstrap.mean(correct, sham),
        "irradiated_accuracy": bootstrap.mean(correct, ~sham),
    }


def _control_points(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """A negative control's point estimates: accuracy, balanced accuracy and leakage (balanced
    accuracy − 0.5, the plate signal)."""
    balanced = skm.balanced_accuracy_score(y_true, y_pred)
    return {
        "n_test": int(len(y_true)),
        "accuracy": round(float(skm.accuracy_score(y_true, y_pred)), 6),
        "balanced_accuracy": round(float(balanced), 6),
        "leakage": round(float(balanced) - CHANCE, 6),
    }


def _control_replicates(confusions: np.ndarray) -> dict[str, np.ndarray]:
    """The control's metrics of each confusion matrix in a stack (replicates, or folds)."""
    balanced = balanced_accuracy(confusions)
    return {"accuracy": accuracy(confusions), "balanced_accuracy": balanced, "leakage": balanced - CHANCE}


def control_scores(y_true: np.ndarray, proba: np.ndarray, bootstrap: GroupedBootstrap) -> dict:
    """The negative control on the test split's sham images, each metric with its bootstrap interval."""
    y_pred = proba.argmax(axis=1)
    scores = {**_control_points(y_true, y_pred), "n_test_groups": bootstrap.n_groups}
    return with_intervals(scores, _control_replicates(bootstrap.confusions(y_true, y_pred, proba.shape[1])))


def cross_validated_control_scores(y_true: np.ndarray, proba: np.ndarray, folds: np.ndarray) -> dict:
    """The negative control pooled over the folds that held its images out, each metric with the
    interval of :func:`~bps.evaluation.intervals.cross_validation_interval` from its per-fold values.

    Every image is held out by exactly one fold and trained on by the others, so a fold's held-out
    share of the data, over the rest, is the n_held_out/n_trained of the correction.
    """
    y_pred, folds = proba.argmax(axis=1), np.asarray(folds)
    names = list(dict.fromkeys(folds))  # in the order the folds ran
    masks = [folds == name for name in names]
    labels = np.arange(proba.shape[1])
    confusions = np.stack([skm.confusion_matrix(y_true[mask], y_pred[mask], labels=labels) for mask in masks])
    per_fold = _control_replicates(confusions)
    held_out = np.array([mask.sum() for mask in masks])
    held_out_per_trained = float(np.mean(held_out / (len(y_true) - held_out)))
    scores = {**_control_points(y_true, y_pred), "n_folds": len(names),
              "fold_balanced_accuracy": {str(name): round(float(value), 6)
                                         for name, value in zip(names, per_fold["balanced_accuracy"], strict=True)}}
    bounds = {name: cross_validation_interval(per_fold[name], scores[name], held_out_per_trained)
              for name in ("accuracy", "balanced_accuracy")}
    bounds["leakage"] = tuple(bound - CHANCE for bound in bounds["balanced_accuracy"])
    return with_bounds(scores, bounds)


def _calibration_columns(y_true: np.ndarray, proba: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Each image's confidence bin (equal widths from 1/K to 1) and its one-hot (correct − confidence)."""
    confidence = proba.max(axis=1)
    edges = np.linspace(1.0 / proba.shape[1], 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    gaps = np.zeros((len(y_true), n_bins))
    gaps[np.arange(len(y_true)), bins] = (proba.argmax(axis=1) == y_true) - confidence
    return bins, gaps


def calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int,
                      bootstrap: GroupedBootstrap) -> tuple[float, np.ndarray]:
    """Expected calibration error, Σ_bins (images in bin / images) · |accuracy − mean confidence|,
    and its bootstrap replicates."""
    _, gaps = _calibration_columns(y_true, proba, n_bins)
    return float(np.abs(gaps.mean(axis=0)).sum()), np.abs(bootstrap.mean(gaps)).sum(axis=1)


def reliability_table(y_true: np.ndarray, proba: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Binned confidence vs accuracy (the reliability diagram's points); ``perfectly_calibrated``
    repeats the confidence so a plot of both columns draws the diagonal beside the model."""
    bins, _ = _calibration_columns(y_true, proba, n_bins)
    frame = pd.DataFrame({"bin": bins, "confidence": proba.max(axis=1), "correct": proba.argmax(axis=1) == y_true})
    table = frame.groupby("bin").agg(images=("correct", "size"), confidence=("confidence", "mean"),
                                     accuracy=("correct", "mean")).reset_index()
    table["perfectly_calibrated"] = table["confidence"]
    return table.round(6)[["bin", "images", "confidence", "accuracy", "perfectly_calibrated"]]


def accuracy_by(table: pd.DataFrame, correct: dict[str, np.ndarray], columns: list[str],
                bootstrap: GroupedBootstrap | None = None) -> pd.DataFrame:
    """Accuracy of every model per value of ``columns`` (e.g. per condition, per hour), with the
    number of images and wells behind it, and intervals when a bootstrap is given."""
    rows = []
    for key, part in table.groupby(columns, sort=True):
        mask = table.index.isin(part.index)
        row = dict(zip(columns, key if isinstance(key, tuple) else (key,)))
        row |= {"images": int(mask.sum()), "wells": int(part["well"].nunique())}
        for name, hits in correct.items():
            row[name] = round(float(hits[mask].mean()), 6)
            if bootstrap is not None:
                low, high = interval(bootstrap.mean(hits.astype(np.float64), mask))
                row[name + LOW], row[name + HIGH] = round(low, 6), round(high, 6)
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_by_condition(table: pd.DataFrame, correct: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per (particle, dose, hours): one plate, and on the default split one test well, so no interval."""
    return accuracy_by(table, correct, CONDITION_COLUMNS)
