"""Predictions for new images from a trained model folder, with the model's own preprocessing.

A model folder (``models/lenet``, ``models/baseline``) carries its model card (``model.json``,
:mod:`bps.model_card`) with its kind and the preprocessing settings it was trained with, so
predictions never depend on today's ``params.yaml``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from bps import baseline
from bps.errors import PipelineError
from bps.images import MAX_SIDE, prepare_image, read_tiff
from bps.labels import get_target
from bps.model_card import read_card

TIFF_SUFFIXES = (".tif", ".tiff")


class Predictor:
    """A trained model and the exact preprocessing it expects."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.card = read_card(self.folder)  # refuses a folder whose training did not finish
        if self.card.kind == "classical":
            raise PipelineError(f"{self.folder}: a classical feature model (evaluate scores it); predict takes "
                                "models/lenet or models/baseline")
        self.target = get_target(self.card.target)
        self.classes = list(self.target.outputs)  # the probability columns: per head for particle+dose
        self.preprocess = self.card.preprocess
        self.architecture = self.card.architecture
        if self.card.in_channels != 1:
            raise PipelineError(f"{self.folder}: this model takes {self.card.in_channels} channels; BPS TIFFs have one")
        try:
            self._proba = self._load_model()
        except PipelineError:
            raise
        except Exception as error:  # missing or corrupt weights, torch errors...
            raise PipelineError(f"{self.folder}: cannot load the model ({type(error).__name__}: {error})") from None

    def _load_model(self):
        """A function from N×1×size×size uint8 inputs to class probabilities."""
        if self.card.kind == "mlp":
            pipeline = baseline.load(self.folder)
            return lambda images: self.target.marginals(pipeline.predict_proba(baseline.flatten(images)))
        from bps.models import load_checkpoint  # torch only for the CNN models
        from bps.training import pick_device, predict_proba

        device = pick_device("auto")
        model, _ = load_checkpoint(self.folder, device)
        return lambda images: predict_proba(model, images, device, self.target.head_sizes)

    def prepare(self, source: Path | str | BinaryIO, name: str | None = None, max_side: int = MAX_SIDE) -> np.ndarray:
        """One TIFF (path or open binary file) → the model's 1×size×size uint8 input."""
        return prepare_image(read_tiff(source, name, max_side), self.preprocess)[None]

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for N×1×size×size uint8 inputs."""
        return np.asarray(self._proba(images))

    def predicted(self, proba: np.ndarray) -> list[str]:
        """The predicted class of every row; for several heads the joint class (``Fe 0.3 Gy``)."""
        if len(self.target.heads) == 1:
            return [self.classes[index] for index in proba.argmax(axis=1)]
        return [self.target.classes[index] for index in self.target.predict(proba)]

    def table(self, names: list[str], proba: np.ndarray) -> pd.DataFrame:
        """One row per image: its name, predicted class (and each head's) and every output's probability."""
        result = pd.DataFrame({"file": names, "predicted": self.predicted(proba)})
        if len(self.target.heads) > 1:
            for head, block in zip(self.target.heads, self.target.split(proba)):
                result[f"predicted_{head.name}"] = np.array(head.classes)[block.argmax(axis=1)]
        for index, name in enumerate(self.classes):
            result[f"p_{name}"] = proba[:, index]
        return result

    def predict_files(self, paths: list[Path]) -> pd.DataFrame:
        """Predict every file, with a progress bar; a bad file stops with its name."""
        with tqdm(paths, desc="prepare", unit="img") as progress:  # closed on a bad file too
            inputs = np.stack([self.prepare(path) for path in progress])
        return self.table([str(path) for path in paths], self.predict_proba(inputs))


def find_tiffs(sources: Iterable[Path | str]) -> list[Path]:
    """Files as given, and every TIFF under each folder, sorted."""
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found += sorted(p for p in source.rglob("*") if p.suffix.lower() in TIFF_SUFFIXES)
        elif source.is_file():
            found.append(source)
        else:
            raise PipelineError(f"{source}: no such file or folder")
    if not found:
        raise PipelineError("no TIFF files found in the given paths")
    return found
