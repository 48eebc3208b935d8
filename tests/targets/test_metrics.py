"""bps.targets.metrics (and the classes of bps.targets.labels): attribute sets and hand-computed metrics."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from bps.targets.labels import ATTRIBUTES, TARGET_NAMES, dose_level, get_target, layout_target
from bps.targets.metrics import confusion_rows, per_class, summary, validation_scores

# One image of every (particle, dose) pair, in the study's order.
HAND = pd.DataFrame(
    {
        "particle_type": ["Fe", "Fe", "Fe", "X-ray", "X-ray", "X-ray"],
        "dose_Gy": [0.0, 0.3, 0.82, 0.0, 0.1, 1.0],
    }
)


def _proba(predicted: list[int], n_classes: int) -> np.ndarray:
    """One-hot probabilities (zeros included) whose argmax is ``predicted``."""
    return np.eye(n_classes)[predicted]


# --- targets ---------------------------------------------------------------------------------


def test_target_names():
    assert TARGET_NAMES == ("particle", "particle_dose", "condition", "particle+dose", "labels")
    with pytest.raises(ValueError, match="unknown target 'dose'"):
        get_target("dose")


def test_particle_target():
    target = get_target("particle")
    assert target.classes == ("Fe", "X-ray")
    assert target.encode(HAND).tolist() == [0, 0, 0, 1, 1, 1]
    assert target.attribute_columns == ("Fe", "X-ray")


def test_particle_dose_target():
    target = get_target("particle_dose")
    assert target.classes == ("Fe 0 Gy", "Fe 0.3 Gy", "Fe 0.82 Gy", "X-ray 0 Gy", "X-ray 0.1 Gy", "X-ray 1 Gy")
    assert target.encode(HAND).tolist() == [0, 1, 2, 3, 4, 5]
    assert target.attribute_columns == ATTRIBUTES


def test_condition_target_maps_both_shams_to_sham():
    target = get_target("condition")
    assert target.classes == ("sham", "Fe 0.3 Gy", "Fe 0.82 Gy", "X-ray 0.1 Gy", "X-ray 1 Gy")
    assert target.encode(HAND).tolist() == [0, 1, 2, 0, 3, 4]
    assert target.class_of("Fe", 0.0) == target.class_of("X-ray", 0.0) == "sham"
    assert target.attribute_columns == ATTRIBUTES


def test_encode_dtype_and_near_doses():
    table = pd.DataFrame({"particle_type": ["Fe", "X-ray"], "dose_Gy": [0.30000001, 0.9999999]})
    encoded = get_target("particle_dose").encode(table)
    assert encoded.dtype == np.int64
    assert encoded.tolist() == [1, 5]


@pytest.mark.parametrize(
    ("particle", "dose", "level"),
    [("Fe", 0.0, "sham"), ("Fe", 0.3, "low"), ("Fe", 0.82, "high"), ("X-ray", 0.1, "low"), ("X-ray", 1.0, "high")],
)
def test_dose_level(particle, dose, level):
    assert dose_level(particle, dose) == level


def test_attribute_sets():
    condition = get_target("condition")
    assert condition.attributes["Fe 0.82 Gy"] == {"Fe", "high"}
    assert condition.attributes["Fe 0.3 Gy"] == {"Fe", "low"}
    assert condition.attributes["X-ray 0.1 Gy"] == {"X-ray", "low"}
    assert condition.attributes["sham"] == {"sham"}
    particle_dose = get_target("particle_dose")
    assert particle_dose.attributes["Fe 0 Gy"] == {"Fe", "sham"}
    assert particle_dose.attributes["X-ray 1 Gy"] == {"X-ray", "high"}
    particle = get_target("particle")
    assert particle.attributes["X-ray"] == {"X-ray"}


def test_indicators():
    condition = get_target("condition")  # columns Fe, X-ray, sham, low, high
    indicators = condition.indicators(np.array([2, 1, 0, 3, 4]))
    assert indicators.tolist() == [
        [1, 0, 0, 0, 1],  # Fe 0.82 Gy
        [1, 0, 0, 1, 0],  # Fe 0.3 Gy
        [0, 0, 1, 0, 0],  # sham
        [0, 1, 0, 1, 0],  # X-ray 0.1 Gy
        [0, 1, 0, 0, 1],  # X-ray 1 Gy
    ]
    particle = get_target("particle")
    assert particle.indicators(np.array([1, 0, 0])).tolist() == [[0, 1], [1, 0], [1, 0]]


# --- set-based metrics -----------------------------------------------------------------------


def test_hamming_and_jaccard_of_one_wrong_dose():
    target = get_target("condition")
    fe_high, fe_low = target.classes.index("Fe 0.82 Gy"), target.classes.index("Fe 0.3 Gy")
    result = summary(target, np.array([fe_high]), _proba([fe_low], 5), np.array([False]))
    # {Fe, high} vs {Fe, low}: 2 of 5 attribute bits differ; |{Fe}| / |{Fe, low, high}| = 1/3.
    assert result["hamming_loss"] == pytest.approx(2 / 5, abs=1e-6)
    assert result["jaccard"] == pytest.approx(1 / 3, abs=1e-6)
    assert result["accuracy"] == 0.0


def test_particle_target_uses_only_two_attribute_columns():
    target = get_target("particle")
    y_true = np.array([0, 0, 1, 1])
    result = summary(target, y_true, _proba([0, 1, 1, 1], 2), np.array([True, True, False, False]))
    # One wrong row: both of its 2 bits differ, 2 / (4 rows × 2 columns) = 0.25 (not 2 / 20).
    assert result["hamming_loss"] == pytest.approx(0.25, abs=1e-6)
    assert result["jaccard"] == pytest.approx(0.75, abs=1e-6)


# --- the summary on a hand example -----------------------------------------------------------

# Condition target, five images: three shams, Fe 0.82 Gy, X-ray 1 Gy.
Y_TRUE = np.array([0, 0, 0, 2, 4])
PROBA = np.array(
    [
        [0.8, 0.05, 0.05, 0.05, 0.05],  # sham → sham
        [0.6, 0.4, 0.0, 0.0, 0.0],  # sham → sham
        [0.0, 0.0, 0.0, 1.0, 0.0],  # sham → X-ray 0.1 Gy, with probability 0 on the truth
        [0.1, 0.5, 0.4, 0.0, 0.0],  # Fe 0.82 Gy → Fe 0.3 Gy
        [0.0, 0.0, 0.0, 0.0, 1.0],  # X-ray 1 Gy → X-ray 1 Gy
    ]
)
IS_SHAM = np.array([True, True, True, False, False])


@pytest.fixture(scope="module")
def hand_summary() -> dict:
    return summary(get_target("condition"), Y_TRUE, PROBA, IS_SHAM)


def test_summary_accuracy(hand_summary):
    assert hand_summary["n_test"] == 5
    assert hand_summary["accuracy"] == pytest.approx(3 / 5)


def test_summary_balanced_accuracy(hand_summary):
    # Recall per true class: sham 2/3, Fe 0.82 Gy 0, X-ray 1 Gy 1.
    assert hand_summary["balanced_accuracy"] == pytest.approx((2 / 3 + 0 + 1) / 3, abs=1e-6)


def test_summary_macro_f1(hand_summary):
    # F1: sham 2·1·(2/3)/(1 + 2/3) = 0.8; X-ray 1 Gy 1; the other three classes 0; over 5 classes.
    assert hand_summary["macro_f1"] == pytest.approx((0.8 + 1.0) / 5, abs=1e-6)


def test_summary_set_metrics(hand_summary):
    # Bits wrong: sham vs {X-ray, low}: 3; {Fe, high} vs {Fe, low}: 2; over 5 rows × 5 columns.
    assert hand_summary["hamming_loss"] == pytest.approx(5 / 25, abs=1e-6)
    # Jaccard per row: 1, 1, 0, 1/3, 1.
    assert hand_summary["jaccard"] == pytest.approx((3 + 1 / 3) / 5, abs=1e-6)


def test_summary_log_loss_is_finite_with_zero_probabilities(hand_summary):
    # The zero on the truth is clipped to 1e-7.
    expected = -(math.log(0.8) + math.log(0.6) + math.log(1e-7) + math.log(0.4) + math.log(1.0)) / 5
    assert math.isfinite(hand_summary["log_loss"])
    assert hand_summary["log_loss"] == pytest.approx(expected, abs=1e-4)


def test_summary_sham_accuracy_only_on_sham_rows(hand_summary):
    assert hand_summary["sham_accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert hand_summary["irradiated_accuracy"] == pytest.approx(1 / 2)


def test_sham_accuracy_follows_the_mask_not_the_labels():
    # Under the particle target sham rows carry a particle label; only the mask says sham.
    target = get_target("particle")
    y_true = np.array([0, 0, 1, 1, 1])
    proba = _proba([1, 0, 1, 1, 0], 2)
    result = summary(target, y_true, proba, np.array([True, True, True, False, False]))
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["sham_accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert result["irradiated_accuracy"] == pytest.approx(1 / 2)


def test_sham_accuracy_none_without_sham_rows():
    target = get_target("particle")
    result = summary(target, np.array([0, 1]), _proba([0, 0], 2), np.array([False, False]))
    assert result["sham_accuracy"] is None
    assert result["irradiated_accuracy"] == pytest.approx(0.5)


def test_summary_values_are_plain_rounded_numbers(hand_summary):
    for key, value in hand_summary.items():
        assert value is None or type(value) in (int, float), key
    assert hand_summary["jaccard"] == round(hand_summary["jaccard"], 6)


def test_per_class(hand_summary):
    target = get_target("condition")
    rows = per_class(target, Y_TRUE, PROBA.argmax(axis=1))
    assert [row["class"] for row in rows] == list(target.classes)
    sham = rows[0]
    assert (sham["precision"], sham["recall"], sham["f1"], sham["support"]) == (1.0, round(2 / 3, 6), 0.8, 3)
    assert [row["support"] for row in rows] == [3, 0, 1, 0, 1]
    assert rows[1]["precision"] == 0.0  # predicted once, wrongly


def test_confusion_rows():
    target = get_target("condition")
    table = confusion_rows(target, Y_TRUE, PROBA.argmax(axis=1))
    assert table["actual"].tolist() == ["sham", "sham", "sham", "Fe 0.82 Gy", "X-ray 1 Gy"]
    assert table["predicted"].tolist() == ["sham", "sham", "X-ray 0.1 Gy", "Fe 0.3 Gy", "X-ray 1 Gy"]


HPA = layout_target(["0", "5", "25"], " ")


def test_multilabel_validation_scores_are_mean_bce_subset_accuracy_and_macro_f1():
    y_true = np.array([[1, 0, 1], [0, 1, 0]])
    proba = np.array([[0.9, 0.2, 0.6], [0.4, 0.3, 0.1]])
    scores = validation_scores(HPA, y_true, proba)
    bce = -(y_true * np.log(proba) + (1 - y_true) * np.log(1 - proba)).sum(axis=1).mean()
    assert scores["val_loss"] == pytest.approx(bce, abs=1e-6)
    assert scores["val_accuracy"] == 0.5  # the first row is exactly right at 0.5, the second misses label 5
    assert scores["val_macro_f1"] == pytest.approx(skm.f1_score(y_true, proba >= 0.5, average="macro",
                                                                zero_division=0), abs=1e-6)
