"""The learning-rate range test (Smith 2015, "Cyclical learning rates"; fastai's ``lr_find``).

One short run trains the CNN for a fixed number of mini-batches while the rate grows
geometrically, batch by batch, from far too small to far too large. The loss against the rate
is flat at first (nothing moves), falls where the rate starts to teach, and blows up where it
is too large; one run of a hundred batches shows where a good ``train.lr`` lies, which a grid of
full trainings would take hours to find. Each batch's loss is noisy, so the curve is read from
an exponential moving average of it, bias-corrected as Adam's moments are (the early average
is not dragged towards its start at 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from bps.core.errors import PipelineError
from bps.models.inference import to_device
from bps.training.batches import Augment, iterate_batches
from bps.training.loop import head_loss

CURVE_COLUMNS = ("step", "lr", "log10_lr", "loss", "smoothed_loss")


@dataclass(frozen=True)
class Curve:
    """The rates tried, each batch's loss and its smoothed value; ``stopped_early`` when the test
    ended before its last rate because the loss diverged (or stopped being a number)."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    stopped_early: bool

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"step": np.arange(len(self.lrs)), "lr": self.lrs, "log10_lr": np.log10(self.lrs),
                             "loss": self.losses, "smoothed_loss": self.smoothed}, columns=list(CURVE_COLUMNS))


def rates(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    """``steps`` rates growing geometrically from ``min_lr`` to ``max_lr``, both included."""
    return np.geomspace(min_lr, max_lr, steps)


def range_test(step: Callable[[float], float], lrs: Sequence[float], smoothing: float,
               diverge_factor: float) -> Curve:
    """Call ``step(lr)`` (one mini-batch at that rate; returns its loss) for each rate in turn
    (``lrs`` may be a progress bar over them).

    The smoothed loss is ``avg_t / (1 - (1 - smoothing)^t)`` with ``avg_t = (1 - smoothing) ·
    avg_{t-1} + smoothing · loss_t``. The test stops after the first batch whose smoothed loss
    exceeds ``diverge_factor`` × the best so far: past that point the curve says nothing more.
    A non-finite loss ends it too, and is not recorded.
    """
    tried, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    for count, lr in enumerate(lrs, start=1):
        loss = step(float(lr))
        if not math.isfinite(loss):
            break
        average = (1 - smoothing) * average + smoothing * loss
        value = average / (1 - (1 - smoothing) ** count)
        tried.append(float(lr))
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if value > diverge_factor * best:
            break
    return Curve(np.array(tried), np.array(losses), np.array(smoothed), stopped_early=len(tried) < len(lrs))


def suggest(lrs: np.ndarray, smoothed: np.ndarray, smoothing: float) -> tuple[float, float]:
    """(the rate of steepest descent, the rate of the lowest loss / 10) of a smoothed curve.

    Steepest descent: the most negative slope of the smoothed loss against log10(rate), looked
    for only up to the lowest loss (past it the curve is diverging, and any dip there is noise).
    It is where the loss falls fastest per step of rate, so training learns fastest there while
    still well short of the rates that blow up. Two neighbouring points differ by one batch's
    share of the average, mostly that batch's luck, so the slope is taken across the average's
    memory (about 1 / ``smoothing`` batches: half of it either side of the point); with
    ``smoothing`` 1 (no smoothing) it is the slope between neighbours. The lowest loss itself is
    no choice: the average lags behind the batches, so the raw loss was already turning up
    there; a tenth of that rate (fastai's rule of thumb) is a second, more cautious reading.
    """
    if len(lrs) == 0:
        raise PipelineError("lr-find: no finite loss was recorded (the first batch already diverged); "
                            "lower lr_find.min_lr")
    lowest = int(np.argmin(smoothed))
    steepest = 0
    if lowest > 0:
        half = max(1, round(1 / (2 * smoothing)))
        index = np.arange(lowest + 1)
        before, after = np.maximum(index - half, 0), np.minimum(index + half, lowest)
        log_lrs = np.log10(lrs)
        steepest = int(np.argmin((smoothed[after] - smoothed[before]) / (log_lrs[after] - log_lrs[before])))
    return float(lrs[steepest]), float(lrs[lowest]) / 10


def endless_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, generator: torch.Generator,
                    augment: Augment | None, sample_weights: np.ndarray | None) -> Iterator:
    """Training batches as the trainer draws them, epoch after epoch, for as long as asked."""
    if len(images) == 0:
        raise PipelineError("lr-find: the training split has no images")
    while True:
        yield from iterate_batches(images, labels, batch_size, generator, augment, sample_weights)


def batch_step(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, device: torch.device,
               head_sizes: Sequence[int] = (), class_weights: np.ndarray | None = None,
               multilabel: bool = False) -> Callable[[float], float]:
    """One training step at a given rate on the next batch, with the trainer's loss
    (:func:`bps.training.loop.head_loss`, multi-label too); returns the batch's mean loss per image."""
    weight = torch.as_tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None
    model.train()

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = head_loss(model(to_device(images, device)), to_device(labels, device), head_sizes, weight,
                         multilabel) / len(labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step
