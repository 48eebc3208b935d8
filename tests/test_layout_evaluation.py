"""Layout targets (task.target labels) and how evaluate scores them: hand-made arrays, exact values."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from bps.core.params import PreprocessParams, parse_params
from bps.core.stage import BPS_SOURCES, LAYOUT_SOURCES, run_stage
from bps.evaluation.intervals import GroupedBootstrap
from bps.evaluation.layout_scores import multilabel_scores, single_label_scores
from bps.models.card import ModelCard
from bps.targets.labels import layout_target, task_target
from bps.targets.metrics import summary, validation_scores
from bps.targets.multilabel import oversampling_weights, positive_weights
from bps.training.batches import balanced_weights, training_weights

HPA = layout_target(["0", "5", "25"], " ")
RXRX1 = layout_target([f"s{i}" for i in range(7)], None)


def test_a_multilabel_target_encodes_indicator_rows_and_text_labels():
    table = pd.DataFrame({"label": ["0 25", "5", "25 5 0", None]})
    assert HPA.multilabel and HPA.outputs == ("0", "5", "25")
    np.testing.assert_array_equal(HPA.encode(table), [[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="unknown label '7'"):
        HPA.encode(pd.DataFrame({"label": ["7"]}))


def test_a_single_label_layout_target_encodes_class_indices():
    assert not RXRX1.multilabel
    np.testing.assert_array_equal(RXRX1.encode(pd.DataFrame({"label": ["s3", "s0", "s6"]})), [3, 0, 6])
    with pytest.raises(ValueError, match="unknown label 's9'"):
        RXRX1.encode(pd.DataFrame({"label": ["s9"]}))
    # its classes are its own attributes, so the BPS summary scores it (Hamming = 2 × error rate / classes)
    proba = np.eye(7)[[3, 0, 1]]
    scores = summary(RXRX1, np.array([3, 0, 6]), proba, np.zeros(3, dtype=bool))
    assert scores["accuracy"] == round(2 / 3, 6) and scores["hamming_loss"] == round(2 / 21, 6)


def test_task_target_reads_the_classes_the_split_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "split").mkdir(parents=True)
    (tmp_path / "data" / "split" / "summary.json").write_text(json.dumps({"classes": ["2", "10"]}))
    hpa = parse_params({"data": {"source": "layout"}, "split": {"group_by": "none"}, "task": {"target": "labels"}})
    assert task_target(hpa) == layout_target(["2", "10"], " ")
    single = hpa.model_copy(update={"data": hpa.data.model_copy(update={
        "layout": hpa.data.layout.model_copy(update={"label_separator": None})})})
    assert not task_target(single).multilabel
    assert task_target(parse_params({})).name == "particle"


def test_multilabel_validation_scores_are_mean_bce_subset_accuracy_and_macro_f1():
    y_true = np.array([[1, 0, 1], [0, 1, 0]])
    proba = np.array([[0.9, 0.2, 0.6], [0.4, 0.3, 0.1]])
    scores = validation_scores(HPA, y_true, proba)
    bce = -(y_true * np.log(proba) + (1 - y_true) * np.log(1 - proba)).sum(axis=1).mean()
    assert scores["val_loss"] == pytest.approx(bce, abs=1e-6)
    assert scores["val_accuracy"] == 0.5  # the first row is exactly right at 0.5, the second misses label 5
    assert scores["val_macro_f1"] == pytest.approx(skm.f1_score(y_true, proba >= 0.5, average="macro",
                                                                zero_division=0), abs=1e-6)


def test_training_weights_follow_the_label_shape():
    indicators = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    class_weights, sample_weights = training_weights(indicators, 2)
    np.testing.assert_array_equal(class_weights, positive_weights(indicators))
    np.testing.assert_array_equal(sample_weights, oversampling_weights(indicators))
    labels = np.array([0, 0, 1])
    class_weights, sample_weights = training_weights(labels, 2)
    np.testing.assert_array_equal(class_weights, balanced_weights(labels, 2))
    np.testing.assert_array_equal(sample_weights, balanced_weights(labels, 2)[labels])


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


def test_a_card_holds_one_threshold_per_class():
    card = {"kind": "cnn", "architecture": "lenet", "target": "labels", "classes": ["0", "5"],
            "preprocess": PreprocessParams(), "training": {}, "multilabel": True}
    assert ModelCard(**card, thresholds=[0.3, 0.5]).thresholds == [0.3, 0.5]
    with pytest.raises(ValueError, match="thresholds: 1 for 2 classes"):
        ModelCard(**card, thresholds=[0.3])


def test_a_stage_runs_only_on_the_sources_of_its_pipeline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/features.py"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "layout"}, "split": {"group_by": "none"}, "task": {"target": "labels"}}))
    ran = []
    run_stage(ran.append, LAYOUT_SOURCES)
    assert len(ran) == 1 and ran[0].task.target == "labels"
    with pytest.raises(SystemExit) as stopped:
        run_stage(ran.append, BPS_SOURCES)
    assert stopped.value.code == 1 and len(ran) == 1
    assert capsys.readouterr().err == (
        "error: data.source layout: features is a stage of dvc.yaml, not of datasets/dvc.yaml\n")


def test_a_held_stage_or_model_lock_refuses_a_second_holder_naming_the_first(tmp_path, monkeypatch):
    from bps.core.stage import StageLockedError, TrainingLockedError, stage_lock, training_lock

    monkeypatch.chdir(tmp_path)
    with stage_lock("features"), pytest.raises(StageLockedError) as stage, stage_lock("features"):
        pass
    with training_lock(Path("models/lenet")), pytest.raises(TrainingLockedError) as model, \
            training_lock(Path("models/lenet")):
        pass
    assert str(stage.value) == (f"stage features is already running as pid {os.getpid()} "
                                "(lock .locks/features.lock); wait for it to finish or stop it")
    assert str(model.value) == (f"models/lenet is being trained by pid {os.getpid()} (lock models/.lenet.lock); "
                                "wait for it to finish or stop it")
    with stage_lock("features"):  # released on exit
        pass
