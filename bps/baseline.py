"""The study's baseline: a scikit-learn MLP on standardised, flattened pixels.

Saved with skops, whose loader only rebuilds an allow-list of types, instead of a pickle
that would run whatever code a shared file contains.
"""

from __future__ import annotations

import io
import json
import mmap
import warnings
import zipfile
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bps.files import atomic_open
from bps.model_card import ModelCard, write_card
from bps.params import BaselineParams

MODEL_FILE = "model.skops"
SCHEMA_FILE = "schema.json"  # skops's description of the objects; arrays are files beside it
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every zip entry's time stamp (see _reproducible)
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


def _reproducible(archive: bytes) -> bytes:
    """A skops archive whose bytes depend on the model alone.

    skops names every object by its ``id()`` (a memory address, new in every process), in its
    schema and in the names of its array files, and stamps each zip entry with the time of
    saving: the same model saved twice would be other bytes, and a re-run would record a new model
    in dvc.lock. Here ids are renumbered in the order they appear (objects that shared one still
    do) and every entry is stamped ZIP_TIME.
    """
    numbers: dict[int, int] = {}

    def renumber(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                renumber(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "__id__":
                    node[key] = numbers.setdefault(value, len(numbers))
                elif key == "file":
                    node[key] = _renamed(value, numbers)
                else:
                    renumber(value)

    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(packed, "w") as target:
        schema = json.loads(source.read(SCHEMA_FILE))
        renumber(schema)
        for entry in source.infolist():
            is_schema = entry.filename == SCHEMA_FILE
            fixed = zipfile.ZipInfo(entry.filename if is_schema else _renamed(entry.filename, numbers), ZIP_TIME)
            fixed.compress_type, fixed.external_attr = entry.compress_type, entry.external_attr
            target.writestr(fixed, json.dumps(schema, indent=2).encode() if is_schema else source.read(entry))
    return packed.getvalue()


def _renamed(filename: str, numbers: dict[int, int]) -> str:
    """``<id>.npy`` → ``<its number>.npy`` (an id with no number yet gets the next one)."""
    stem, dot, suffix = filename.partition(".")
    return f"{numbers.setdefault(int(stem), len(numbers))}{dot}{suffix}"


def save(folder: Path, pipeline: Pipeline, card: ModelCard) -> None:
    """Write the scaler + MLP pipeline atomically in skops format, then its model card."""
    import skops.io as sio  # here, not at the top: it imports torch (~500 MB) through its trusted types

    with atomic_open(folder / MODEL_FILE) as stream:
        stream.write(_reproducible(sio.dumps(pipeline)))
    write_card(folder, card)


def load(folder: Path) -> Pipeline:
    """Load a saved baseline, refusing any type outside scikit-learn's and numpy's."""
    import skops.io as sio

    path = folder / MODEL_FILE
    unknown = [name for name in sio.get_untrusted_types(file=path) if not name.startswith(("sklearn.", "numpy."))]
    if unknown:
        raise ValueError(f"{path}: refusing to load unexpected types {unknown}")
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))

