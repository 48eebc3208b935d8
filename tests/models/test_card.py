"""bps.models.card: what a model card accepts."""

from __future__ import annotations

import pytest

from bps.core.params import PreprocessParams
from bps.models.card import ModelCard


def test_a_card_holds_one_threshold_per_class():
    card = {"kind": "cnn", "architecture": "lenet", "target": "labels", "classes": ["0", "5"],
            "preprocess": PreprocessParams(), "training": {}, "multilabel": True}
    assert ModelCard(**card, thresholds=[0.3, 0.5]).thresholds == [0.3, 0.5]
    with pytest.raises(ValueError, match="thresholds: 1 for 2 classes"):
        ModelCard(**card, thresholds=[0.3])
