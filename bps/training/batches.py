"""Feeding prepared arrays to a model: memory-mapped reads and batched tensor augmentation.

The study decoded and augmented one TIFF per ``__getitem__``; here a batch is one slice of a
memory-mapped uint8 array and every augmentation is a handful of tensor operations on the
whole batch. Augmentation is a training-only step: evaluation batches come from
:func:`iterate_batches` with ``augment=None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from bps.core.params import TrainParams
from bps.models.inference import to_float
from bps.targets.labels import EVEN_ODDS
from bps.targets.multilabel import oversampling_weights, positive_weights

Augment = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Shard:
    """One of ``size`` processes training together: it takes rows ``rank``, ``rank + size``, …
    of every batch, so that the processes' parts make up exactly the one-process batch."""

    rank: int
    size: int

    @property
    def rows(self) -> slice:
        return slice(self.rank, None, self.size)


def balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class weights ``n / (k · count)``: every class carries the same total weight."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)


def training_weights(labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """What ``train.class_weight: balanced`` weights the loss with and ``train.sampler: weighted``
    draws images by: per class and per image :func:`balanced_weights`, or for N×L multi-label
    indicators each label's ``pos_weight`` and each image's rare-label oversampling weight."""
    if labels.ndim == 2:
        return positive_weights(labels), oversampling_weights(labels)
    named = labels != EVEN_ODDS  # an even-odds image belongs to no class: it weighs 1 and is drawn as often as any
    per_class = balanced_weights(labels[named], n_classes)
    return per_class, np.where(named, per_class[np.where(named, labels, 0)], 1.0)


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    generator: torch.Generator | None = None,
    augment: Augment | None = None,
    sample_weights: np.ndarray | None = None,
    shard: Shard | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches for one epoch.

    In order without a generator; shuffled with one; with ``sample_weights`` too, an epoch of
    the same length drawn with replacement in proportion to the weights (a weighted sampler).
    Shuffled epochs never end on a batch of one image (it joins the one before).

    With a ``shard``, every process draws the same order from the same seeded generator and
    yields only its rows of each batch, augmented with the draws the whole batch would get:
    the processes' parts are the one-process batches, split. A last batch too small to give
    every process an image joins the one before.
    """
    count = len(images)
    if generator is None:
        order = np.arange(count)
    elif sample_weights is not None:
        weights = torch.as_tensor(sample_weights, dtype=torch.float64)
        order = torch.multinomial(weights, count, replacement=True, generator=generator).numpy()
    else:
        order = torch.randperm(count, generator=generator).numpy()
    starts = list(range(0, count, batch_size))
    smallest_last = max(2, shard.size if shard else 1)
    if generator is not None and len(starts) > 1 and count - starts[-1] < smallest_last:
        starts.pop()  # a lone last training image joins the batch before it: BatchNorm cannot train on one
    for start, stop in zip(starts, [*starts[1:], count]):
        # Sorted indices read the memory map front to back; the batch's order does not matter.
        index = np.sort(order[start:stop])
        rows = shard.rows if shard else slice(None)
        batch = to_float(images[index[rows]])
        if augment is not None:
            batch = augment(batch, rows, len(index)) if shard else augment(batch)
        yield batch, torch.from_numpy(labels[index[rows]])


class RandomAugment:
    """Random flips, 90° rotations and shifted crops, drawn per image, applied per batch.

    Nuclei have no preferred orientation, so the dihedral group and small shifts give new,
    equally plausible images. Crops take a ``size``×``size`` window from the reflection-padded
    image at a random offset of up to ``pad`` pixels.

    All three only move pixels, so each image's draws make one map from output to source pixel,
    and the batch is augmented by a single gather through those maps (the maps of every flip,
    rotation and offset are views of one small table, built once per image size): the same
    pixels as flipping, rotating, padding and cropping in turn, at a fraction of the cost.
    """

    def __init__(self, generator: torch.Generator, pad: int = 4) -> None:
        self.generator = generator
        self.pad = pad
        self._windows: dict[tuple[int, int], torch.Tensor] = {}

    def windows(self, height: int, width: int) -> torch.Tensor:
        """Source pixel (flat index) of every output pixel, per transform and crop offset:
        ``[flip * 4 + turns, top, left]`` (``[flip, top, left]`` when the image is not square)
        gives the height×width map. The maps come from applying the transforms to pixel indices."""
        if (height, width) not in self._windows:
            index = torch.arange(height * width).view(height, width)
            flips = [index, index.flip(-1)]
            maps = [torch.rot90(m, k) for m in flips for k in range(4)] if height == width else flips
            padded = np.pad(torch.stack(maps).numpy(), ((0, 0), (self.pad,) * 2, (self.pad,) * 2), mode="reflect")
            self._windows[(height, width)] = torch.from_numpy(padded).unfold(1, height, 1).unfold(2, width, 1)
        return self._windows[(height, width)]

    def __call__(self, batch: torch.Tensor, part: slice = slice(None), drawn_for: int | None = None) -> torch.Tensor:
        """Augment ``batch``; with ``part`` and ``drawn_for``, it is those rows of a batch of
        ``drawn_for`` images, and gets the draws those rows would get in the whole batch."""
        count, channels, height, width = batch.shape
        total = count if drawn_for is None else drawn_for

        def draw(high: int) -> torch.Tensor:
            return torch.randint(0, high, (total,), generator=self.generator)[part]

        transform = draw(2)  # the draws in the order the transforms apply: flip, turns, crop offset
        if height == width:
            transform = transform * 4 + draw(4)
        top, left = (draw(2 * self.pad + 1), draw(2 * self.pad + 1)) if self.pad else (0, 0)
        source = self.windows(height, width)[transform, top, left].view(count, 1, height * width)
        pixels = batch.reshape(count, channels, height * width)
        return pixels.gather(2, source.expand(-1, channels, -1)).view(batch.shape)


class _Jitter:
    """An augmentation of some ``strength`` whose random draws are per image (and channel)."""

    def __init__(self, generator: torch.Generator, strength: float) -> None:
        self.generator = generator
        self.strength = strength

    def normal(self, count: int, drawn_for: int | None, part: slice, *shape: int) -> torch.Tensor:
        """Standard normals of shape ``shape`` per image, as ``count``×shape×1×1: the rows ``part``
        of ``drawn_for`` images' draws (all ``count`` of them without it)."""
        total = count if drawn_for is None else drawn_for
        return torch.randn((total, *shape), generator=self.generator)[part].view(count, *shape, 1, 1)


class IntensityAugment(_Jitter):
    """Random staining drift, drawn per image (gain and offset per channel), applied per batch.

    Plates differ in staining, background and focus; a network that sees only the training
    plates' looks can learn to read the plate instead of the nucleus. Jittering every image's
    intensities by about as much as plates differ (the RxRx1 winners' per-channel affine jitter,
    plus a gamma and a slight Gaussian blur) leaves the foci but not the look to learn from.
    ``strength`` s in 0..1: gain exp(N(0, s)) and offset N(0, s/2) per channel, the offset in
    units of the channel's mean level (so it means the same after any ``preprocess.normalize``),
    gamma exp(N(0, s/2)) and blur σ uniform in [0, ``blur_px``] per image (input pixels; 2s when
    ``blur_px`` is None). The blur is in the network's pixels, not the microscope's: at 40 px with
    ``preprocess.scale: window`` (a factor of 3.6) 2s = 0.6 px is 2.2 native px, wider than an
    X-ray focus's own σ, so ``train.blur_px`` bounds it apart from the other draws.
    """

    def __init__(self, generator: torch.Generator, strength: float, blur_px: float | None = None) -> None:
        super().__init__(generator, strength)
        self.blur_px = 2 * strength if blur_px is None else blur_px

    def __call__(self, batch: torch.Tensor, part: slice = slice(None), drawn_for: int | None = None) -> torch.Tensor:
        """Jitter ``batch``; ``part`` and ``drawn_for`` as in :meth:`RandomAugment.__call__`."""
        count, channels = batch.shape[:2]
        total = count if drawn_for is None else drawn_for
        s = self.strength
        normal = partial(self.normal, count, drawn_for, part)
        gain, offset = (s * normal(channels)).exp(), s / 2 * normal(channels)
        gamma = (s / 2 * normal(1)).exp()
        sigma = self.blur_px * torch.rand((total,), generator=self.generator)[part]
        batch = gaussian_blur(batch, sigma, math.ceil(3 * self.blur_px)).clamp(0, 1) ** gamma
        return (batch * gain + offset * batch.mean((-2, -1), keepdim=True)).clamp(0, 1)


class TextureAugment(_Jitter):
    """Random chromatin contrast, drawn per image and channel, applied per batch.

    Plates differ in the contrast of the chromatin texture as well as in staining (the simulator's
    ``texture``, bps/sim/confounds.py), and a per-image intensity window leaves that contrast as it
    is: the last plate look a network can learn. The detail of each image around its own blur
    (σ 2 px) is scaled by exp(N(0, ``strength``)), the smooth body kept: texture, foci and noise
    grow or shrink together, their pattern stays.
    """

    SIGMA_PX = 2.0

    def __call__(self, batch: torch.Tensor, part: slice = slice(None), drawn_for: int | None = None) -> torch.Tensor:
        """Rescale the detail of ``batch``; ``part`` and ``drawn_for`` as in :meth:`RandomAugment.__call__`."""
        count, channels = batch.shape[:2]
        factor = (self.strength * self.normal(count, drawn_for, part, channels)).exp()
        sigma = torch.full((count,), self.SIGMA_PX)
        smooth = gaussian_blur(batch, sigma, math.ceil(3 * self.SIGMA_PX))
        return (smooth + factor * (batch - smooth)).clamp(0, 1)


def gaussian_blur(batch: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each image of ``batch`` with its own σ (px; 0 leaves it as it is): one grouped,
    separable convolution over the whole batch, reflection at the borders. The kernels' ``radius``
    (3σ of the largest σ drawable) does not depend on the draws, so an image blurs the same in any batch."""
    count, channels, height, width = batch.shape
    radius = min(radius, height - 1, width - 1)
    if radius == 0:
        return batch
    x = torch.arange(-radius, radius + 1, dtype=batch.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # one row per image channel
    flat = torch.nn.functional.pad(batch.reshape(1, count * channels, height, width), (radius,) * 4, mode="reflect")
    flat = torch.nn.functional.conv2d(flat, kernel.view(-1, 1, 1, 2 * radius + 1), groups=count * channels)
    flat = torch.nn.functional.conv2d(flat, kernel.view(-1, 1, 2 * radius + 1, 1), groups=count * channels)
    return flat.view(count, channels, height, width)


class Chain:
    """Augmentations applied one after the other, each with the same rows of the same batch."""

    def __init__(self, *steps: Augment) -> None:
        self.steps = steps

    def __call__(self, batch: torch.Tensor, part: slice = slice(None), drawn_for: int | None = None) -> torch.Tensor:
        for step in self.steps:
            batch = step(batch, part, drawn_for)
        return batch


def training_augment(generator: torch.Generator, config: TrainParams) -> Augment | None:
    """What ``train.augment``, ``train.texture_augment`` and ``train.intensity_augment`` ask for,
    drawn from ``generator``.

    Geometry first, then texture, then intensities; a strength of 0 adds no step and no draws, so
    the others' draws and the trained weights are what they are without it.
    """
    steps: list[Augment] = []
    if config.augment:
        steps.append(RandomAugment(generator, config.crop_pad))
    if config.texture_augment > 0:
        steps.append(TextureAugment(generator, config.texture_augment))
    if config.intensity_augment > 0:
        steps.append(IntensityAugment(generator, config.intensity_augment, config.blur_px))
    return steps[0] if len(steps) == 1 else Chain(*steps) if steps else None
