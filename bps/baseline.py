"""The study's baseline: a scikit-learn MLP on standardised, flattened pixels.

Saved with skops, whose loader only rebuilds an allow-list of types, instead of a pickle
that would run whatever code a shared file contains.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

from bps.files import atomic_open
from bps.model_card import ModelCard, write_card
from bps.params import BaselineParams

MODEL_FILE = "model.skops"


def flatten(images: np.ndarray) -> np.ndarray:
    """N×C×H×W uint8 → N×(C·H·W) float32 in 0-1."""
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def make_mlp(params: BaselineParams) -> MLPClassifier:
    return MLPClassifier(
        hidden_layer_sizes=tuple(params.hidden_layers),
        learning_rate_init=params.lr,
        batch_size=params.batch_size,
        solver="adam",
        random_state=params.seed,
    )


def fit_epoch(mlp: MLPClassifier, features: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> None:
    """One shuffled pass of mini-batch Adam over the training set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.partial_fit(features, labels, classes=classes)


def save(folder: Path, pipeline: Pipeline, card: ModelCard) -> None:
    """Write the scaler + MLP pipeline atomically in skops format, then its model card."""
    with atomic_open(folder / MODEL_FILE) as stream:
        sio.dump(pipeline, stream)
    write_card(folder, card)


def load(folder: Path) -> Pipeline:
    """Load a saved baseline, refusing any type outside scikit-learn's and numpy's."""
    path = folder / MODEL_FILE
    unknown = [name for name in sio.get_untrusted_types(file=path) if not name.startswith(("sklearn.", "numpy."))]
    if unknown:
        raise ValueError(f"{path}: refusing to load unexpected types {unknown}")
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))

