"""The negative control: the same model family trained to tell Fe-sham from X-ray-sham nuclei.

No sham nucleus was irradiated, so its particle label is a property of the plate it sits on
(an experiment batch with its own well layout, staining and focus), never of the nucleus. A
control trained on training-split sham images and scored on test-split sham images can only
beat chance by recognising plates; its balanced accuracy above 0.5 measures the plate signal
("leakage") that every model of the family can exploit under the same split protocol.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bps.errors import PipelineError
from bps.labels import Target, get_target
from bps.metrics import is_sham
from bps.prepared import load_split

CONTROL_TARGET = "particle"
SUFFIX = "-control"


def control_name(model: str) -> str:
    """The folder (under models/ and metrics/) of a model's negative control."""
    return f"{model}{SUFFIX}"


def output_name(model: str, control: bool) -> str:
    """The folder a training stage writes: the model's own, or its control's."""
    return control_name(model) if control else model


def sham_only(images: np.ndarray, table: pd.DataFrame, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """The sham (dose 0) images of a split and their rows.

    Training and scoring need both particles' shams; validation (which only picks the kept
    epoch) needs some sham images, since a small protocol such as leave_wells_out can leave one
    particle's shams out of it.
    """
    keep = is_sham(table)
    particles = set(table.loc[keep, "particle_type"])
    if (split == "val" and not particles) or (split != "val" and particles != {"Fe", "X-ray"}):
        raise PipelineError(
            f"negative control: the {split} split has sham images of {sorted(particles) or 'no particle'}; "
            "it needs Fe and X-ray sham images in train and test, and some in val"
        )
    return np.asarray(images[np.flatnonzero(keep)]), table[keep].reset_index(drop=True)


@dataclass(frozen=True)
class TrainingData:
    """What a training stage learns from and where it writes: the model itself, or its control."""

    name: str  # folder under models/ and metrics/
    target: Target
    control: bool

    def load(self, split: str) -> tuple[np.ndarray, pd.DataFrame]:
        images, table = load_split(split)
        return sham_only(images, table, split) if self.control else (images, table)


def training_data(model: str, target_name: str, control: bool) -> TrainingData:
    """The model ``model`` on ``task.target``, or (``control``) its particle-on-shams control."""
    return TrainingData(output_name(model, control), get_target(CONTROL_TARGET if control else target_name), control)


def control_requested(argv: list[str] | None = None) -> bool:
    """Parse a training stage's command line: ``--control`` trains the negative control."""
    parser = argparse.ArgumentParser(description="Train the model, or with --control its negative control.")
    parser.add_argument("--control", action="store_true",
                        help="train on sham images only, to tell Fe-sham from X-ray-sham (the plate signal)")
    return parser.parse_args(argv).control
