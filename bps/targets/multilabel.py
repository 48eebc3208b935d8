"""Multi-label and many-class targets: labels, whole-split metrics, thresholds, training weights.

For HPA-style data (each image has one or more of a few dozen strongly imbalanced labels, scored
by macro/sample F1 and average precision) and RxRx1-style data (one of ~1,000 classes, scored by
top-k accuracy). Numpy and scikit-learn only, so that scoring never imports torch; the CNN's
multi-label loss and sigmoid outputs are in bps/training/loop.py (``multilabel=True``).

Conventions: as in bps/targets/metrics.py, every number is over a whole split and floats are rounded to
6 decimals. A 0/0 (nothing true, nothing predicted) scores 0 for a label (``zero_division=0``, as
bps/targets/metrics.py: a split too small to contain a label cannot earn credit for it) but 1 for an
image (sample F1, Jaccard): an image without labels predicted without labels is exactly right,
as subset accuracy and Hamming loss say too. A label is predicted when its score is at or above
its threshold (``>=``, as precision_recall_curve's thresholds read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn import metrics as skm

# Candidate thresholds for choose_thresholds: 0.01, 0.02, ..., 0.99.
THRESHOLD_GRID = np.round(np.linspace(0.01, 0.99, 99), 2)
# The threshold of a label with no positive on the validation split: nothing to tune it on.
FALLBACK_THRESHOLD = 0.5
# The largest positive weight: beyond it a rare label's few positives dominate the gradient.
POSITIVE_WEIGHT_CAP = 10.0


def label_matrix(values: Sequence[str], classes: Sequence[str], separator: str) -> np.ndarray:
    """Label strings ("0 5 25", "Mitochondria|Nucleoli") → the N×L uint8 indicator matrix.

    Column j is ``classes[j]``; an empty string is an image without labels (an all-zero row).
    Read missing values as "" (pandas: ``keep_default_na=False`` or ``fillna("")``).
    """
    column = {name: j for j, name in enumerate(classes)}
    if len(column) != len(classes):
        raise ValueError(f"classes must be unique, got {list(classes)}")
    matrix = np.zeros((len(values), len(classes)), dtype=np.uint8)
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"row {row}: labels {value!r} are not a string (read missing labels as '')")
        for label in filter(None, (part.strip() for part in value.split(separator))):
            if label not in column:
                raise ValueError(f"row {row}: unknown label {label!r} in {value!r} (allowed: {', '.join(classes)})")
            matrix[row, column[label]] = 1
    return matrix


def predict(scores: np.ndarray, thresholds: np.ndarray | float, at_least_one: bool = False) -> np.ndarray:
    """N×L scores → N×L uint8 predictions: each label where its score reaches its threshold.

    ``at_least_one`` gives a row with no label its top-scoring one. HPA practice: every HPA image
    has at least one location, so an empty prediction is always wrong and scores 0 for that image
    (sample F1, Jaccard), while the top score is right often enough to be worth the guess.
    """
    predicted = (scores >= np.asarray(thresholds)).astype(np.uint8)
    if at_least_one:
        empty = ~predicted.any(axis=1)
        predicted[empty, scores[empty].argmax(axis=1)] = 1
    return predicted


def summary(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | float, at_least_one: bool = False) -> dict:
    """Headline metrics of one model on one split (N×L indicators, N×L scores, see :func:`predict`).

    The F1s, Hamming loss, Jaccard and subset accuracy score the thresholded predictions; the
    average precisions rank the scores themselves. ``macro_ap`` averages only the labels with at
    least one positive (``ap_labels`` says how many): AP is undefined without positives, and
    counting such labels as 0 would score the split, not the model. Both APs are None when the
    split has no positive at all.
    """
    y_pred = predict(scores, thresholds, at_least_one)
    present = y_true.any(axis=0)
    result = {
        "n_test": int(len(y_true)),
        "sample_f1": skm.f1_score(y_true, y_pred, average="samples", zero_division=1),
        "macro_f1": skm.f1_score(y_true, y_pred, average="macro", zero_division=0),
        "micro_f1": skm.f1_score(y_true, y_pred, average="micro", zero_division=0),
        "hamming_loss": skm.hamming_loss(y_true, y_pred),
        "jaccard": skm.jaccard_score(y_true, y_pred, average="samples", zero_division=1),
        "subset_accuracy": skm.accuracy_score(y_true, y_pred),
        "micro_ap": skm.average_precision_score(y_true, scores, average="micro") if present.any() else None,
        "macro_ap": (skm.average_precision_score(y_true[:, present], scores[:, present], average="macro")
                     if present.any() else None),
        "ap_labels": int(present.sum()),
        "label_cardinality_true": y_true.sum(axis=1).mean(),
        "label_cardinality_pred": y_pred.sum(axis=1).mean(),
    }
    return {key: (round(float(value), 6) if isinstance(value, float) else value) for key, value in result.items()}


def per_label(
    y_true: np.ndarray,
    scores: np.ndarray,
    thresholds: np.ndarray | float,
    classes: Sequence[str],
    at_least_one: bool = False,
) -> list[dict]:
    """Each label's precision, recall, F1, support, AP (None without positives) and confusion counts."""
    y_pred = predict(scores, thresholds, at_least_one)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    confusion = skm.multilabel_confusion_matrix(y_true, y_pred)  # L × [[tn, fp], [fn, tp]]
    rows = []
    for j, name in enumerate(classes):
        (tn, fp), (fn, tp) = confusion[j]
        ap = skm.average_precision_score(y_true[:, j], scores[:, j]) if support[j] else None
        rows.append({
            "label": name,
            "precision": round(float(precision[j]), 6),
            "recall": round(float(recall[j]), 6),
            "f1": round(float(f1[j]), 6),
            "support": int(support[j]),
            "ap": round(float(ap), 6) if ap is not None else None,
            "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
        })
    return rows


def choose_thresholds(
    y_true: np.ndarray,
    scores: np.ndarray,
    mode: Literal["global", "per_label"],
    grid: Sequence[float] = THRESHOLD_GRID,
) -> np.ndarray:
    """One threshold per label, chosen on the validation split from ``grid``.

    ``global``: the one threshold shared by all labels that maximises macro F1. ``per_label``:
    each label's own F1-maximising threshold, :data:`FALLBACK_THRESHOLD` for a label with no
    positive. Ties go to the lowest threshold: it predicts more positives, the kinder error for
    rare labels whose handful of validation positives makes the F1 curve flat and noisy.
    Chosen on plain thresholding: :func:`predict`'s ``at_least_one`` only fills empty rows later.
    """
    candidates = np.unique(np.asarray(grid, dtype=np.float64))  # sorted: argmax's first maximum is the lowest
    if not len(candidates) or candidates[0] < 0 or candidates[-1] > 1:
        raise ValueError(f"grid must hold thresholds in [0, 1], got {list(grid)}")
    n_labels = y_true.shape[1]
    if mode == "global":
        macro = [skm.f1_score(y_true, scores >= t, average="macro", zero_division=0) for t in candidates]
        return np.full(n_labels, candidates[int(np.argmax(macro))])
    if mode == "per_label":
        f1 = np.array([skm.f1_score(y_true, scores >= t, average=None, zero_division=0) for t in candidates])
        best = candidates[f1.argmax(axis=0)]
        return np.where(y_true.any(axis=0), best, FALLBACK_THRESHOLD)
    raise ValueError(f"threshold mode: unknown {mode!r} (allowed: global, per_label)")


def top_k_accuracy(y_true_idx: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of images whose true class is among their ``k`` highest scores (N class indices, N×C scores).

    Every one of the C columns counts as a class, so a split in which some classes never occur
    is scored as it is (scikit-learn would otherwise infer the classes from ``y_true``). For
    three or more classes: with two, top-1 is the accuracy and top-2 always 1.
    """
    n_classes = scores.shape[1]
    if n_classes < 3:
        raise ValueError(f"top-k accuracy needs at least 3 classes, got {n_classes} (use accuracy)")
    return round(float(skm.top_k_accuracy_score(y_true_idx, scores, k=k, labels=np.arange(n_classes))), 6)


def positive_weights(indicators: np.ndarray, cap: float = POSITIVE_WEIGHT_CAP) -> np.ndarray:
    """Per label negatives/positives, at most ``cap``: ``BCEWithLogitsLoss(pos_weight=...)``.

    A positive then weighs as much as all the label's negatives together, so a rare label is not
    learnt as "always no". A label without positives gets ``cap`` (its weight multiplies nothing).
    """
    if cap <= 0:
        raise ValueError(f"cap must be positive, got {cap}")
    positives = indicators.sum(axis=0).astype(np.float64)
    negatives = len(indicators) - positives
    ratio = np.divide(negatives, positives, out=np.full_like(positives, np.inf), where=positives > 0)
    return np.minimum(ratio, cap)


def oversampling_weights(indicators: np.ndarray) -> np.ndarray:
    """Per image the largest inverse frequency (N / count) of its labels: a sampler's weights.

    The usual rare-label oversampling (torch's WeightedRandomSampler, or bps.training.batches'
    ``sample_weights``): each label's images are drawn about equally often in total, and an
    image is drawn for its rarest label (the maximum), so a common label it also carries cannot
    dilute a rare one. Images without labels get the smallest weight any labelled image can
    have: that of the commonest label.
    """
    counts = indicators.sum(axis=0).astype(np.float64)
    if not counts.any():
        return np.ones(len(indicators))
    inverse = np.divide(len(indicators), counts, out=np.zeros_like(counts), where=counts > 0)
    weights = (indicators * inverse).max(axis=1)
    return np.where(indicators.any(axis=1), weights, inverse[counts > 0].min())
