"""bps.training.batches: what balanced weights and the weighted sampler draw, for one label or many;
the augmentation's single gather against the transforms applied in turn; the intensity augmentation
and how the training augmentations are composed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bps.core.params import TrainParams
from bps.targets.labels import EVEN_ODDS
from bps.targets.multilabel import oversampling_weights, positive_weights
from bps.training.batches import (
    Chain,
    IntensityAugment,
    RandomAugment,
    Shard,
    TextureAugment,
    balanced_weights,
    gaussian_blur,
    iterate_batches,
    training_augment,
    training_weights,
)


def test_training_weights_follow_the_label_shape():
    indicators = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    class_weights, sample_weights = training_weights(indicators, 2)
    np.testing.assert_array_equal(class_weights, positive_weights(indicators))
    np.testing.assert_array_equal(sample_weights, oversampling_weights(indicators))
    labels = np.array([0, 0, 1])
    class_weights, sample_weights = training_weights(labels, 2)
    np.testing.assert_array_equal(class_weights, balanced_weights(labels, 2))
    np.testing.assert_array_equal(sample_weights, balanced_weights(labels, 2)[labels])
    class_weights, sample_weights = training_weights(np.array([0, 0, 1, EVEN_ODDS]), 2)  # train.shams: uniform
    np.testing.assert_array_equal(class_weights, balanced_weights(labels, 2))  # the classes as without it
    np.testing.assert_array_equal(sample_weights, [*balanced_weights(labels, 2)[labels], 1.0])


def _batch(count: int = 6, channels: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand((count, channels, size, size), generator=torch.Generator().manual_seed(0))


def test_intensity_augment_is_seeded_and_stays_in_range():
    batch = _batch()
    first = IntensityAugment(torch.Generator().manual_seed(5), 0.3)(batch)
    again = IntensityAugment(torch.Generator().manual_seed(5), 0.3)(batch)
    other = IntensityAugment(torch.Generator().manual_seed(6), 0.3)(batch)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other) and not torch.equal(first, batch)
    assert first.shape == batch.shape and first.dtype == batch.dtype
    assert first.min() >= 0 and first.max() <= 1


def test_intensity_augment_moves_each_channel_of_each_image_on_its_own():
    flat = torch.full((4, 3, 8, 8), 0.5)  # a flat image: blur and gamma keep it flat, gain and offset move it
    out = IntensityAugment(torch.Generator().manual_seed(1), 0.3)(flat)
    levels = out.amax(dim=(-2, -1))
    torch.testing.assert_close(levels, out.amin(dim=(-2, -1)))  # still flat
    assert len(torch.unique(levels)) == levels.numel()  # a level per image and channel


def test_blur_px_bounds_the_intensity_blur_alone():
    spot = torch.zeros((8, 1, 9, 9))
    spot[:, :, 4, 4] = 0.8  # one bright pixel per image: a blur spreads it, gain, offset and gamma do not
    for blur_px, spreads in ((0.0, False), (None, True), (1.0, True)):
        out = IntensityAugment(torch.Generator().manual_seed(3), 0.3, blur_px)(spot)
        lifted = (out - out.amin(dim=(-2, -1), keepdim=True)) > 1e-6
        assert bool(lifted.sum(dim=(-2, -1)).gt(1).any()) == spreads, blur_px
    default = IntensityAugment(torch.Generator().manual_seed(3), 0.3)(spot)
    torch.testing.assert_close(default, IntensityAugment(torch.Generator().manual_seed(3), 0.3, 0.6)(spot),
                               rtol=0, atol=0)  # null is 2 × the strength, draw for draw


def test_intensity_augment_strength_zero_changes_nothing():
    batch = _batch()
    torch.testing.assert_close(IntensityAugment(torch.Generator().manual_seed(0), 0.0)(batch), batch)


def test_texture_augment_scales_each_images_detail_and_keeps_its_body():
    batch = 0.25 + 0.5 * _batch(count=8, channels=2, size=24)  # room to grow without clamping
    smooth = gaussian_blur(batch, torch.full((8,), TextureAugment.SIGMA_PX), 6)
    out = TextureAugment(torch.Generator().manual_seed(2), 0.3)(batch)
    again = TextureAugment(torch.Generator().manual_seed(2), 0.3)(batch)
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    assert out.min() >= 0 and out.max() <= 1
    inside = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # unclamped, away from the borders
    detail, scaled = (batch - smooth)[inside], (out - smooth)[inside]
    factor = (scaled * detail).sum((-2, -1)) / (detail * detail).sum((-2, -1))
    # one factor per image and channel
    torch.testing.assert_close(scaled, factor[..., None, None] * detail, rtol=1e-4, atol=1e-5)
    assert len(torch.unique(factor.round(decimals=4))) == factor.numel() and factor.std() > 0.1
    flat = torch.full((3, 1, 16, 16), 0.4)  # no detail: nothing to scale
    torch.testing.assert_close(TextureAugment(torch.Generator().manual_seed(2), 0.3)(flat), flat)


@pytest.mark.parametrize("size", [2, 3])
def test_sharded_intensity_augment_gets_the_whole_batchs_draws(size):
    images = np.random.default_rng(0).integers(0, 256, (30, 2, 12, 12), dtype=np.uint8)
    labels = np.arange(30, dtype=np.int64)

    def epoch(shard: Shard | None) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(3)
        augment = training_augment(generator, TrainParams(crop_pad=2, intensity_augment=0.4, texture_augment=0.3))
        return [batch for batch, _ in iterate_batches(images, labels, 10, generator, augment, None, shard)]

    whole = epoch(None)
    parts = [epoch(Shard(rank, size)) for rank in range(size)]
    for step, batch in enumerate(whole):
        for rank in range(size):
            torch.testing.assert_close(parts[rank][step], batch[rank::size], rtol=0, atol=0)


def test_gaussian_blur_per_image_sigma():
    batch = _batch(count=3, channels=1)
    sigma = torch.tensor([0.0, 1.0, 2.0])
    out = gaussian_blur(batch, sigma, 6)
    torch.testing.assert_close(out[0], batch[0])  # σ 0: unchanged
    for index in (1, 2):  # each image as if blurred alone
        torch.testing.assert_close(out[index], gaussian_blur(batch[index:index + 1], sigma[index:index + 1], 6)[0])
    assert out[2].std() < out[1].std() < batch[1].std()  # more blur, less contrast
    flat = torch.full((2, 1, 8, 8), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, sigma[1:], 6), flat)


def test_training_augment_composes_what_train_asks_for():
    generator = torch.Generator()
    assert isinstance(training_augment(generator, TrainParams(intensity_augment=0)), RandomAugment)
    assert training_augment(generator, TrainParams(augment=False, intensity_augment=0)) is None
    assert isinstance(training_augment(generator, TrainParams(augment=False, intensity_augment=0.2)), IntensityAugment)
    both = training_augment(generator, TrainParams(intensity_augment=0.2))
    assert isinstance(both, Chain) and [type(step) for step in both.steps] == [RandomAugment, IntensityAugment]
    every = training_augment(generator, TrainParams(texture_augment=0.3))
    assert [type(step) for step in every.steps] == [RandomAugment, TextureAugment, IntensityAugment]


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
