"""The negative control: the same model family trained to tell Fe-sham from X-ray-sham nuclei.

No sham nucleus was irradiated, so its particle label is a property of the plate it sits on
(an experiment batch with its own well layout, staining and focus), never of the nucleus. A
control trained on some sham images and scored on held-out sham images can only beat chance by
recognising plates; its balanced accuracy above 0.5 measures the plate signal ("leakage") that
every model of the family can exploit under the same split protocol.

Which shams are held out follows the protocol. Under ``grouped`` and ``leave_wells_out`` the
control trains on the training split's shams and is scored on the test split's. Under
``leave_hour_out`` the test split holds just one sham plate per particle, so a score there
is two coin flips (one per plate), not a measurement: the control is cross-validated over hours
instead. Each hour's sham plates are held out in turn, the model is trained on the other hours'
shams (the val split's shams validate), and the held-out predictions of every fold are pooled.
All sham plates are then scored, each by a model that never saw it. The first fold is always
the split's own (trained on its training split): its model is the one kept in
models/<name>-control; the others go to models/<name>-control/hour-<h>/.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from bps.core.errors import PipelineError
from bps.core.files import write_csv
from bps.core.params import Params, SplitParams
from bps.core.paths import MODELS, SPLITS, control_name
from bps.data.arrays import load_split
from bps.targets.labels import EVEN_ODDS, Target, get_target, task_target
from bps.targets.metrics import is_sham

CONTROL_TARGET = "particle"
HELD_OUT_FILE = "held_out.csv"  # every fold's predictions for the shams it held out
# What a role is played by in the split's own fold.
ROLE_SPLITS = {"train": "train", "val": "val", "held_out": "test"}
HELD_OUT_COLUMNS = ["filename", "plate", "well", "particle_type", "dose_Gy", "hr_post_exposure"]


def output_name(model: str, control: bool) -> str:
    """The folder a training stage guards: the model's own, or its control's."""
    return control_name(model) if control else model


@dataclass(frozen=True)
class Fold:
    """Which sham images one control model trains on, validates on and is scored on.

    ``held_out_hour`` None: the split's own train, val and test shams. An hour: every split's
    shams of that hour are held out; of the other hours', the val split's validate (or, when there
    are none, the training ones) and the rest train.
    """

    held_out_hour: int | None = None

    @property
    def name(self) -> str:
        return "split" if self.held_out_hour is None else f"hour-{self.held_out_hour}"

    def mask(self, pool: pd.DataFrame, role: str) -> np.ndarray:
        """The rows of ``pool`` (sham rows with a ``split`` column) that play ``role`` in this fold."""
        split = pool["split"].to_numpy()
        if self.held_out_hour is None:
            return split == ROLE_SPLITS[role]
        held = pool["hr_post_exposure"].to_numpy() == self.held_out_hour
        train, val = ~held & (split != "val"), ~held & (split == "val")
        if role == "val" and not val.any():  # e.g. data.hours [4, 24], test 24: fold 4 has no val shams left
            return train  # the kept epoch is then picked on the training shams; the held-out score stays honest
        return {"train": train, "val": val, "held_out": held}[role]


def control_folds(split: SplitParams, hours: list[int]) -> list[Fold]:
    """The split's own fold first; under leave_hour_out, one fold per hour (the test hour first)."""
    if split.protocol != "leave_hour_out":
        return [Fold()]
    return [Fold(hour) for hour in sorted(sorted(set(hours)), key=lambda hour: hour != split.test_hour)]


def sham_pool(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every split's sham rows, in split order, with ``split`` and ``row`` (the row within its split)."""
    shams = [table[is_sham(table)].assign(split=split, row=np.flatnonzero(is_sham(table)))
             for split, table in tables.items()]
    return pd.concat(shams, ignore_index=True)


def check_particles(table: pd.DataFrame, role: str, fold: Fold) -> None:
    """Training needs both particles' shams; validation (which only picks the kept epoch) some."""
    particles = set(table["particle_type"])
    if (role == "val" and not particles) or (role == "train" and particles != {"Fe", "X-ray"}):
        raise PipelineError(
            f"negative control: the {role} images of fold {fold.name} include shams of "
            f"{sorted(particles) or 'no particle'}; training needs Fe and X-ray sham images, validation some"
        )


def _image_pool() -> tuple[np.ndarray, pd.DataFrame]:
    """Every split's sham images (memory-mapped arrays: only the shams are read) and their rows."""
    loaded = {split: load_split(split) for split in SPLITS}
    pool = sham_pool({split: table for split, (_, table) in loaded.items()})
    images = np.concatenate([np.asarray(loaded[split][0][pool["row"][pool["split"] == split].to_numpy()])
                             for split in SPLITS])
    return images, pool


@dataclass(frozen=True)
class TrainingData:
    """What one training run learns from and where it writes: the model itself, or a control fold."""

    name: str  # folder under models/ and metrics/
    target: Target
    fold: Fold | None = None  # a negative control's fold; None: the model on its split
    primary: bool = True  # the folder the stage's lock guards (a control's other folds: False)
    shams: str = "include"  # the model's own run: train.shams (a control learns from shams alone)
    # Every split's sham images and rows; training_runs shares one cached loader among a stage's folds.
    sham_images: Callable[[], tuple[np.ndarray, pd.DataFrame]] = field(default=_image_pool, compare=False, repr=False)

    @property
    def control(self) -> bool:
        return self.fold is not None

    def load(self, role: str) -> tuple[np.ndarray, pd.DataFrame]:
        """The images and rows playing ``role`` (train, val or held_out)."""
        if self.fold is None:
            return load_training_split(ROLE_SPLITS[role], self.shams)
        images, pool = self.sham_images()
        keep = np.flatnonzero(self.fold.mask(pool, role))
        return images[keep], self.rows(pool, role)

    def rows(self, pool: pd.DataFrame, role: str) -> pd.DataFrame:
        """The rows of a control's ``pool`` (see :func:`sham_pool`) that play ``role`` in its fold."""
        table = pool[self.fold.mask(pool, role)].reset_index(drop=True)
        check_particles(table, role, self.fold)
        return table


def load_training_split(split: str, shams: str = "include") -> tuple[np.ndarray, pd.DataFrame]:
    """A split's images and rows as a model learns from them: ``shams`` ``exclude`` leaves the sham
    nuclei out (read into memory; the rest stay memory-mapped when nothing is left out), and so does
    ``uniform`` outside the training split: a sham's batch label would reward the plate reading there."""
    images, table = load_split(split)
    if shams == "include" or (shams == "uniform" and split == "train"):
        return images, table
    keep = ~is_sham(table)
    return np.asarray(images[keep]), table[keep].reset_index(drop=True)


def training_labels(target: Target, table: pd.DataFrame, shams: str = "include") -> np.ndarray:
    """The labels a model learns ``table``'s images by: under ``shams`` ``uniform`` a sham's is
    EVEN_ODDS, as nothing in an unirradiated nucleus shows its particle."""
    labels = target.encode(table)
    return np.where(is_sham(table), EVEN_ODDS, labels) if shams == "uniform" else labels


def training_runs(model: str, params: Params, control: bool, shams: str = "include") -> list[TrainingData]:
    """The model ``model`` on ``task.target`` (``shams``: see :func:`load_training_split`), or
    (``control``) one particle-on-shams run per fold."""
    if not control:
        return [TrainingData(model, task_target(params), shams=shams)]
    folds = control_folds(params.split, params.data.hours)
    name = control_name(model)
    pool = cache(_image_pool)  # read once for all folds, and only if a fold loads images
    return [TrainingData(name if index == 0 else f"{name}/{fold.name}", get_target(CONTROL_TARGET), fold, index == 0,
                         sham_images=pool) for index, fold in enumerate(folds)]


def held_out_predictions(run: TrainingData, table: pd.DataFrame, proba: np.ndarray) -> pd.DataFrame:
    """A control fold's held-out rows with its probabilities (``p_Fe``, ``p_X-ray``)."""
    proba = np.asarray(proba).reshape(len(table), len(run.target.classes))  # (0, 0) when nothing is held out
    columns = {f"p_{name}": proba[:, index] for index, name in enumerate(run.target.classes)}
    return table[HELD_OUT_COLUMNS].assign(fold=run.fold.name, **columns)


def write_held_out(model: str, predictions: list[pd.DataFrame]) -> None:
    """Pool every fold's held-out predictions in models/<model>-control/held_out.csv."""
    write_csv(MODELS / control_name(model) / HELD_OUT_FILE, pd.concat(predictions, ignore_index=True))


def read_held_out(folder: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """A control's pooled held-out rows and their (Fe, X-ray) probabilities."""
    table = pd.read_csv(folder / HELD_OUT_FILE)
    classes = get_target(CONTROL_TARGET).classes
    return table, table[[f"p_{name}" for name in classes]].to_numpy()


def control_requested(argv: list[str] | None = None) -> bool:
    """Parse a training stage's command line: ``--control`` trains the negative control."""
    parser = argparse.ArgumentParser(description="Train the model, or with --control its negative control.")
    parser.add_argument("--control", action="store_true",
                        help="train on sham images only, to tell Fe-sham from X-ray-sham (the plate signal)")
    return parser.parse_args(argv).control
