"""scikit-learn models on disk in skops format: the same bytes for the same model, and no code run on load.

skops's loader only rebuilds an allow-list of types, instead of a pickle that would run whatever
code a shared file contains. Used for the MLP baseline and the classical feature models.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from importlib.abc import MetaPathFinder
from pathlib import Path
from types import ModuleType

import numpy as np
from sklearn.base import ClassifierMixin

from bps.core.files import atomic_open
from bps.models.card import ModelCard, write_card

MODEL_FILE = "model.skops"
SCHEMA_FILE = "schema.json"  # skops's description of the objects; arrays are files beside it
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every zip entry's time stamp (see _reproducible)


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


class _NoTorch(MetaPathFinder):
    """Makes ``import torch`` fail while it is on ``sys.meta_path``."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"torch is not imported by scikit-learn stages: {name}", name=name)


def _skops_io() -> ModuleType:
    """``skops.io``, imported without torch (~500 MB, seconds of start-up) in a process that has none.

    skops lists its trusted types with scikit-learn's ``all_estimators``, whose package walk imports
    ``sklearn.externals.array_api_compat.torch``, which imports torch when it is installed. The walk
    skips a package that fails to import, and that package lists no estimator, so the trusted types
    are the same without it. Imported here, not at the top, so that modules importing this one stay light.
    """
    if "skops.io" in sys.modules or "torch" in sys.modules:
        import skops.io

        return skops.io
    blocker = _NoTorch()
    sys.meta_path.insert(0, blocker)
    try:
        import skops.io
    finally:
        sys.meta_path.remove(blocker)
    return skops.io


def save(folder: Path, pipeline: ClassifierMixin, card: ModelCard) -> None:
    """Write a fitted scikit-learn model (the MLP pipeline, a classical model) atomically in skops format, then its card."""
    sio = _skops_io()
    with atomic_open(folder / MODEL_FILE) as stream:
        stream.write(_reproducible(sio.dumps(pipeline)))
    write_card(folder, card)


def load(folder: Path) -> ClassifierMixin:
    """Load a saved scikit-learn model, refusing any type outside scikit-learn's and numpy's."""
    sio = _skops_io()
    path = folder / MODEL_FILE
    unknown = [name for name in sio.get_untrusted_types(file=path) if not name.startswith(("sklearn.", "numpy."))]
    if unknown:
        raise ValueError(f"{path}: refusing to load unexpected types {unknown}")
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))


def class_probabilities(estimator: ClassifierMixin, features: np.ndarray, n_classes: int) -> np.ndarray:
    """N × ``n_classes`` probabilities, column k for class index k: a class the estimator never saw
    in training (a split too small to hold it) gets probability 0 instead of shifting the columns."""
    proba = np.zeros((len(features), n_classes))
    if len(features):
        proba[:, estimator.classes_] = estimator.predict_proba(features)
    return proba
