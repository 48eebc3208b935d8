"""Which models evaluate scores, what each is fed, and how a negative control is scored.

A model is read through :func:`bps.models.loader.load_model`, so evaluate treats the MLP, the
CNN and the classical feature models alike; only their inputs differ (prepared images, or the
test split's rows of data/features/test.csv).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bps.classical.families import read_features
from bps.classical.features import family_columns
from bps.core.errors import PipelineError
from bps.core.params import EvaluateParams, Params
from bps.evaluation.intervals import GroupedBootstrap
from bps.evaluation.scores import control_scores, cross_validated_control_scores
from bps.models.card import ModelCard
from bps.models.loader import LoadedModel
from bps.targets.labels import get_target
from bps.training.negative_control import CONTROL_TARGET, read_held_out


@dataclass(frozen=True)
class ScoredModel:
    """A model that evaluate scores: ``name`` is its key in evaluate.json and its folder under
    models/; with ``control``, models/<name>-control holds its negative control and the
    predictions it made for the sham images it held out (bps/training/negative_control.py)."""

    name: str
    label: str
    control: bool = True
    members: tuple[str, ...] = ()  # a soft vote: the mean of these models' probabilities (and of their controls')


def scored_models(params: Params) -> list[ScoredModel]:
    """Every model evaluate scores, in table order. Adding one is one line here (and its stages in dvc.yaml).

    On a layout only the image models: the controls and the classical baselines are BPS-only.
    """
    if params.data.source == "layout":
        return [ScoredModel("baseline", "MLP baseline", control=False), ScoredModel("lenet", cnn_label(params), False)]
    return [
        ScoredModel("baseline", "MLP baseline"),
        ScoredModel("lenet", cnn_label(params)),
        ScoredModel("appearance", "appearance only (no foci)"),
        ScoredModel("foci", "foci count"),
        # The soft vote, nothing trained: each member reads what the other misses (docs/science.md).
        ScoredModel("hybrid", f"{cnn_label(params)} + foci count", members=("lenet", "foci")),
        # Fusion, fitted: one regression on both models' inputs (bps/classical/families.py).
        ScoredModel("fusion", f"foci count + {cnn_label(params)} features"),
    ]


def cnn_label(params: Params) -> str:
    return "LeNet-5" if params.train.model == "lenet" else params.train.model


def check_target(folder: Path, card: ModelCard, target: str) -> None:
    """Refuse to score a model trained for another target (e.g. after editing params by hand)."""
    if card.target != target:
        raise PipelineError(f"{folder} was trained for {card.target!r} but evaluate expects {target!r}")


def model_inputs(model: LoadedModel, images: np.ndarray, table: pd.DataFrame
                 ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """What ``model`` reads for the test rows ``table``: the prepared images, its family's features, or
    (fusion) both: the images and the foci features."""
    if model.card.kind not in ("classical", "fusion"):
        return images
    features = read_features("test").set_index("filename").loc[table["filename"]]
    if model.card.kind == "fusion":
        return images, features[family_columns(features, "foci")].to_numpy()
    return features[family_columns(features, model.card.architecture)].to_numpy()


def mean_held_out(folders: list[Path]) -> tuple[pd.DataFrame, np.ndarray]:
    """The controls' pooled held-out rows and the mean of their probabilities: a soft vote's control.

    The controls must have held out the same images in the same folds (they share the split and its folds).
    """
    table, proba = read_held_out(folders[0])
    keys = pd.MultiIndex.from_frame(table[["filename", "fold"]])
    for folder in folders[1:]:
        other, other_proba = read_held_out(folder)
        where = pd.MultiIndex.from_frame(other[["filename", "fold"]]).get_indexer(keys)
        if len(other) != len(table) or (where < 0).any():
            raise PipelineError(f"{folder} held out other images than {folders[0]}: re-run both controls")
        proba = proba + other_proba[where]
    return table, proba / len(folders)


def score_control(folders: list[Path], settings: EvaluateParams) -> tuple[dict | None, str]:
    """A negative control from its pooled held-out predictions, and how it was scored, for people.

    With several folders, the control of a soft vote: the mean of theirs (:func:`mean_held_out`).

    Cross-validated over hours (leave_hour_out), its models change with the folds, so its
    intervals come from the spread of the fold scores; otherwise it is scored on the test split
    with the usual grouped bootstrap.
    """
    table, proba = mean_held_out(folders)
    particles = sorted(set(table["particle_type"]))
    if particles != ["Fe", "X-ray"]:
        return None, (f"**not scored here**: its held-out images include shams of {particles or 'no particle'}; "
                      "scoring needs Fe and X-ray sham images")
    folds = list(table["fold"].unique())
    labels = get_target(CONTROL_TARGET).encode(table)
    if len(folds) > 1:
        scores = {**cross_validated_control_scores(labels, proba, table["fold"].to_numpy()),
                  "scored_on": "every sham plate, by hour folds",
                  "interval": f"corrected t over {len(folds)} hour folds (Nadeau & Bengio 2003)"}
        how = (f"cross-validated over hours: each hour's sham plates held out in turn ({', '.join(folds)}), "
               f"trained on the other hours' shams, and scored on all {len(labels)} sham images of "
               f"{table['plate'].nunique()} plates (a test split of one sham plate per particle could not measure "
               "it); its intervals come from the spread of the fold scores, because the trained models change with "
               "the folds, and are as wide as so few plates allow")
    else:
        unit = settings.bootstrap_unit
        bootstrap = GroupedBootstrap.draw(table[unit], labels, settings.resamples, settings.seed)
        scores = {**control_scores(labels, proba, bootstrap), "scored_on": "test split shams",
                  "interval": f"grouped bootstrap over test {unit}s"}
        how = (f"trained on training-split shams and scored on the {len(labels)} test sham images "
               f"({bootstrap.n_groups} {unit}s)")
    return scores, how + "; leakage = its balanced accuracy − 0.5, the plate signal"
