"""The foci features as a second target for the CNN (``train.foci_auxiliary``).

On plates it never saw, the foci count ranks irradiated nuclei better than the CNN. It reads spot
counts, brightness and sizes, measured relative to each nucleus (bps/classical/features.py). Here
a linear head learns to read those measurements of each training nucleus from what the network's
last linear layer reads, and its squared error joins the labels' loss. So the network's own
description of a nucleus must hold them: the detector teaches the filters what a focus is, with no
labels involved. The measurements come from data/features, which preprocess writes from the same
decode as the CNN's input. The head is training-only (bps/training/heads.py).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch
from torch import nn

from bps.classical.features import family_columns
from bps.core.errors import PipelineError
from bps.core.paths import SPLITS, feature_table
from bps.training.heads import Auxiliary, TrainingHead


def foci_targets(table: pd.DataFrame) -> np.ndarray:
    """The foci features of ``table``'s images (matched by filename in any split's feature table),
    row for row: log(1 + x), then standardised over these rows, so that every feature weighs alike."""
    if missing := [str(feature_table(split)) for split in SPLITS if not feature_table(split).exists()]:
        raise PipelineError(f"train.foci_auxiliary: no foci features ({', '.join(missing)}); the BPS pipeline's "
                            "preprocess writes them, a layout's does not: set it to 0 there")
    features = pd.concat([pd.read_csv(feature_table(split)) for split in SPLITS], ignore_index=True)
    columns = family_columns(features, "foci")
    matched = table[["filename"]].merge(features[["filename", *columns]], on="filename", how="left",
                                        validate="many_to_one")
    if missing := int(matched[columns].isna().any(axis=1).sum()):
        raise PipelineError(f"train.foci_auxiliary: {missing} training images have no foci features in "
                            "data/features (run preprocess again)")
    values = np.log1p(matched[columns].to_numpy(np.float64))
    return ((values - values.mean(axis=0)) / (values.std(axis=0) + 1e-9)).astype(np.float32)


class FociRegression(TrainingHead):
    """``network`` with a linear head reading ``n_features`` foci features from its last linear layer's input."""

    def __init__(self, network: nn.Module, n_features: int) -> None:
        super().__init__(network, nn.Linear(self.width(network), n_features))


def foci_loss(predicted: torch.Tensor, targets: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight`` × each image's mean squared error over the features, summed over the batch."""
    return weight * ((predicted - targets.float()) ** 2).mean(dim=1).sum()


def foci_regression(network: nn.Module, table: pd.DataFrame, weight: float) -> tuple[FociRegression, Auxiliary]:
    """``network`` with the foci head for the training rows ``table``, and what it trains on."""
    targets = foci_targets(table)
    width = targets.shape[1]
    return FociRegression(network, width), Auxiliary(targets, width, partial(foci_loss, weight=weight))
