"""bps.models.inference: test-time augmentation over the flips and 90° rotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bps.core.params import parse_params
from bps.models.inference import dihedral_views, embed, predict_proba
from bps.models.loader import load_model
from bps.models.networks import LeNet5, save_checkpoint
from tests.support.model_cards import finished_card

CPU = torch.device("cpu")


def _images(count: int = 6, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 1, size, size), dtype=np.uint8)


def _network() -> LeNet5:
    torch.manual_seed(0)
    return LeNet5(1, 2, 32).eval()


def test_the_views_are_the_eight_symmetries_of_a_square_and_four_flips_otherwise():
    square = torch.arange(16.0).view(1, 1, 4, 4)
    views = dihedral_views(square)
    assert len(views) == 8
    assert len({tuple(view.flatten().tolist()) for view in views}) == 8  # all distinct
    assert len(dihedral_views(torch.arange(12.0).view(1, 1, 3, 4))) == 4


def test_tta_is_the_mean_over_the_views_and_leaves_predictions_without_it_alone():
    network, images = _network(), _images()
    plain = predict_proba(network, images, CPU)
    batch = torch.from_numpy(images).float() / 255
    with torch.no_grad():
        expected = torch.stack([torch.softmax(network(view), 1) for view in dihedral_views(batch)]).mean(0)
        assert np.array_equal(plain, torch.softmax(network(batch), 1).numpy())
    averaged = predict_proba(network, images, CPU, tta=True)
    np.testing.assert_allclose(averaged, expected.numpy(), rtol=1e-6)
    assert not np.allclose(averaged, plain)  # a random network is not rotation-invariant


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_tta_predictions_do_not_depend_on_the_orientation_of_the_input(turns):
    network, images = _network(), _images()
    turned = np.ascontiguousarray(np.rot90(images, turns, axes=(-2, -1)))
    np.testing.assert_allclose(predict_proba(network, turned, CPU, tta=True),
                               predict_proba(network, images, CPU, tta=True), atol=1e-6)


def test_a_loaded_model_predicts_as_its_card_says(tmp_path):
    network, images = _network(), _images()
    for tta in (False, True):
        training = parse_params({"train": {"tta": tta}}).train.model_dump(mode="json")
        save_checkpoint(tmp_path, network, finished_card("lenet", 1, 32, training=training))
        np.testing.assert_array_equal(load_model(tmp_path, "cpu").probabilities(images),
                                      predict_proba(network, images, CPU, tta=tta))


def test_embed_is_what_the_last_linear_layer_reads_and_leaves_no_hook(tmp_path):
    network, images = _network(), _images(70)  # more than one evaluation batch
    embedding = embed(network, images, CPU)
    with torch.no_grad():
        expected = network.classifier[:-1](network.features(torch.from_numpy(images).float() / 255))
    assert embedding.shape == (70, 84)
    np.testing.assert_allclose(embedding, expected.numpy(), rtol=1e-5, atol=1e-6)  # batches of 64 vs one of 70
    assert not network.classifier[-1]._forward_hooks  # predicting afterwards is untouched
    np.testing.assert_array_equal(predict_proba(network, images, CPU), predict_proba(_network(), images, CPU))
