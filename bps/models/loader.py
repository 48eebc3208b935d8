"""One loader for every model folder, keyed on its model card: evaluate, predict and serve all use it.

The card (``model.json``) says what the folder holds: the MLP baseline and the classical feature
models are scikit-learn estimators in skops files, the CNNs weights-only ``model.pt`` files. Each
loads into a :class:`LoadedModel` whose :meth:`~LoadedModel.probabilities` answers in the
target's outputs (one column per class, or per head's class, or per label), so no caller needs
to know how a kind of model is stored or what its raw outputs mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bps.core import options
from bps.models import pixel_mlp, sklearn_io
from bps.models.card import FUSION_CNN, ModelCard, read_card
from bps.targets.labels import Target, get_target, layout_target


def card_target(card: ModelCard) -> Target:
    """The target a card's model predicts (a layout's labels carry their classes in the card)."""
    if card.target == options.LAYOUT_TARGET:
        return layout_target(card.classes, None, card.multilabel)
    return get_target(card.target)


@dataclass(frozen=True)
class LoadedModel:
    """A finished model, ready to predict.

    Its inputs: N×C×H×W uint8 prepared images for the ``mlp`` and ``cnn`` kinds; for a
    ``classical`` model the N×F values of its family's feature columns (``<family>_*``, in table
    order); for ``fusion`` the pair (images, N×F foci features). ``network`` and ``device`` are the
    CNN itself (saliency needs its gradients).
    """

    folder: Path
    card: ModelCard
    target: Target
    predict: Callable[[Any], np.ndarray]
    network: Any = None
    device: Any = None

    def probabilities(self, inputs: Any) -> np.ndarray:
        """N × ``target.outputs`` probabilities (per head for several heads, per label for multi-label)."""
        return np.asarray(self.predict(inputs))


def load_model(folder: Path | str, device: str = "auto") -> LoadedModel:
    """The model in ``folder``, as its card describes; an unfinished or unreadable folder is one clear error.

    Torch is imported for CNNs only: the scikit-learn kinds load without it.
    """
    folder = Path(folder)
    card = read_card(folder)  # refuses a folder whose training did not finish
    target = card_target(card)
    if card.kind == "cnn":
        from bps.models.inference import pick_device, predict_proba
        from bps.models.networks import load_checkpoint

        torch_device = pick_device(device)
        network, _ = load_checkpoint(folder, torch_device)
        tta = bool(card.training.get("tta", False))  # train.tta; cards from before it have none
        return LoadedModel(folder, card, target, lambda images: predict_proba(
            network, images, torch_device, target.head_sizes, target.multilabel, tta), network, torch_device)
    estimator = sklearn_io.load(folder)
    if card.kind == "fusion":
        cnn = load_model(folder / FUSION_CNN, device)
        return LoadedModel(folder, card, target, lambda inputs: target.marginals(sklearn_io.class_probabilities(
            estimator, fusion_inputs(cnn, *inputs), len(target.classes))))
    if card.kind == "mlp":
        return LoadedModel(folder, card, target, lambda images: target.marginals(
            estimator.predict_proba(pixel_mlp.flatten(images))))
    return LoadedModel(folder, card, target, lambda features: target.marginals(
        sklearn_io.class_probabilities(estimator, np.asarray(features), len(target.classes))))


def fusion_inputs(cnn: LoadedModel, images: np.ndarray, foci: np.ndarray) -> np.ndarray:
    """What a fusion model reads: the foci features, then the CNN's :func:`~bps.models.inference.embed`."""
    from bps.models.inference import embed

    return np.hstack([np.asarray(foci, dtype=np.float64), embed(cnn.network, images, cnn.device)])
