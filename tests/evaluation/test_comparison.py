"""bps.evaluation.comparison: the verdict that opens comparison.md, and the headline figures DVC compares."""

from __future__ import annotations

import pytest

from bps.evaluation.comparison import headline, paired_table, verdict

LABELS = {"mlp": "MLP baseline", "cnn": "LeNet-5", "foci": "foci count"}


def _scores(accuracy: float, control: tuple[float, float, float] | None = None) -> dict:
    scores = {"accuracy": accuracy, "accuracy_ci95_low": accuracy - 0.05, "accuracy_ci95_high": accuracy + 0.05,
              "irradiated_accuracy": accuracy + 0.02, "sham_accuracy": 0.5}
    if control is not None:
        value, low, high = control
        scores["control"] = {"balanced_accuracy": value, "balanced_accuracy_ci95_low": low,
                             "balanced_accuracy_ci95_high": high}
    return scores


def test_the_verdict_names_the_best_model_its_ties_and_the_plate_signal():
    results = {"mlp": _scores(0.56, (0.50, 0.42, 0.59)), "cnn": _scores(0.60, (0.61, 0.52, 0.83)),
               "foci": _scores(0.68)}
    pairs = {"mlp_vs_cnn": {"tie": True}, "mlp_vs_foci": {"tie": False}, "cnn_vs_foci": {"tie": True}}
    text = verdict(results, pairs, LABELS, "grouped by well")
    assert text.startswith("**Verdict (grouped by well)**: foci count scores the highest accuracy, "
                           "0.680 [0.630, 0.730]; it ties with LeNet-5 and beats MLP baseline")
    assert "balanced accuracy of 0.610 [0.520, 0.830] at most (LeNet-5)" in text
    assert "plate signal alone could explain up to 0.110 above chance" in text


def test_controls_that_hold_chance_say_no_plate_signal_is_measurable():
    results = {"mlp": _scores(0.56, (0.50, 0.42, 0.59)), "cnn": _scores(0.60, (0.45, 0.0, 0.95))}
    text = verdict(results, {"mlp_vs_cnn": {"tie": True}}, LABELS, "leave_hour_out")
    assert "it ties with MLP baseline (paired tests" in text
    assert text.endswith("their intervals hold chance (0.5): no plate signal is measurable under this protocol.")
    assert "No negative control" in verdict({"foci": _scores(0.7)}, {}, LABELS, "grouped by well")


def test_a_control_above_chance_is_named_even_when_a_wider_one_scores_higher():
    # The full-size hour folds: LeNet-5's control is highest but its interval holds 0.5; the soft vote's does not.
    results = {"cnn": _scores(0.62, (0.713, 0.258, 1.0)), "foci": _scores(0.64, (0.622, 0.544, 0.700))}
    text = verdict(results, {"cnn_vs_foci": {"tie": False}}, LABELS, "leave_hour_out")
    assert "0.713 [0.258, 1.000] at most (LeNet-5): the interval of foci count lies above chance;" in text
    assert "plate signal alone could explain up to 0.122 above chance" in text


def test_the_headline_holds_three_figures_per_model_and_no_interval_ends():
    results = {"cnn": _scores(0.60, (0.61, 0.52, 0.83)), "foci": _scores(0.68)}
    assert headline(results) == {"cnn": {"irradiated": pytest.approx(0.62), "sham": 0.5, "control": 0.61},
                                 "foci": {"irradiated": pytest.approx(0.70), "sham": 0.5}}


def _pair(difference: float, tie: bool, auc: tuple[float, float, float] | None = None) -> dict:
    pair = {"accuracy_difference": difference, "accuracy_difference_ci95_low": difference - 0.01,
            "accuracy_difference_ci95_high": difference + 0.01, "only_first_right": 10, "only_second_right": 20,
            "mcnemar_log10_p": -2.0, "tie": tie}
    if auc is not None:
        value, low, high = auc
        pair |= {"auc_difference": value, "auc_difference_ci95_low": low, "auc_difference_ci95_high": high,
                 "auc_tie": low <= 0 <= high}
    return pair


def test_a_pair_table_shows_the_auc_difference_and_its_own_verdict_when_the_pairs_carry_it():
    table = paired_table({"cnn_vs_foci": _pair(-0.03, False, (0.004, -0.01, 0.02))}, LABELS)
    assert "ROC AUC difference [95 % CI]" in table.splitlines()[0]
    assert table.splitlines()[2].endswith("| foci count better | 0.004 [-0.010, 0.020] | tie |")
    assert "AUC" not in paired_table({"cnn_vs_foci": _pair(-0.03, True)}, LABELS)
