"""The CNN training loop's parts: device, optimiser, one epoch, whole-split predictions."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bps.batches import Augment, iterate_batches
from bps.errors import PipelineError
from bps.params import TrainParams

EVAL_BATCH_SIZE = 512


def pick_device(requested: str) -> torch.device:
    """``auto`` takes the GPU when there is one; ``cuda`` without one is an error, not a fallback."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device is cuda but no CUDA device is available (use auto or cpu)")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def make_deterministic(seed: int, device_type: str = "cpu") -> torch.Generator:
    """Seed torch and insist on deterministic kernels: same params and seed, same numbers on CPU.

    On CUDA some kernels have no deterministic version: there it warns instead of failing.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device_type != "cpu")
    return torch.Generator().manual_seed(seed)


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    extra = {"momentum": 0.9} if params.optimizer == "sgd" else {}
    return optimizers[params.optimizer](model.parameters(), lr=params.lr, weight_decay=params.weight_decay, **extra)


def make_scheduler(optimizer: torch.optim.Optimizer, params: TrainParams):
    """The learning-rate schedule, stepped once per epoch (None for a constant rate)."""
    if params.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, params.lr_step_epochs, params.lr_gamma)
    if params.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs)
    if params.scheduler == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, params.lr_gamma)
    return None


class EarlyStopping:
    """Tracks the best value of a validation metric; says stop after ``patience`` epochs without
    improvement (``patience`` 0 never stops)."""

    def __init__(self, patience: int, lower_is_better: bool) -> None:
        self.patience, self.sign = patience, 1.0 if lower_is_better else -1.0
        self.best, self.stale = float("inf"), 0

    def improved(self, value: float) -> bool:
        """Record this epoch's value; True when it is the best so far."""
        if self.sign * value < self.best:
            self.best, self.stale = self.sign * value, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience


def head_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    head_sizes: Sequence[int] = (),
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed cross-entropy of a batch: the one place that knows how a target's heads are trained.

    One head (``head_sizes`` of length 0 or 1): cross-entropy over all the logits. Several: each
    head's slice of the logits against its part of the joint label, added per image (the joint
    negative log-likelihood of heads that predict independently). ``class_weights`` (one per joint
    class) weight each image by its label, as ``CrossEntropyLoss(weight=...)`` does.
    """
    if len(head_sizes) <= 1:
        return F.cross_entropy(logits, labels, weight=class_weights, reduction="sum")
    per_image = torch.zeros(len(labels), device=logits.device)
    remaining = labels
    for block, size in reversed(list(zip(logits.split(list(head_sizes), dim=1), head_sizes))):
        per_image = per_image + F.cross_entropy(block, remaining % size, reduction="none")
        remaining = remaining // size
    if class_weights is not None:
        per_image = per_image * class_weights[labels]
    return per_image.sum()


def head_softmax(logits: torch.Tensor, head_sizes: Sequence[int] = ()) -> torch.Tensor:
    """Probabilities: a softmax over all the logits, or over each head's slice for several heads."""
    if len(head_sizes) <= 1:
        return torch.softmax(logits, dim=1)
    return torch.cat([torch.softmax(block, dim=1) for block in logits.split(list(head_sizes), dim=1)], dim=1)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    generator: torch.Generator,
    augment: Augment | None,
    device: torch.device,
    *,
    class_weights: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    autocast: bool = False,
    channels_last: bool = False,
    head_sizes: Sequence[int] = (),
) -> float:
    """One pass over the training split; returns the mean loss over all its images.

    ``class_weights`` weight the loss, ``sample_weights`` the sampling (see iterate_batches);
    ``autocast`` runs the forward pass in bfloat16 on a GPU; ``channels_last`` feeds NHWC
    tensors, which convolutions on CPU often run faster; ``head_sizes`` (``Target.head_sizes``)
    splits the logits into separately trained heads (see :func:`head_loss`).
    """
    model.train()
    weight = torch.as_tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    total = 0.0
    for batch, target in iterate_batches(images, labels, batch_size, generator, augment, sample_weights):
        batch = batch.to(device).contiguous(memory_format=memory_format)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = head_loss(model(batch), target.to(device), head_sizes, weight)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(images)


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: np.ndarray, device: torch.device, head_sizes: Sequence[int] = ()
) -> np.ndarray:
    """Class probabilities for every image of a split, in order, never augmented (per head: see head_softmax)."""
    model.eval()
    dummy = np.zeros(len(images), dtype=np.int64)
    chunks = [
        head_softmax(model(batch.to(device)), head_sizes).cpu().numpy()
        for batch, _ in iterate_batches(images, dummy, EVAL_BATCH_SIZE)
    ]
    return np.concatenate(chunks) if chunks else np.empty((0, 0), dtype=np.float32)
