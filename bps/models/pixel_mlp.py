"""The study's baseline: a scikit-learn MLP on standardised, flattened pixels (saved by bps/models/sklearn_io.py)."""

from __future__ import annotations

import mmap
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from bps.core.params import BaselineParams

# Rows converted at a time: 2048 rows of 64×64 pixels are 32 MiB as float32, 64 MiB as float64.
CHUNK_ROWS = 2048


def flatten(images: np.ndarray) -> np.ndarray:
    """N×C×H×W uint8 → N×(C·H·W) float32 in 0-1."""
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def _chunks(images: np.ndarray):
    """Float32 0-1 pixels of consecutive row blocks: the uint8 array is never converted at once.

    A memory map's pages are dropped from this process once read (the page cache keeps them):
    otherwise the whole split's file would count in the stage's memory beside its features.
    """
    mapping = getattr(images, "_mmap", None)
    for start in range(0, len(images), CHUNK_ROWS):
        yield start, flatten(images[start : start + CHUNK_ROWS])
        if mapping is not None:
            mapping.madvise(mmap.MADV_DONTNEED)


def fit_scaler(images: np.ndarray) -> StandardScaler:
    """Per-pixel mean and variance accumulated block by block.

    ``StandardScaler.fit`` on the whole split held a float32 copy plus float64 temporaries of
    it (3.9 GB at full size); ``partial_fit`` over blocks needs one block's worth. The float64
    pixel sums are exact in any order, so the means are the same; the variances may differ in
    their last bits, which almost never moves a float32 feature (see README, Scaling out).
    """
    scaler = StandardScaler()
    for _, block in _chunks(images):
        scaler.partial_fit(block)
    return scaler


def standardize(images: np.ndarray, scaler: StandardScaler) -> np.ndarray:
    """The float32 features ``scaler.transform(flatten(images))`` would give, built block by block."""
    features = np.empty((len(images), int(np.prod(images.shape[1:]))), dtype=np.float32)
    for start, block in _chunks(images):
        features[start : start + len(block)] = scaler.transform(block)
    return features


def make_mlp(params: BaselineParams) -> MLPClassifier:
    return MLPClassifier(
        hidden_layer_sizes=tuple(params.hidden_layers),
        learning_rate_init=params.lr,
        batch_size=params.batch_size,
        solver="adam",
        random_state=params.seed,
    )


def fit_epoch(mlp: MLPClassifier, features: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> None:
    """One shuffled pass of mini-batch Adam over the training set.

    Multi-label ``labels`` (an N×L indicator matrix) train one sigmoid per label, and ``classes``
    must then be ``np.arange(L)``: partial_fit demands them on its first call but takes the
    outputs from the matrix's columns, so other values fail later or, wider, leave ``classes_``
    longer than the outputs without a word.
    """
    if labels.ndim == 2 and not np.array_equal(classes, np.arange(labels.shape[1])):
        raise ValueError(f"multi-label classes must be 0..{labels.shape[1] - 1} (one per column), got {list(classes)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.partial_fit(features, labels, classes=classes)
