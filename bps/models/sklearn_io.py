"""scikit-learn models on disk in skops format: the same bytes for the same model, and no code run on load.

skops's loader only rebuilds the types it is told to trust, instead of a pickle that would run
whatever code a shared file contains. What this project trusts is :data:`ALLOWED_TYPES`, exactly
the types its own models record, never a module prefix: ``numpy.`` alone covers
``numpy.testing._private.utils.runstring``, which ``exec``s a string that a crafted file supplies.
Used for the MLP baseline and the classical feature models.
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

from bps.core.errors import PipelineError
from bps.core.files import atomic_open
from bps.models.card import ModelCard, write_card

MODEL_FILE = "model.skops"

# Every type recorded in the schema of a model this project saves, and nothing else. Derived by
# fitting and saving each one (scikit-learn 1.9, skops 0.16): the MLP baseline (StandardScaler +
# MLPClassifier in a Pipeline; binary, multi-class, and multi-label through partial_fit) and the
# classical families (HistGradientBoostingClassifier; StandardScaler + LogisticRegression in a
# Pipeline; binary and multi-class), then collecting each schema node's ``__module__.__class__``
# (:func:`schema_types`). ``skops.io.get_untrusted_types`` on those files names only
# ``sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor`` and
# ``sklearn.neural_network._stochastic_optimizers.AdamOptimizer``; skops trusts the rest by
# default, and this list narrows its defaults as well. The numpy scalar types are those skops
# records for arrays and scalars of the dtypes scikit-learn keeps (floats, integer labels, masks).
ALLOWED_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.str", "builtins.tuple",
    "numpy.dtype", "numpy.ndarray", "numpy.bool", "numpy.float32", "numpy.float64",
    "numpy.int32", "numpy.int64", "numpy.uint8", "numpy.uint64",
    "numpy.random._generator.Generator", "numpy.random.mtrand.RandomState",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss.link.Interval", "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._label.LabelBinarizer", "sklearn.preprocessing._label.LabelEncoder",
})
JSON_LOADER = "JsonNode"  # plain JSON values: json.loads, no type is looked up


class UntrustedModelError(PipelineError, ValueError):
    """A model file names a type outside :data:`ALLOWED_TYPES`."""
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
    """Write a fitted scikit-learn model (the MLP, a classical model) atomically in skops format, then its card."""
    sio = _skops_io()
    with atomic_open(folder / MODEL_FILE) as stream:
        stream.write(_reproducible(sio.dumps(pipeline)))
    write_card(folder, card)


def schema_types(node: object) -> set[str]:
    """Every ``module.class`` a skops schema names (JSON values aside): what loading it would look up."""
    if isinstance(node, list):
        return set().union(*map(schema_types, node))
    if not isinstance(node, dict):
        return set()
    found = set().union(*map(schema_types, node.values()))
    if "__loader__" in node and node["__loader__"] != JSON_LOADER:
        found.add(f"{node.get('__module__')}.{node.get('__class__')}")
    return found


def load(folder: Path) -> ClassifierMixin:
    """Load a saved model, refusing (before anything is built) any type outside :data:`ALLOWED_TYPES`."""
    sio = _skops_io()
    path = folder / MODEL_FILE
    try:
        with zipfile.ZipFile(path) as archive:
            named = schema_types(json.loads(archive.read(SCHEMA_FILE)))
        untrusted = set(sio.get_untrusted_types(file=path))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise UntrustedModelError(f"{path}: not a readable skops model ({type(error).__name__}: {error})") from None
    refused = sorted((named | untrusted) - ALLOWED_TYPES)
    if refused:
        raise UntrustedModelError(f"{path}: refusing to load type {refused[0]} (not one this project saves)")
    return sio.load(path, trusted=sorted(untrusted))


def class_probabilities(estimator: ClassifierMixin, features: np.ndarray, n_classes: int) -> np.ndarray:
    """N × ``n_classes`` probabilities, column k for class index k: a class the estimator never saw
    in training (a split too small to hold it) gets probability 0 instead of shifting the columns."""
    proba = np.zeros((len(features), n_classes))
    if len(features):
        proba[:, estimator.classes_] = estimator.predict_proba(features)
    return proba
