"""A plate adversary for the CNN (``train.adversary``): features that cannot tell the sham plates apart.

A sham nucleus carries no damage, so whatever tells one sham plate from another (staining, focus,
chromatin contrast, the particle's batch) is plate look, and a network that reads it reads the
plate, not the nucleus. During training a small head guesses each sham nucleus's plate from what the
network's last linear layer reads, through a gradient reversal (Ganin & Lempitsky, 2015, "Unsupervised
domain adaptation by backpropagation"): the head learns to guess, the network learns to leave it
nothing to guess from. Irradiated nuclei train the network as before. The head is training-only
(bps/training/heads.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from bps.core.errors import PipelineError
from bps.targets.metrics import is_sham
from bps.training.heads import Auxiliary, TrainingHead

NO_PLATE = -1  # an irradiated nucleus: no plate to guess, no adversary loss
HIDDEN = 64  # the head's hidden units


class _Reverse(torch.autograd.Function):
    """Identity forward; backward, the gradient times ``-weight``."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def plate_count(plates: np.ndarray) -> int:
    """How many plates the head tells apart: the codes of :func:`sham_plates` run 0..k-1."""
    return int(plates.max()) + 1


def sham_plates(table: pd.DataFrame) -> np.ndarray:
    """Each row's sham plate as 0..k-1 (in order of first appearance), ``NO_PLATE`` for irradiated rows."""
    if not {"plate", "dose_Gy"} <= set(table.columns):
        raise PipelineError("train.adversary: needs plates and doses (the BPS layout); set it to 0 for this data")
    sham = is_sham(table)
    codes, _ = pd.factorize(table["plate"].where(sham))
    if (count := len(np.unique(codes[sham]))) < 2:
        raise PipelineError(f"train.adversary: the training split has {count} sham plates, "
                            "too few to tell apart (train.shams: exclude leaves none)")
    return np.where(sham, codes, NO_PLATE).astype(np.int64)


class PlateAdversary(TrainingHead):
    """``network`` with a plate head on its last linear layer's input, through a gradient reversal of
    ``weight``. Training mode returns the network's logits and the head's ``n_plates`` logits side by
    side; evaluation mode the network's logits alone."""

    def __init__(self, network: nn.Module, n_plates: int, weight: float) -> None:
        super().__init__(network, nn.Sequential(nn.Linear(self.width(network), HIDDEN), nn.ReLU(),
                                                nn.Linear(HIDDEN, n_plates)))
        self.weight = weight

    def into_head(self, features: torch.Tensor) -> torch.Tensor:
        return _Reverse.apply(features, self.weight)


def adversary_loss(plate_logits: torch.Tensor, plates: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the plate head on the batch's sham nuclei (0 when it has none)."""
    return nn.functional.cross_entropy(plate_logits, plates, ignore_index=NO_PLATE, reduction="sum")


def plate_adversary(network: nn.Module, table: pd.DataFrame, weight: float) -> tuple[PlateAdversary, Auxiliary]:
    """``network`` under a plate adversary for the training rows ``table``, and what it trains on."""
    plates = sham_plates(table)
    count = plate_count(plates)
    return PlateAdversary(network, count, weight), Auxiliary(plates, count, adversary_loss)
