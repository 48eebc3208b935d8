"""Predictions for new images from a trained model folder, with the model's own preprocessing.

A model folder (``models/lenet``, ``models/baseline``) carries its model card (``model.json``,
:mod:`bps.models.card`) with its kind and the preprocessing settings it was trained with, so
predictions never depend on today's ``params.yaml``.

A model trained on a layout (``data.source: layout``) takes one file per channel for each
sample, in the card's channel order (``channels``), each normalised on its own as in training
(bps/data/layouts/channels.py). A multi-label model predicts every label whose probability reaches its
threshold (the card's ``thresholds``, chosen on the validation split); ``predicted`` lists them
separated by spaces (empty when none does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from bps.classical.features import model_input
from bps.core import options
from bps.core.errors import PipelineError
from bps.data.images import MAX_SIDE, prepare_image, read_tiff, tiff_size
from bps.data.layouts.channels import channel_size, read_sample
from bps.models.card import read_card
from bps.models.loader import card_target, load_model
from bps.targets.multilabel import predict as over_thresholds

TIFF_SUFFIXES = (".tif", ".tiff")


class Predictor:
    """A trained model and the exact preprocessing it expects."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        card = read_card(self.folder)  # refuses a folder whose training did not finish
        if card.kind in ("classical", "fusion"):
            raise PipelineError(f"{self.folder}: a model of features from the whole-resolution crop (evaluate scores "
                                "it); predict takes models/lenet or models/baseline")
        self.card, self.target = card, card_target(card)
        self.layout = card.target == options.LAYOUT_TARGET
        self.classes = list(self.target.outputs)  # the probability columns: per head for particle+dose
        self.preprocess = card.preprocess
        self.architecture = card.architecture
        self.channels = card.channels or ["image"]  # the files one sample takes, in order
        made = 1 + bool(self.preprocess and self.preprocess.foci_channel)  # the image, and the foci channel
        if not self.layout and card.in_channels != made:
            raise PipelineError(f"{self.folder}: this model takes {card.in_channels} channels; its preprocessing "
                                f"makes {made} from a BPS TIFF")
        try:
            self.model = load_model(self.folder)
        except PipelineError:
            raise
        except Exception as error:  # missing or corrupt weights, torch errors...
            raise PipelineError(f"{self.folder}: cannot load the model ({type(error).__name__}: {error})") from None

    def prepare_sample(self, sources: Sequence[Path | BinaryIO], names: Sequence[str] | None = None,
                       max_side: int = MAX_SIDE) -> np.ndarray:
        """One sample's files (paths or open binary files) → the model's C×size×size uint8 input: a
        BPS TIFF, or a layout sample's channel files (PNG or TIFF of the card's bit depth, one size)."""
        if self.layout:
            images = read_sample(sources, self.card.bit_depth, names, max_side)
            return np.stack([prepare_image(image, self.preprocess) for image in images])
        labels = names if names is not None else [None] * len(sources)
        images = [read_tiff(source, name, max_side) for source, name in zip(sources, labels)]
        return np.concatenate([model_input(image, self.preprocess) for image in images])

    def declared_pixels(self, sources: Sequence[Path | BinaryIO], names: Sequence[str],
                        max_side: int = MAX_SIDE) -> int:
        """The pixels the files' headers declare, in total, read before any is decoded: what
        decoding them would cost (a few bytes of PNG or TIFF can declare a megapixel)."""
        size = channel_size if self.layout else tiff_size
        return sum(math.prod(size(source, name, max_side)) for source, name in zip(sources, names))

    def prepare(self, source: Path | str | BinaryIO, name: str | None = None, max_side: int = MAX_SIDE) -> np.ndarray:
        """One TIFF (path or open binary file) → the model's C×size×size uint8 input (2 channels with the foci one)."""
        return self.prepare_sample([source], None if name is None else [name], max_side)

    def samples(self, names: list[str]) -> list[list[int]]:
        """The files (by index) of each sample: one each for BPS, else consecutive groups of as many
        as the model has channels. A count that does not divide is refused, naming the files."""
        size = len(self.channels)
        if len(names) % size:
            raise PipelineError(
                f"{self.folder} takes {size} files per sample, one per channel in this order: "
                f"{', '.join(self.channels)}; got {len(names)} ({', '.join(names)})"
            )
        return [list(range(start, start + size)) for start in range(0, len(names), size)]

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for N×C×size×size uint8 inputs."""
        return self.model.probabilities(images)

    def predicted(self, proba: np.ndarray) -> list[str]:
        """The predicted class of every row; for several heads the joint class (``Fe 0.3 Gy``); for a
        multi-label model its labels over their thresholds, space-separated."""
        if self.target.multilabel:
            chosen = over_thresholds(proba, np.asarray(self.card.thresholds))
            return [" ".join(np.array(self.classes)[row.astype(bool)]) for row in chosen]
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
        """Predict every file (a layout model: every group of channel files), with a progress bar;
        a bad file stops with its name."""
        groups = self.samples([str(path) for path in paths])
        with tqdm(groups, desc="prepare", unit="sample") as progress:  # closed on a bad file too
            inputs = np.stack([self.prepare_sample([paths[index] for index in group]) for group in progress])
        names = [" ".join(str(paths[index]) for index in group) for group in groups]
        return self.table(names, self.predict_proba(inputs))


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
