"""CNNs for nucleus crops, and their weights-only checkpoints.

A checkpoint is two files: ``model.pt`` (a state dict, loadable with
``torch.load(..., weights_only=True)``, so opening a shared model cannot run code) and
``model.json`` (architecture, classes, and the preprocessing the model was trained with).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from bps.files import atomic_open, write_json


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) for ``size``×``size`` inputs with ``in_channels`` channels."""

    def __init__(self, in_channels: int, n_classes: int, size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = ((size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet-5 needs inputs of at least 16×16 pixels, got {size}")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, n_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


ARCHITECTURES = {"lenet": LeNet5}


def build_model(config: dict) -> nn.Module:
    """The untrained network a checkpoint config describes."""
    return ARCHITECTURES[config["architecture"]](config["in_channels"], len(config["classes"]), config["size"])


def save_checkpoint(folder: Path, model: nn.Module, config: dict) -> None:
    """Write ``model.pt`` (weights only) and ``model.json`` (everything needed to rebuild it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / "model.pt") as stream:
        torch.save(model.state_dict(), stream)
    write_json(folder / "model.json", config)


def load_checkpoint(folder: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a saved model in eval mode, without unpickling anything but tensors."""
    config = json.loads((folder / "model.json").read_text())
    model = build_model(config)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    return model.to(device).eval(), config
