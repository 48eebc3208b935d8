"""Grouped bootstrap intervals, the metrics computed from its replicates, and McNemar's test."""

import numpy as np
import pytest
from scipy.stats import binom, binomtest
from sklearn.metrics import roc_auc_score

from bps.evaluation.intervals import (
    GroupedBootstrap,
    accuracy,
    balanced_accuracy,
    interval,
    macro_f1,
    mcnemar_exact,
    p_value_text,
    paired_comparison,
)
from bps.targets.labels import get_target
from bps.targets.metrics import per_image_losses, summary


def simulated_coverage(trials: int, wells: int, images: int, grouped: bool, truth: float = 0.7) -> float:
    """How often the 95 % interval of accuracy holds the true value, over datasets in which each
    well has its own accuracy (Beta around ``truth``: wells differ, as plates do)."""
    rng = np.random.default_rng(123)
    covered = 0
    for trial in range(trials):
        well_accuracy = rng.beta(truth * 10, (1 - truth) * 10, size=2 * wells)
        correct = (rng.random((2 * wells, images)) < well_accuracy[:, None]).ravel().astype(float)
        groups = np.repeat(np.arange(2 * wells), images)
        strata = groups % 2  # two classes, `wells` wells each
        bootstrap = GroupedBootstrap.draw(groups if grouped else np.arange(len(groups)), strata, 500, trial)
        low, high = interval(bootstrap.mean(correct))
        covered += low <= truth <= high
    return covered / trials


def test_grouped_intervals_cover_the_true_accuracy_about_95_percent_of_the_time():
    coverage = simulated_coverage(trials=200, wells=12, images=20, grouped=True)
    # 200 trials: a binomial SD of 1.5 points; a percentile bootstrap over 12 wells per stratum runs
    # a little narrow (measured 0.92 at 300 trials), so the band is 0.87-0.99.
    assert 0.87 <= coverage <= 0.99


def test_resampling_single_images_instead_of_wells_covers_far_too_rarely():
    assert simulated_coverage(trials=60, wells=12, images=20, grouped=False) < 0.8


def test_each_replicate_keeps_the_number_of_groups_per_stratum():
    groups = np.array(["a", "a", "b", "c", "c", "d", "e"])
    strata = np.array(["x", "x", "x", "x", "x", "y", "y"])
    bootstrap = GroupedBootstrap.draw(groups, strata, 300, seed=1)
    names = np.unique(groups)
    in_x = np.isin(names, ["a", "b", "c"])
    assert (bootstrap.weights[:, in_x].sum(axis=1) == 3).all()
    assert (bootstrap.weights[:, ~in_x].sum(axis=1) == 2).all()
    assert len(np.unique(bootstrap.weights, axis=0)) > 1  # it does resample
    again = GroupedBootstrap.draw(groups, strata, 300, seed=1)
    np.testing.assert_array_equal(bootstrap.weights, again.weights)  # seeded


def test_a_group_in_two_strata_is_refused():
    with pytest.raises(ValueError, match="'w1' spans more than one stratum"):
        GroupedBootstrap.draw(np.array(["w1", "w1", "w2"]), np.array(["Fe", "X-ray", "Fe"]), 10, 0)


@pytest.mark.parametrize("target_name", ["particle", "particle_dose", "condition"])
def test_replicate_metrics_of_the_original_sample_equal_the_headline_values(target_name):
    target = get_target(target_name)
    rng = np.random.default_rng(7)
    k, n = len(target.classes), 300
    y_true = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y_true] += rng.random(n)  # better than chance
    proba /= proba.sum(axis=1, keepdims=True)
    groups = rng.integers(0, 20, n)
    identity = GroupedBootstrap(np.unique(groups, return_inverse=True)[1], np.ones((1, 20), dtype=np.int64))
    expected = summary(target, y_true, proba, is_sham=np.zeros(n, dtype=bool))
    confusion = identity.confusions(y_true, proba.argmax(axis=1), k)
    assert accuracy(confusion)[0] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert balanced_accuracy(confusion)[0] == pytest.approx(expected["balanced_accuracy"], abs=1e-6)
    assert macro_f1(confusion)[0] == pytest.approx(expected["macro_f1"], abs=1e-6)
    for name, values in per_image_losses(target, y_true, proba).items():
        assert identity.mean(values)[0] == pytest.approx(expected[name], abs=1e-6), name


def test_masked_mean_is_nan_for_a_replicate_without_the_masked_images():
    bootstrap = GroupedBootstrap(np.array([0, 1]), np.array([[2, 0], [1, 1]]))
    means = bootstrap.mean(np.array([1.0, 0.0]), mask=np.array([False, True]))
    assert np.isnan(means[0]) and means[1] == 0.0


def test_mcnemar_exact_matches_hand_computed_binomial_tails():
    # 8 discordant images favour A, 2 favour B: p = 2 · P(X ≤ 2 | 10, ½) = 2 · (1 + 10 + 45) / 1024.
    a = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    assert mcnemar_exact(a, b) == (8, 2, pytest.approx(np.log10(112 / 1024)))
    assert mcnemar_exact(np.zeros(6, bool), np.ones(6, bool)) == (0, 6, pytest.approx(np.log10(2 / 64)))
    assert mcnemar_exact(np.ones(5, bool), np.ones(5, bool)) == (0, 0, 0.0)
    assert mcnemar_exact(a[:10], a[:10][::-1])[2] == pytest.approx(np.log10(min(1.0, 2 * binom.cdf(2, 4, 0.5))))


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 1), (3, 3), (7, 2), (40, 61), (2116, 5407)])
def test_mcnemar_exact_agrees_with_scipys_binomial_test(only_a, only_b):
    a = np.array([True] * only_a + [False] * only_b)
    log10_p = mcnemar_exact(a, ~a)[2]
    assert 10**log10_p == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-9, abs=1e-300)


def test_a_p_value_below_the_float_range_is_not_printed_as_zero():
    # Full size: 1,482 images only A gets right, 5,203 only B; scipy's float p is exactly 0.
    a = np.array([True] * 1482 + [False] * 5203)
    assert binomtest(1482, 6685, 0.5).pvalue == 0.0
    log10_p = mcnemar_exact(a, ~a)[2]
    assert -1000 < log10_p < -308
    mantissa, exponent = p_value_text(log10_p).split("e")
    assert 1 <= float(mantissa) < 10 and int(exponent) == int(np.floor(log10_p))
    assert p_value_text(np.log10(0.0154)) == "0.0154"
    assert p_value_text(np.log10(4.82e-10)) == "4.82e-10"
    assert p_value_text(0.0) == "1"


def test_paired_comparison_calls_a_small_difference_a_tie_and_a_large_one_not():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 30)
    bootstrap = GroupedBootstrap.draw(groups, groups % 2, 1000, 0)
    a = rng.random(600) < 0.70
    close = rng.random(600) < 0.68
    far = rng.random(600) < 0.40
    assert paired_comparison(a, close, bootstrap)["tie"] is True
    result = paired_comparison(a, far, bootstrap)
    assert result["tie"] is False
    assert result["accuracy_difference_ci95_low"] > 0
    assert result["mcnemar_p"] < 0.05


def test_paired_comparison_on_a_mask_counts_only_those_images():
    groups = np.repeat(np.arange(20), 30)
    bootstrap = GroupedBootstrap.draw(groups, groups % 2, 500, 0)
    irradiated = groups < 10  # A is right on every one of these, B on none; elsewhere the reverse
    a, b = irradiated.copy(), ~irradiated
    assert paired_comparison(a, b, bootstrap)["accuracy_difference"] == 0.0
    result = paired_comparison(a, b, bootstrap, irradiated)
    assert result["accuracy_difference"] == 1.0
    assert result["accuracy_difference_ci95_low"] == result["accuracy_difference_ci95_high"] == 1.0
    assert (result["only_first_right"], result["only_second_right"]) == (300, 0)
    assert result["tie"] is False


def _ranked_design(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scores rounded so that many tie, positive, group, sham) of 40 wells of 30 nuclei."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(40), 30)
    positive = groups % 2 == 0
    scores = np.round(rng.normal(size=len(groups)) + 0.8 * positive + rng.normal(0, 0.3, 40)[groups], 1)
    return scores, positive, groups, rng.random(len(groups)) < 0.3


def test_the_roc_auc_and_each_replicate_match_scikit_learn_ties_counting_half():
    scores, positive, groups, sham = _ranked_design()
    bootstrap = GroupedBootstrap.draw(groups, positive, 50, 0)
    auc, replicates = bootstrap.roc_auc(scores, positive, ~sham)
    assert auc == pytest.approx(roc_auc_score(positive[~sham], scores[~sham]), abs=1e-12)
    for replicate in (0, 17, 49):  # a replicate weighs each image by its well's draws
        weight = bootstrap.weights[replicate][bootstrap.group_of_image]
        expected = roc_auc_score(positive[~sham], scores[~sham], sample_weight=weight[~sham])
        assert replicates[replicate] == pytest.approx(expected, abs=1e-12)


def test_the_roc_auc_interval_is_wider_by_wells_than_by_images():
    scores, positive, groups, _ = _ranked_design(1)
    by_wells = interval(GroupedBootstrap.draw(groups, positive, 500, 0).roc_auc(scores, positive)[1])
    by_images = interval(GroupedBootstrap.draw(np.arange(len(groups)), positive, 500, 0).roc_auc(scores, positive)[1])
    assert by_wells[1] - by_wells[0] > 1.5 * (by_images[1] - by_images[0])
