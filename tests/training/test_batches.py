"""bps.training.batches: what balanced weights and the weighted sampler draw, for one label or many."""

from __future__ import annotations

import numpy as np

from bps.targets.multilabel import oversampling_weights, positive_weights
from bps.training.batches import balanced_weights, training_weights


def test_training_weights_follow_the_label_shape():
    indicators = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    class_weights, sample_weights = training_weights(indicators, 2)
    np.testing.assert_array_equal(class_weights, positive_weights(indicators))
    np.testing.assert_array_equal(sample_weights, oversampling_weights(indicators))
    labels = np.array([0, 0, 1])
    class_weights, sample_weights = training_weights(labels, 2)
    np.testing.assert_array_equal(class_weights, balanced_weights(labels, 2))
    np.testing.assert_array_equal(sample_weights, balanced_weights(labels, 2)[labels])
