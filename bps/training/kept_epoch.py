"""What :func:`bps.training.loop.fit` does with a better epoch: keep it.

Rank 0 saves it as the model folder's checkpoint (``model.pt`` and its card, with the epoch's
validation scores), so the folder always holds the best epoch so far. When the run needs that
epoch after training (a multi-label model's thresholds, a negative control's held-out
predictions), its weights are also kept in memory and restored at the end: the last epoch is
not the kept one.
"""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from bps.models.card import ModelCard
from bps.models.networks import save_checkpoint
from bps.training.distributed import World, unwrap


class KeptEpoch:
    """The ``on_better`` hook of :func:`~bps.training.loop.fit` for one model folder."""

    def __init__(self, folder: Path, card: ModelCard, model: nn.Module, world: World, keep_weights: bool) -> None:
        self.folder, self.card, self.model, self.world = folder, card, model, world
        self.keep_weights = keep_weights
        self.weights: dict | None = None

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.world.is_main:
            return
        network = unwrap(self.model)
        save_checkpoint(self.folder, network, self.card.model_copy(update={"metrics": {"epoch": epoch, **metrics}}))
        if self.keep_weights:
            self.weights = copy.deepcopy(network.state_dict())

    def restore(self) -> nn.Module:
        """The network, with the kept epoch's weights when they were kept."""
        network = unwrap(self.model)
        if self.weights is not None:
            network.load_state_dict(self.weights)
        return network
