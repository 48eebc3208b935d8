"""bps.training.batches: what balanced weights and the weighted sampler draw, for one label or many; the
augmentation's single gather against the transforms applied in turn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bps.targets.multilabel import oversampling_weights, positive_weights
from bps.training.batches import RandomAugment, balanced_weights, training_weights


def test_training_weights_follow_the_label_shape():
    indicators = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    class_weights, sample_weights = training_weights(indicators, 2)
    np.testing.assert_array_equal(class_weights, positive_weights(indicators))
    np.testing.assert_array_equal(sample_weights, oversampling_weights(indicators))
    labels = np.array([0, 0, 1])
    class_weights, sample_weights = training_weights(labels, 2)
    np.testing.assert_array_equal(class_weights, balanced_weights(labels, 2))
    np.testing.assert_array_equal(sample_weights, balanced_weights(labels, 2)[labels])


def _in_turn(batch: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """Flip, rotate, reflection-pad and crop one step after another, with RandomAugment's draws."""
    count, _, height, width = batch.shape
    flip = torch.randint(0, 2, (count,), generator=generator).bool()
    batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
    if height == width:
        turns = torch.randint(0, 4, (count,), generator=generator)
        batch = torch.stack([torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(batch, turns)])
    if not pad:
        return batch
    padded = torch.nn.functional.pad(batch, (pad,) * 4, mode="reflect")
    top, left = (torch.randint(0, 2 * pad + 1, (count,), generator=generator) for _ in range(2))
    return torch.stack([image[:, y : y + height, x : x + width] for image, y, x in zip(padded, top, left)])


@pytest.mark.parametrize("shape", [(40, 1, 16, 16), (9, 3, 12, 12), (7, 2, 10, 14)])
@pytest.mark.parametrize("pad", [0, 1, 4])
def test_one_gather_gives_the_pixels_of_the_transforms_in_turn(shape, pad):
    batch = torch.rand(shape)
    ours, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    augment = RandomAugment(ours, pad)
    for _ in range(3):  # the cached maps serve later batches too
        assert torch.equal(augment(batch), _in_turn(batch, reference, pad))
    assert torch.equal(ours.get_state(), reference.get_state())  # same draws: later epochs unchanged
