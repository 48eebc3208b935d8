"""CNNs for nucleus crops (LeNet-5, a deeper small CNN, ResNet-18/50), and their checkpoints.

A checkpoint is two files: ``model.pt`` (a state dict, loadable with
``torch.load(..., weights_only=True)``, so opening a shared model cannot run code) and the
model card ``model.json`` (:mod:`bps.models.card`: architecture, classes, preprocessing, metrics).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from bps.core import options
from bps.core.errors import PipelineError
from bps.core.files import atomic_open
from bps.models.card import CNN_WEIGHTS, ModelCard, read_card, write_card


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)``, in half the time where no gradient is wanted (validation, evaluation, prediction).

    PyTorch's CPU max pooling records the index of every window's maximum for the backward pass,
    and for the pooled CNN at 64 px that took half of a forward pass. Without autograd, the
    elementwise maxima of the four strided quarters of the maps give the same values without the
    indices. With autograd (training, saliency), ``max_pool2d`` itself runs: its indices make the
    backward pass cheap, and the training steps stay PyTorch's own.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return nn.functional.max_pool2d(x, 2)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # an odd last row or column is dropped
        rows = (x[..., 0:height:2, :width], x[..., 1:height:2, :width])
        top, bottom = (torch.maximum(row[..., 0::2], row[..., 1::2]) for row in rows)
        return torch.maximum(top, bottom)


def lenet_convolutions(in_channels: int, stride: int = 1) -> list[nn.Module]:
    """LeNet-5's two 5×5 convolutions (6 and 16 filters) with the pooling between them."""
    return [nn.Conv2d(in_channels, 6, kernel_size=5, stride=stride), nn.ReLU(), MaxPool2x2(),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU()]


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) for ``size``×``size`` inputs with ``in_channels`` channels."""

    def __init__(self, in_channels: int, n_classes: int, size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*lenet_convolutions(in_channels), MaxPool2x2())
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


class PooledLeNet(nn.Module):
    """LeNet-5's two convolutions read by global max and mean pooling: a learned spot detector and counter.

    A focus can sit anywhere in a nucleus. LeNet-5's first linear layer gives every position its
    own weights, so it must learn a focus at each place again; pooling over positions reads the
    brightest response and the total of each filter once, as the foci count reads its spots.

    ``stride`` 2 (``lenet_pool_s2``) reads a crop of twice the side with convolutions of about the
    same cost: its first filters see a focus at near-native scale, and at 128 px the maps after them
    are about the size of 64 px's at stride 1 (27 against 26 a side).
    """

    def __init__(self, in_channels: int, n_classes: int, size: int, stride: int = 1) -> None:
        super().__init__()
        if size < 16 * stride:
            raise ValueError(f"lenet_pool needs inputs of at least {16 * stride}×{16 * stride} pixels, got {size}")
        self.features = nn.Sequential(*lenet_convolutions(in_channels, stride))
        self.classifier = nn.Sequential(nn.Linear(32, 84), nn.ReLU(), nn.Linear(84, n_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.features(images)
        return self.classifier(torch.cat([maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3))], dim=1))


class SmallCNN(nn.Module):
    """A deeper small CNN: four conv-BN-ReLU blocks (32→256 channels), global pooling, dropout."""

    def __init__(self, in_channels: int, n_classes: int, size: int) -> None:
        super().__init__()
        blocks, width = [], in_channels
        for channels in (32, 64, 128, 256):
            blocks += [
                nn.Conv2d(width, channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                MaxPool2x2(),
            ]
            width = channels
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(width, n_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution for ``in_channels`` inputs (1 for BPS, 4 for HPA, 6 for RxRx1).

    Pretrained RGB filters are averaged over their 3 inputs and spread over the new ones, so
    a grey image gives the response an RGB image of the same brightness gave.
    """
    adapted = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        adapted.weight.copy_(mean.repeat(1, in_channels, 1, 1) * conv.in_channels / in_channels)
        if conv.bias is not None:
            adapted.bias.copy_(conv.bias)
    return adapted


def resnet(depth: int, in_channels: int, n_classes: int, size: int, pretrained: Path | None = None) -> nn.Module:
    """torchvision's ResNet with its first convolution and head fitted to the data.

    ``pretrained`` names a local state-dict file of the ImageNet model: nothing is downloaded.
    torchvision is imported here, not with the module: its import (torch._dynamo included) is
    seconds of every CNN stage's start, and only the ResNets use it.
    """
    import torchvision

    del size  # global average pooling takes any input size
    model = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth](weights=None)
    if pretrained is not None:
        if not pretrained.is_file():
            raise PipelineError(
                f"train.pretrained: {pretrained} does not exist (weights are never downloaded; "
                "save a torchvision state dict there, or set train.pretrained: null)"
            )
        _load_state(model, load_pretrained(pretrained), pretrained)
    model.conv1 = adapt_first_conv(model.conv1, in_channels)
    model.fc = nn.Linear(model.fc.in_features, n_classes)
    return model


def load_pretrained(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, or one line naming the file when it holds anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - UnpicklingError, RuntimeError, IndexError...: all mean "not weights"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PipelineError(
            f"train.pretrained: {path} is not a weights file torch.load can read safely "
            f"({type(error).__name__}: {first_line}); save one with torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise PipelineError(f"train.pretrained: {path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict`` with one line naming the file when its keys or shapes do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError:
        missing, unexpected = model.state_dict().keys() - state.keys(), state.keys() - model.state_dict().keys()
        problems = [f"{len(keys)} {what} key(s), e.g. {sorted(keys)[0]!r}"
                    for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        detail = "; ".join(problems) or "tensor shapes differ"
        raise PipelineError(
            f"train.pretrained: {path} does not fit this {type(model).__name__} ({detail}): "
            "weights of another architecture or depth?"
        ) from None


# Keyed by the names in bps.core.options, which params validation lists without importing torch.
ARCHITECTURES = options.registry(
    options.ARCHITECTURES,
    lenet=LeNet5,
    lenet_pool=PooledLeNet,
    lenet_pool_s2=partial(PooledLeNet, stride=2),
    cnn=SmallCNN,
    resnet18=partial(resnet, 18),
    resnet50=partial(resnet, 50),
)


def build_model(card: ModelCard, pretrained: Path | None = None) -> nn.Module:
    """The network a model card describes; ``pretrained`` weights are for ResNets only."""
    architecture = ARCHITECTURES[card.architecture]
    extra = {"pretrained": pretrained} if pretrained is not None else {}
    return architecture(card.in_channels, len(card.classes), card.image_size, **extra)


def save_checkpoint(folder: Path, model: nn.Module, card: ModelCard) -> None:
    """Write ``model.pt`` (weights only), then its card (everything needed to rebuild it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / CNN_WEIGHTS) as stream:
        torch.save(model.state_dict(), stream)
    write_card(folder, card)


def load_checkpoint(folder: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild a finished model in eval mode, without unpickling anything but tensors."""
    card = read_card(folder)
    model = build_model(card)
    model.load_state_dict(torch.load(folder / CNN_WEIGHTS, map_location=device, weights_only=True))
    return model.to(device).eval(), card
