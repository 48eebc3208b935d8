"""The networks' 2×2 max pooling (``MaxPool2x2``) against ``nn.MaxPool2d(2)``, where no gradient is wanted.

The same pooled CNN (the default) with each, forward passes without autograd on the same
in-memory batches: what validation, evaluation, test-time augmentation and prediction run. The
logits are the same bit for bit (tests/models/test_networks.py); training runs ``max_pool2d`` itself.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import Row, best_of_each
from bps.models.networks import MaxPool2x2, PooledLeNet

BATCH = 64
SIZE = 64


def with_torch_pooling(model: nn.Module) -> nn.Module:
    """``model`` with every ``MaxPool2x2`` replaced by ``nn.MaxPool2d(2)``."""
    for name, child in model.named_children():
        setattr(model, name, nn.MaxPool2d(2)) if isinstance(child, MaxPool2x2) else with_torch_pooling(child)
    return model


def run(workdir: Path, quick: bool) -> list[Row]:
    steps = 10 if quick else 100
    images = torch.rand(steps, BATCH, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    ours = PooledLeNet(1, 2, SIZE).eval()
    models = {"ours": ours, "torch": with_torch_pooling(copy.deepcopy(ours))}

    @torch.no_grad()
    def infer(model: nn.Module) -> None:
        for batch in images:
            model(batch)

    seconds = best_of_each({name: lambda m=model: infer(m) for name, model in models.items()}, 1 if quick else 5)
    return [
        Row("max_pool_forward_vs_torch", seconds["ours"] / seconds["torch"], "x",
            f"lenet_pool, {steps} batches of {BATCH} at {SIZE} px, {torch.get_num_threads()} threads, no gradients: "
            f"{steps * BATCH / seconds['ours']:.0f} against {steps * BATCH / seconds['torch']:.0f} images/s"),
    ]
