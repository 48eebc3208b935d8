"""Training-only heads: a second task read from the network's own description of a nucleus.

The plate adversary (bps/training/adversary.py) and the foci regression (bps/training/foci_target.py)
each put a small head on what the network's last linear layer reads and add its loss to the labels'
during training. In evaluation mode the wrapper returns the network's logits alone, and checkpoints
hold the network alone (:func:`bps.training.distributed.unwrap` takes the wrapper off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bps.models.inference import last_linear, last_linear_inputs


class TrainingHead(nn.Module):
    """``network`` with ``head`` on its last linear layer's input. Training mode returns the network's
    logits and the head's outputs side by side; evaluation mode the network's logits alone."""

    def __init__(self, network: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.module, self.head = network, head  # ``module``, as DDP names what it wraps

    @staticmethod
    def width(network: nn.Module) -> int:
        """How many numbers the head reads: the network's last linear layer's inputs."""
        return last_linear(network).in_features

    def into_head(self, features: torch.Tensor) -> torch.Tensor:
        """What the head reads of the features (the adversary reverses their gradient)."""
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.module(images)
        with last_linear_inputs(self.module) as seen:
            logits = self.module(images)
        return torch.cat([logits, self.head(self.into_head(seen.pop()))], dim=1)


@dataclass(frozen=True)
class Auxiliary:
    """A training-only head's targets, row for row with the training images, and its summed loss on a
    batch: ``loss(head_outputs, targets)``, added to the labels' loss."""

    targets: np.ndarray
    outputs: int  # the head's outputs, after the network's logits
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
