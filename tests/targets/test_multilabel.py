"""bps.targets.multilabel (labels, metrics, thresholds, top-k, weights) and the multi-label training paths:
the CNN loop's ``multilabel=True`` and the MLP baseline on an indicator matrix."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from bps.core.params import BaselineParams, TrainParams
from bps.models import pixel_mlp
from bps.models.inference import predict_proba, to_float
from bps.models.networks import LeNet5
from bps.targets.multilabel import (
    FALLBACK_THRESHOLD,
    POSITIVE_WEIGHT_CAP,
    choose_thresholds,
    label_matrix,
    oversampling_weights,
    per_label,
    positive_weights,
    predict,
    summary,
    top_k_accuracy,
)
from bps.training.distributed import World, predict_whole_split
from bps.training.loop import head_loss, make_deterministic, make_optimizer, train_epoch

CPU = torch.device("cpu")
# make_deterministic changes process-wide torch settings: tests/conftest.py puts them back.
pytestmark = pytest.mark.usefixtures("restore_torch_global_state")
HPA_CLASSES = [str(i) for i in range(28)]


# --- label_matrix ----------------------------------------------------------------------------


def test_label_matrix_parses_hpa_numbers_and_names():
    matrix = label_matrix(["0 5 25", "", "7", "25 0"], HPA_CLASSES, " ")
    assert matrix.dtype == np.uint8 and matrix.shape == (4, 28)
    assert [np.flatnonzero(row).tolist() for row in matrix] == [[0, 5, 25], [], [7], [0, 25]]
    names = label_matrix(["Mitochondria|Nucleoli", "Nucleoli", " Nucleoli | Cytosol "],
                         ["Cytosol", "Mitochondria", "Nucleoli"], "|")
    assert names.tolist() == [[0, 1, 1], [0, 0, 1], [1, 0, 1]]


def test_label_matrix_names_an_unknown_label_its_row_and_the_classes():
    with pytest.raises(ValueError) as caught:
        label_matrix(["0", "3 28"], HPA_CLASSES, " ")
    message = str(caught.value)
    assert "'28'" in message and "row 1" in message and "0, 1, 2" in message and ", 27)" in message
    with pytest.raises(ValueError, match="row 0: labels nan are not a string"):
        label_matrix([float("nan")], HPA_CLASSES, " ")
    with pytest.raises(ValueError, match="unique"):
        label_matrix(["a"], ["a", "a"], " ")


# --- metrics on a hand example ---------------------------------------------------------------

# 3 images × 4 labels; label 3 never occurs. At threshold 0.5 the predictions are
#   image 0: true {0, 2}  pred {0}      image 1: true {1}  pred {1}      image 2: true {0, 1}  pred {0, 2}
Y_TRUE = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=np.uint8)
SCORES = np.array([[0.9, 0.2, 0.4, 0.1], [0.4, 0.7, 0.3, 0.2], [0.8, 0.1, 0.6, 0.3]])
# Per label (tn, fp, fn, tp): 0: (1, 0, 0, 2) F1 1;  1: (1, 0, 1, 1) P 1, R 1/2, F1 2/3;
# 2: (1, 1, 1, 0) F1 0;  3: (3, 0, 0, 0) F1 0/0 → 0 (zero_division=0).
# AP (ranked scores): label 0: + + - → 1;  label 1: + (0.7) - (0.2) + (0.1) → 1/2·1 + 1/2·2/3 = 5/6;
# label 2: - (0.6) + (0.4) - → 1/2;  label 3: no positive, left out.
HAND = {
    "n_test": 3,
    "sample_f1": round((2 / 3 + 1 + 1 / 2) / 3, 6),  # per image 2·1/(2·1+0+1), 1, 2·1/(2·1+1+1)
    "macro_f1": round((1 + 2 / 3 + 0 + 0) / 4, 6),
    "micro_f1": round(2 * 3 / (2 * 3 + 1 + 2), 6),  # tp 3, fp 1, fn 2 over all cells
    "hamming_loss": 0.25,  # wrong cells: 1 + 0 + 2 of 12
    "jaccard": round((1 / 2 + 1 + 1 / 3) / 3, 6),  # per image |∩| / |∪|
    "subset_accuracy": round(1 / 3, 6),  # only image 1 exactly right
    # All 12 cells ranked: .9+ .8+ .7+ .6- .4± .3-- .2-- .1+-; recall steps 3/5 at precision 1,
    # 1/5 at 4/6 (score .4), 1/5 at 5/12 (score .1).
    "micro_ap": round(3 / 5 + 1 / 5 * 4 / 6 + 1 / 5 * 5 / 12, 6),
    "macro_ap": round((1 + 5 / 6 + 1 / 2) / 3, 6),  # labels 0-2; with label 3 as 0 it would be 7/12
    "ap_labels": 3,
    "label_cardinality_true": round(5 / 3, 6),
    "label_cardinality_pred": round(4 / 3, 6),
}


def test_summary_matches_the_hand_computed_example():
    assert summary(Y_TRUE, SCORES, 0.5) == HAND
    assert summary(Y_TRUE, SCORES, np.full(4, 0.5)) == HAND


def test_images_and_labels_with_nothing_to_find():
    nothing = np.zeros((2, 3), dtype=np.uint8)
    everything = summary(nothing, np.full((2, 3), 0.7), 0.5)
    assert (everything["micro_ap"], everything["macro_ap"], everything["ap_labels"]) == (None, None, 0)
    assert (everything["sample_f1"], everything["jaccard"], everything["hamming_loss"]) == (0.0, 0.0, 1.0)
    # Predicting nothing is right for every image (0/0 → 1), yet earns no label any credit (0/0 → 0).
    silent = summary(nothing, np.full((2, 3), 0.2), 0.5)
    assert (silent["sample_f1"], silent["jaccard"], silent["subset_accuracy"], silent["hamming_loss"]) == (1, 1, 1, 0)
    assert (silent["macro_f1"], silent["micro_f1"]) == (0.0, 0.0)


def test_per_label_matches_the_hand_computed_example():
    rows = per_label(Y_TRUE, SCORES, 0.5, ["a", "b", "c", "d"])
    expected = [
        ("a", 1.0, 1.0, 1.0, 2, 1.0, (1, 0, 0, 2)),
        ("b", 1.0, 0.5, round(2 / 3, 6), 2, round(5 / 6, 6), (1, 0, 1, 1)),
        ("c", 0.0, 0.0, 0.0, 1, 0.5, (1, 1, 1, 0)),
        ("d", 0.0, 0.0, 0.0, 0, None, (3, 0, 0, 0)),
    ]
    assert [
        (r["label"], r["precision"], r["recall"], r["f1"], r["support"], r["ap"], (r["tn"], r["fp"], r["fn"], r["tp"]))
        for r in rows
    ] == expected


def test_predict_thresholds_per_label_and_at_least_one():
    scores = np.array([[0.3, 0.45, 0.1], [0.6, 0.2, 0.5], [0.1, 0.2, 0.3]])
    assert predict(scores, 0.5).tolist() == [[0, 0, 0], [1, 0, 1], [0, 0, 0]]  # 0.5 itself is a yes
    assert predict(scores, np.array([0.5, 0.4, 0.6])).tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    # Empty rows get their top score; a row with a label keeps exactly its labels.
    assert predict(scores, 0.5, at_least_one=True).tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 1]]
    # The hand example at 0.95 predicts nothing (sample F1 0); the top scores give labels 0, 1, 0,
    # each a true label: per image F1 2·1/(2·1+0+1), 1, 2·1/(2·1+0+1).
    assert summary(Y_TRUE, SCORES, 0.95)["sample_f1"] == 0.0
    assert summary(Y_TRUE, SCORES, 0.95, at_least_one=True)["sample_f1"] == round((2 / 3 + 1 + 2 / 3) / 3, 6)


# --- thresholds ------------------------------------------------------------------------------

# 4 validation images × 4 labels, each label built so its best threshold is known:
#   label 0: positives .7 .8, negatives .2 .3  → F1 1 on (0.3, 0.7]: the lowest grid point 0.31
#   label 1: positives .35 .45, negatives .1 .15 → F1 1 on (0.15, 0.35]: 0.16
#   label 2: positives .9 .4, negatives .5 .1 → F1 2/3 on (.5, .9], 1/2 on (.4, .5], 4/5 on (.1, .4]: 0.11
#   label 3: no positive → the fallback 0.5
VAL_TRUE = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0]], dtype=np.uint8)
VAL_SCORES = np.array([[0.7, 0.10, 0.9, 0.6], [0.8, 0.15, 0.5, 0.2], [0.2, 0.35, 0.4, 0.3], [0.3, 0.45, 0.1, 0.7]])


def test_per_label_thresholds_are_each_labels_best_lowest_on_ties():
    thresholds = choose_thresholds(VAL_TRUE, VAL_SCORES, "per_label")
    assert thresholds.tolist() == [0.31, 0.16, 0.11, FALLBACK_THRESHOLD]
    f1 = [row["f1"] for row in per_label(VAL_TRUE, VAL_SCORES, thresholds, "abcd")]
    assert f1 == [1.0, 1.0, 0.8, 0.0]


def test_global_threshold_maximises_macro_f1():
    # Macro F1 × 4 (label 3 always 0): (.1,.15] 2/3+4/5+4/5; (.15,.2] 2/3+1+4/5; (.2,.3] 4/5+1+4/5;
    # (.3,.35] 1+1+4/5 = 2.8, the best; (.35,.4] 1+2/3+4/5; (.4,.45] 1+2/3+1/2; ...
    thresholds = choose_thresholds(VAL_TRUE, VAL_SCORES, "global")
    assert thresholds.tolist() == [0.31] * 4
    assert summary(VAL_TRUE, VAL_SCORES, thresholds)["macro_f1"] == 0.7
    # Only the grid is searched, in any order: 0.25 (2.6) beats 0.5 (1 + 0 + 1/2).
    assert choose_thresholds(VAL_TRUE, VAL_SCORES, "global", grid=[0.5, 0.25]).tolist() == [0.25] * 4


def test_threshold_mode_and_grid_are_checked():
    with pytest.raises(ValueError, match="unknown 'best'.*global, per_label"):
        choose_thresholds(VAL_TRUE, VAL_SCORES, "best")
    for grid in ([], [0.5, 1.5]):
        with pytest.raises(ValueError, match="grid"):
            choose_thresholds(VAL_TRUE, VAL_SCORES, "global", grid=grid)


# --- top-k -----------------------------------------------------------------------------------


def test_top_k_accuracy_with_classes_missing_from_the_split():
    # 4 classes; the split holds only 0 and 1. True class ranks 1st, 2nd, 3rd in its row.
    y_true = np.array([0, 1, 1])
    scores = np.array([[0.5, 0.1, 0.3, 0.1], [0.2, 0.3, 0.4, 0.1], [0.1, 0.2, 0.3, 0.4]])
    assert [top_k_accuracy(y_true, scores, k) for k in (1, 2, 3)] == [round(1 / 3, 6), round(2 / 3, 6), 1.0]
    with pytest.raises(ValueError):  # what labels= is for: scikit-learn alone refuses this split
        skm.top_k_accuracy_score(y_true, scores, k=2)
    with pytest.raises(ValueError, match="at least 3 classes"):
        top_k_accuracy(np.array([0, 1]), np.eye(2), 1)


# --- training weights ------------------------------------------------------------------------

# 5 images × 4 labels: label 0 on 4 images, labels 1 and 2 on one each, label 3 on none; image 4 has none.
COUNTS_EXAMPLE = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.uint8)


def test_positive_weights_are_negatives_over_positives_capped():
    # Negatives/positives: 1/4, 4/1, 4/1, 5/0 → the cap.
    assert positive_weights(COUNTS_EXAMPLE).tolist() == [0.25, 4.0, 4.0, POSITIVE_WEIGHT_CAP]
    assert positive_weights(COUNTS_EXAMPLE, cap=3).tolist() == [0.25, 3.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="cap"):
        positive_weights(COUNTS_EXAMPLE, cap=0)


def test_oversampling_weights_follow_each_images_rarest_label():
    # Inverse frequencies N/count: label 0 5/4, labels 1 and 2 5/1. Images 2 and 3 carry a rare
    # label besides label 0 and take its weight; image 4, unlabelled, takes the smallest (5/4).
    assert oversampling_weights(COUNTS_EXAMPLE).tolist() == [1.25, 1.25, 5.0, 5.0, 1.25]
    assert oversampling_weights(np.zeros((3, 2), dtype=np.uint8)).tolist() == [1.0, 1.0, 1.0]


# --- the CNN ---------------------------------------------------------------------------------


def _three_label_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16×16 images; label 0 brightens the top-left quadrant, label 1 the top-right, label 2 the
    bottom half; each label on about 30 % of the images, independently."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((count, 3)) < 0.3).astype(np.uint8)
    images = rng.integers(0, 60, (count, 1, 16, 16)).astype(np.uint8)
    images[:, :, :8, :8] += (120 * labels[:, 0]).astype(np.uint8)[:, None, None, None]
    images[:, :, :8, 8:] += (120 * labels[:, 1]).astype(np.uint8)[:, None, None, None]
    images[:, :, 8:, :] += (120 * labels[:, 2]).astype(np.uint8)[:, None, None, None]
    return images, labels


def test_multilabel_loss_is_bce_with_logits_summed():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.from_numpy(_three_label_images(6, 0)[1])
    pos_weight = torch.tensor([1.0, 4.0, 0.5])
    for weight in (None, pos_weight):
        expected = torch.nn.BCEWithLogitsLoss(pos_weight=weight, reduction="sum")(logits, labels.float())
        assert torch.equal(head_loss(logits, labels, (), weight, multilabel=True), expected)
    assert not torch.equal(head_loss(logits, labels, (), pos_weight, True), head_loss(logits, labels, (), None, True))


def test_cnn_learns_three_labels_and_predicts_sigmoids():
    generator = make_deterministic(0)
    images, labels = _three_label_images(128, seed=1)
    val_images, val_labels = _three_label_images(64, seed=2)
    model = LeNet5(1, 3, 16)
    optimizer = make_optimizer(model, TrainParams(lr=1e-2))
    weights = positive_weights(labels)  # about 2: each label is on 30 % of the images
    losses = [
        train_epoch(model, optimizer, images, labels, 16, generator, None, CPU, class_weights=weights, multilabel=True)
        for _ in range(6)
    ]
    # Untrained (logits near 0) each label costs ln 2 per image, a positive ln 2 × its weight.
    untrained = math.log(2) * (labels * weights + (1 - labels)).sum(axis=1).mean()
    assert abs(losses[0] - untrained) < 0.5
    assert losses[-1] < 0.1 * losses[0]
    scores = predict_whole_split(model, val_images, CPU, World(), multilabel=True)
    with torch.no_grad():
        np.testing.assert_allclose(scores, torch.sigmoid(model(to_float(val_images))).numpy(), rtol=1e-5, atol=1e-6)
    assert scores.shape == (64, 3) and not np.allclose(scores.sum(axis=1), 1.0)  # independent labels
    learnt, trivial = summary(val_labels, scores, 0.5), summary(val_labels, np.ones_like(scores), 0.5)
    assert trivial["macro_f1"] < 0.6  # every label on every image: 2p/(1+p) at prevalence p ≈ 0.3
    assert learnt["macro_f1"] > 0.95 and learnt["sample_f1"] > 0.95


def test_multilabel_training_under_bfloat16_autocast():
    images, labels = _three_label_images(64, seed=4)
    torch.manual_seed(0)
    start = LeNet5(1, 3, 16)
    losses = {}
    for autocast in (False, True):
        model = copy.deepcopy(start)
        optimizer = make_optimizer(model, TrainParams(lr=1e-3))
        losses[autocast] = train_epoch(model, optimizer, images, labels, 16, torch.Generator().manual_seed(0), None,
                                       CPU, autocast=autocast, multilabel=True)
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[True] != losses[False]  # bfloat16 really ran
    assert losses[True] == pytest.approx(losses[False], rel=5e-2)


def test_single_label_prediction_is_unchanged_by_the_multilabel_flag():
    torch.manual_seed(0)
    model, images = LeNet5(1, 3, 16), _three_label_images(20, seed=3)[0]
    softmax = predict_proba(model, images, CPU)
    assert np.allclose(softmax.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(predict_proba(model, images, CPU, (), False), softmax)


# --- the MLP baseline ------------------------------------------------------------------------


def _mlp_data(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label j is on when feature j is positive (features 3-7 are noise)."""
    features = np.random.default_rng(seed).normal(size=(count, 8)).astype(np.float32)
    return features, (features[:, :3] > 0).astype(np.uint8)


def test_mlp_on_an_indicator_matrix_gives_per_label_sigmoids():
    features, labels = _mlp_data(80, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(6,), max_iter=50, random_state=0).fit(features, labels)
    proba = mlp.predict_proba(features)
    assert mlp.out_activation_ == "logistic" and proba.shape == (80, 3)
    assert not np.allclose(proba.sum(axis=1), 1.0)
    hidden = np.maximum(features @ mlp.coefs_[0] + mlp.intercepts_[0], 0)  # ReLU
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-(hidden @ mlp.coefs_[1] + mlp.intercepts_[1]))), rtol=1e-5)


def test_baseline_fit_epoch_trains_multilabel_with_column_classes():
    features, labels = _mlp_data(400, seed=1)
    val_features, val_labels = _mlp_data(200, seed=2)
    mlp = pixel_mlp.make_mlp(BaselineParams(hidden_layers=[16], lr=1e-2, batch_size=32, seed=0))
    for _ in range(10):
        pixel_mlp.fit_epoch(mlp, features, labels, np.arange(3))
    scores = mlp.predict_proba(val_features)
    assert scores.shape == (200, 3) and mlp.classes_.tolist() == [0, 1, 2]
    assert summary(val_labels, scores, 0.5)["macro_f1"] > 0.85
    # partial_fit needs classes, only the column indices are right; wider ones it would take silently.
    for classes in (np.arange(5), np.array([7, 8, 9])):
        with pytest.raises(ValueError, match=r"multi-label classes must be 0\.\.2"):
            pixel_mlp.fit_epoch(pixel_mlp.make_mlp(BaselineParams()), features, labels, classes)
