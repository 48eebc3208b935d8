"""Whole-split classification metrics, scikit-learn underneath.

Every number is computed over all rows of a split at once (never averaged over batches), and
sham images are also scored on their own: under the ``particle`` target their label is a
plate property no image can show, so their accuracy should sit near 0.5, and a model that does
much better there is reading plate effects.

A multi-head target (``particle+dose``) is also scored head by head (``particle_accuracy``,
``dose_macro_f1``, ...); its plain keys score the joint prediction, so they compare with
``particle_dose``, and its log loss is the sum of the heads' (the training loss).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from bps.targets import multilabel
from bps.targets.labels import Target

# The threshold of the per-epoch multi-label validation scores; the kept model's own are chosen after training.
VALIDATION_THRESHOLD = 0.5


def summary(target: Target, y_true: np.ndarray, proba: np.ndarray, is_sham: np.ndarray) -> dict:
    """Headline metrics for one model on one split."""
    labels = np.arange(len(target.classes))
    y_pred = target.predict(proba)
    true_sets, pred_sets = target.indicators(y_true), target.indicators(y_pred)
    result = {
        "n_test": int(len(y_true)),
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "macro_f1": skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "hamming_loss": skm.hamming_loss(true_sets, pred_sets),
        "jaccard": skm.jaccard_score(true_sets, pred_sets, average="samples", zero_division=0),
        "log_loss": sum(
            skm.log_loss(truth, _clipped(block), labels=np.arange(len(head.classes)))
            for head, truth, block in zip(target.heads, target.head_labels(y_true), target.split(proba))
        ),
        "sham_accuracy": skm.accuracy_score(y_true[is_sham], y_pred[is_sham]) if is_sham.any() else None,
        "irradiated_accuracy": (skm.accuracy_score(y_true[~is_sham], y_pred[~is_sham]) if (~is_sham).any() else None),
        **head_scores(target, y_true, proba, is_sham),
    }
    return {key: (round(float(value), 6) if isinstance(value, float) else value) for key, value in result.items()}


HEAD_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "sham_accuracy", "irradiated_accuracy")


def head_scores(target: Target, y_true: np.ndarray, proba: np.ndarray, is_sham: np.ndarray) -> dict:
    """Each head of a multi-head target on its own (``particle_accuracy``, ``dose_accuracy``...); {} for one head."""
    if len(target.heads) == 1:
        return {}
    scores = {}
    for head, truth, block in zip(target.heads, target.head_labels(y_true), target.split(proba)):
        result = summary(head, truth, block, is_sham)
        scores |= {f"{head.name}_{key}": result[key] for key in HEAD_KEYS}
    return scores


def validation_scores(target: Target, y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """What both trainers log after every epoch, over the whole validation split.

    Multi-label: ``val_loss`` is the mean per image of the binary cross-entropy summed over labels
    (the training loss), ``val_accuracy`` the subset accuracy and ``val_macro_f1`` the labels'
    macro F1, both at :data:`VALIDATION_THRESHOLD`.
    """
    if target.multilabel:
        proba = np.clip(proba, 1e-7, 1 - 1e-7)
        loss = -(y_true * np.log(proba) + (1 - y_true) * np.log(1 - proba)).sum(axis=1).mean()
        scores = multilabel.summary(y_true, proba, VALIDATION_THRESHOLD)
        return {"val_loss": round(float(loss), 6), "val_accuracy": scores["subset_accuracy"],
                "val_macro_f1": scores["macro_f1"]}
    scores = summary(target, y_true, proba, is_sham=np.zeros(len(y_true), dtype=bool))
    return {"val_loss": scores["log_loss"], "val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"]}


def per_image_losses(target: Target, y_true: np.ndarray, proba: np.ndarray) -> dict[str, np.ndarray]:
    """Each image's share of the averaged metrics (their means are :func:`summary`'s values): what a
    bootstrap over groups of images resamples."""
    true_sets, pred_sets = target.indicators(y_true), target.indicators(proba.argmax(axis=1))
    union = (true_sets | pred_sets).sum(axis=1)
    return {
        "hamming_loss": (true_sets != pred_sets).mean(axis=1),
        "jaccard": np.where(union > 0, (true_sets & pred_sets).sum(axis=1) / np.maximum(union, 1), 0.0),
        "log_loss": -np.log(_clipped(proba)[np.arange(len(y_true)), y_true]),
    }


def _clipped(proba: np.ndarray, floor: float = 1e-7) -> np.ndarray:
    """Probabilities kept off zero (a finite log loss) and renormalised so rows still sum to 1."""
    proba = np.clip(proba, floor, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def per_class(target: Target, y_true: np.ndarray, y_pred: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support of every class."""
    labels = np.arange(len(target.classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return [
        {
            "class": name,
            "precision": round(float(p), 6),
            "recall": round(float(r), 6),
            "f1": round(float(f), 6),
            "support": int(s),
        }
        for name, p, r, f, s in zip(target.classes, precision, recall, f1, support)
    ]


def confusion_rows(target: Target, y_true: np.ndarray, y_pred: np.ndarray) -> pd.DataFrame:
    """One row per test image (actual, predicted class names): DVC's confusion plot input."""
    names = np.array(target.classes)
    return pd.DataFrame({"actual": names[y_true], "predicted": names[y_pred]})


def is_sham(table: pd.DataFrame) -> np.ndarray:
    """Rows of unirradiated (dose 0) images."""
    return table["dose_Gy"].to_numpy() == 0.0
