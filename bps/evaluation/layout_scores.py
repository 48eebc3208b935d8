"""How evaluate scores a model on a multi-channel layout's test split, with grouped-bootstrap intervals.

Multi-label (HPA-style): :func:`bps.targets.multilabel.summary` at the model's own thresholds (its card).
Single-label (RxRx1-style, many classes): accuracy, macro F1 and top-k accuracy. Every bootstrap
replicate redraws whole test groups (``split.group_by``: plates, or single samples), unstratified:
a plate holds every class and a multi-label sample several. Per-image metrics (accuracy, top-k,
subset accuracy, sample F1, Jaccard, Hamming) are replicate means; macro and micro F1 are recomputed
per replicate from its per-class true/false positive and false negative counts. The average
precisions carry no interval: each replicate would re-rank every label's scores (resamples × labels
curves), too slow for the real test splits, so :data:`NO_INTERVAL` names them in evaluate.json.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from bps.evaluation.intervals import GroupedBootstrap
from bps.evaluation.scores import reliability_table, with_intervals
from bps.targets import multilabel
from bps.targets.labels import Target
from bps.targets.metrics import confusion_rows, per_class

TOP_K = 5  # single-label: top-k accuracy, reported when there are more than k classes
NO_INTERVAL = ("micro_ap", "macro_ap")


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro F1 (a class never true nor predicted scores 0, as scikit-learn's ``zero_division=0``) and
    micro F1, from per-class counts (or means) in the last axis."""
    with np.errstate(invalid="ignore", divide="ignore"):
        denominator = 2 * tp + fp + fn
        macro = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-300), 0.0).mean(axis=-1)
        total = denominator.sum(axis=-1)
        micro = np.where(total > 0, 2 * tp.sum(axis=-1) / np.maximum(total, 1e-300), 0.0)
    return macro, micro


def _replicate_f1(bootstrap: GroupedBootstrap, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict:
    """Macro and micro F1 of every replicate, from N×K per-image counts (F1 is a ratio of counts,
    so each replicate's mean counts give its F1)."""
    macro, micro = f1_from_counts(*(bootstrap.mean(counts) for counts in (tp, fp, fn)))
    return {"macro_f1": macro, "micro_f1": micro}


def multilabel_scores(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
                      bootstrap: GroupedBootstrap) -> dict:
    """N×L indicators and scores at the model's thresholds: the summary with its intervals."""
    y_pred = multilabel.predict(scores, thresholds).astype(bool)
    truth = y_true.astype(bool)
    tp, fp, fn = truth & y_pred, ~truth & y_pred, truth & ~y_pred
    hits, errors = tp.sum(axis=1), (fp | fn).sum(axis=1)
    per_image = {
        "sample_f1": np.where(2 * hits + errors > 0, 2 * hits / np.maximum(2 * hits + errors, 1), 1.0),
        "jaccard": np.where(hits + errors > 0, hits / np.maximum(hits + errors, 1), 1.0),
        "hamming_loss": errors / y_true.shape[1],
        "subset_accuracy": (errors == 0).astype(float),
    }
    replicates = {name: bootstrap.mean(values) for name, values in per_image.items()}
    replicates |= _replicate_f1(bootstrap, tp, fp, fn)
    return {**with_intervals(multilabel.summary(y_true, scores, thresholds), replicates),
            "no_interval": list(NO_INTERVAL)}


def single_label_scores(y_true: np.ndarray, proba: np.ndarray, bootstrap: GroupedBootstrap) -> dict:
    """N class indices and N×C probabilities: accuracy, macro F1 and (more than k classes) top-k accuracy."""
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    one_hot_true, one_hot_pred = np.eye(n_classes, dtype=bool)[y_true], np.eye(n_classes, dtype=bool)[y_pred]
    tp, fp, fn = one_hot_true & one_hot_pred, ~one_hot_true & one_hot_pred, one_hot_true & ~one_hot_pred
    result = {
        "n_test": int(len(y_true)),
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "macro_f1": skm.f1_score(y_true, y_pred, labels=np.arange(n_classes), average="macro", zero_division=0),
    }
    replicates = {"accuracy": bootstrap.mean(y_pred == y_true), **_replicate_f1(bootstrap, tp, fp, fn)}
    del replicates["micro_f1"]  # single-label micro F1 is the accuracy
    if n_classes > TOP_K:
        ranks = (proba > proba[np.arange(len(y_true)), y_true][:, None]).sum(axis=1)
        result[f"top_{TOP_K}_accuracy"] = multilabel.top_k_accuracy(y_true, proba, TOP_K)
        replicates[f"top_{TOP_K}_accuracy"] = bootstrap.mean(ranks < TOP_K)
    result = {key: (round(float(value), 6) if isinstance(value, float) else value) for key, value in result.items()}
    return with_intervals(result, replicates)


def score_model(target: Target, y_true: np.ndarray, proba: np.ndarray, thresholds: list[float] | None,
                bootstrap: GroupedBootstrap, calibration_bins: int) -> tuple[dict, dict[str, pd.DataFrame]]:
    """A model's scores on a layout's test split, and its plot tables (per_class, confusion, calibration).

    Multi-label: at the model's own ``thresholds``, per label; single-label: per class, with a
    reliability table.
    """
    if target.multilabel:
        cuts = np.asarray(thresholds)
        scores = {**multilabel_scores(y_true, proba, cuts, bootstrap),
                  "thresholds": dict(zip(target.classes, cuts.tolist()))}
        rows = pd.DataFrame(multilabel.per_label(y_true, proba, cuts, target.classes))
        rows = rows.rename(columns={"label": "class"})
        return scores, {"per_class": rows, "confusion": rows[["class", "tn", "fp", "fn", "tp"]]}
    predicted = proba.argmax(axis=1)
    return single_label_scores(y_true, proba, bootstrap), {
        "per_class": pd.DataFrame(per_class(target, y_true, predicted)),
        "confusion": confusion_rows(target, y_true, predicted),
        "calibration": reliability_table(y_true, proba, calibration_bins),
    }


def headline_keys(target: Target) -> list[str]:
    """The headline columns of a layout's comparison table."""
    if target.multilabel:
        return ["sample_f1", "macro_f1", "micro_f1", "subset_accuracy", "hamming_loss", "jaccard", "micro_ap",
                "macro_ap"]
    return ["accuracy", "macro_f1", *([f"top_{TOP_K}_accuracy"] if len(target.classes) > TOP_K else [])]
