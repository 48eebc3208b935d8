"""bps.models.card: what a model card accepts."""

from __future__ import annotations

import json

import pytest

from bps.core.params import PreprocessParams
from bps.models.card import ModelCard, read_card
from tests.support.model_cards import finished_card


def test_a_card_holds_one_threshold_per_class():
    card = {"kind": "cnn", "architecture": "lenet", "target": "labels", "classes": ["0", "5"],
            "preprocess": PreprocessParams(), "training": {}, "multilabel": True}
    assert ModelCard(**card, thresholds=[0.3, 0.5]).thresholds == [0.3, 0.5]
    with pytest.raises(ValueError, match="thresholds: 1 for 2 classes"):
        ModelCard(**card, thresholds=[0.3])


def test_a_card_written_before_the_image_size_rename_still_loads(tmp_path):
    """Cards that call the input side `size` (before preprocess.size became preprocess.image_size)
    read as today's; the runtime-only preprocess.workers is no longer recorded."""
    card = finished_card(size=48).model_dump(mode="json")
    old = {("size" if key == "image_size" else key): value for key, value in card.items()}
    old["preprocess"] = {**{("size" if key == "image_size" else key): value
                            for key, value in card["preprocess"].items()}, "workers": 2}
    (tmp_path / "model.json").write_text(json.dumps(old))
    loaded = read_card(tmp_path)
    assert (loaded.image_size, loaded.preprocess.image_size) == (48, 48)
    written = finished_card(size=48, preprocess=PreprocessParams(image_size=48, workers=2)).model_dump(mode="json")
    assert "workers" not in written["preprocess"] and "size" not in written
