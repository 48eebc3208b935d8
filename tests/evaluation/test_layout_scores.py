"""bps.evaluation.layout_scores: how evaluate scores a layout's test split, on hand-made arrays, exact values."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from bps.evaluation.intervals import GroupedBootstrap
from bps.evaluation.layout_scores import multilabel_scores, single_label_scores
from bps.targets.labels import layout_target

HPA = layout_target(["0", "5", "25"], " ")
RXRX1 = layout_target([f"s{i}" for i in range(7)], None)


def _bootstrap(weights: list[list[int]], groups: list[int]) -> GroupedBootstrap:
    return GroupedBootstrap(np.array(groups), np.array(weights))


Y_TRUE = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
SCORES = np.array([[0.8, 0.1, 0.7], [0.3, 0.2, 0.1], [0.6, 0.9, 0.4], [0.2, 0.6, 0.9], [0.1, 0.1, 0.2]])
THRESHOLDS = np.array([0.5, 0.5, 0.3])


def test_multilabel_scores_match_scikit_learn_and_a_replicate_is_its_resampled_split():
    groups = [0, 0, 1, 2, 2]  # three groups; the one replicate draws group 0 twice, group 2 once
    scores = multilabel_scores(Y_TRUE, SCORES, THRESHOLDS, _bootstrap([[2, 0, 1]], groups))
    y_pred = SCORES >= THRESHOLDS
    assert scores["macro_f1"] == round(skm.f1_score(Y_TRUE, y_pred, average="macro", zero_division=0), 6)
    assert scores["sample_f1"] == round(skm.f1_score(Y_TRUE, y_pred, average="samples", zero_division=1), 6)
    drawn = [0, 1, 0, 1, 3, 4]
    resampled = {
        "macro_f1": skm.f1_score(Y_TRUE[drawn], y_pred[drawn], average="macro", zero_division=0),
        "micro_f1": skm.f1_score(Y_TRUE[drawn], y_pred[drawn], average="micro", zero_division=0),
        "sample_f1": skm.f1_score(Y_TRUE[drawn], y_pred[drawn], average="samples", zero_division=1),
        "jaccard": skm.jaccard_score(Y_TRUE[drawn], y_pred[drawn], average="samples", zero_division=1),
        "hamming_loss": skm.hamming_loss(Y_TRUE[drawn], y_pred[drawn]),
        "subset_accuracy": skm.accuracy_score(Y_TRUE[drawn], y_pred[drawn]),
    }
    for name, value in resampled.items():
        assert scores[f"{name}_ci95_low"] == scores[f"{name}_ci95_high"] == round(value, 6), name
    assert scores["no_interval"] == ["micro_ap", "macro_ap"] and "macro_ap_ci95_low" not in scores


def test_single_label_scores_report_top_k_only_beyond_k_classes():
    y_true = np.array([0, 1, 2, 3, 4, 5])
    proba = np.eye(7)[[0, 1, 2, 3, 6, 6]] * 0.5 + 0.5 / 7
    proba[4, 4] += 0.01  # image 4's true class is second: in its top 5; image 5's true class ties with four others
    scores = single_label_scores(y_true, proba, _bootstrap([[1, 1, 1]], [0, 0, 1, 1, 2, 2]))
    assert scores["accuracy"] == round(4 / 6, 6)
    assert scores["macro_f1"] == round(skm.f1_score(y_true, proba.argmax(axis=1), labels=range(7), average="macro",
                                                    zero_division=0), 6)
    assert scores["top_5_accuracy"] == round(skm.top_k_accuracy_score(y_true, proba, k=5, labels=range(7)), 6)
    assert scores["accuracy_ci95_low"] == scores["accuracy"] and scores["macro_f1_ci95_high"] == scores["macro_f1"]
    few = single_label_scores(np.array([0, 1, 2]), np.eye(3), _bootstrap([[1, 1, 1]], [0, 1, 2]))
    assert "top_5_accuracy" not in few and few["accuracy"] == 1.0


