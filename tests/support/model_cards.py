"""Model cards for tests that save a model folder by hand, shaped like the trainers' own."""

from __future__ import annotations

from bps.core.params import PreprocessParams
from bps.models.card import ModelCard


def finished_card(
    architecture: str = "lenet",
    in_channels: int = 1,
    size: int = 32,
    classes: list[str] | tuple[str, ...] = ("Fe", "X-ray"),
    preprocess: PreprocessParams | None = None,
    **fields,
) -> ModelCard:
    """The card of a finished training run (``complete``), as predict and serve require."""
    return ModelCard(
        kind="mlp" if architecture == "mlp" else "cnn",
        architecture=architecture,
        target=fields.pop("target", "particle"),
        classes=list(classes),
        in_channels=in_channels,
        image_size=size,
        preprocess=preprocess or PreprocessParams(image_size=size),
        training=fields.pop("training", {"epochs": 3}),
        metrics=fields.pop("metrics", {"epoch": 2, "val_accuracy": 0.75}),
        complete=True,
        **fields,
    )
