"""Classical baselines on per-image features, and their negative controls.

* ``appearance``: gradient boosting on plate-appearance features (no foci). Whatever it scores
  is available to any model from plate recognition alone.
* ``foci``: standardised foci features, then logistic regression: the classical radiobiology
  measurement turned into a classifier.
* ``fusion``: the same regression on the foci features and, beside them, the CNN's description of
  the nucleus (what its last layer reads, :func:`bps.models.inference.embed`). The foci count sees
  spots at native scale, the CNN the shrunk image's shape and texture; the regression weighs both,
  where the soft vote (``hybrid``, evaluate) only averages the two models' answers.

Each family also trains a **negative control**: the same model on the training split's sham
(dose 0) images only, to tell Fe-sham from X-ray-sham plates. No image can show that label, so
the control's accuracy above 0.5 on held-out sham images is the plate or batch signal the
split protocol leaves available. Models are saved with skops (see :mod:`bps.models.sklearn_io`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bps.classical.features import FAMILIES, family_columns
from bps.core.errors import PipelineError
from bps.core.params import Params
from bps.core.paths import MODELS, control_name, feature_table
from bps.models import sklearn_io
from bps.models.card import CARD_FILE, CNN_WEIGHTS, FUSION_CNN, ModelCard
from bps.targets.labels import Target
from bps.targets.metrics import is_sham

CONTROL_TARGET = "particle"  # Fe-sham vs X-ray-sham
FUSION = "fusion"


def model_folder(family: str, control: bool = False) -> Path:
    """models/<family>, or models/<family>-control for its negative control (as for the MLP and CNN)."""
    return MODELS / (control_name(family) if control else family)


def make_model(family: str, params: Params) -> ClassifierMixin:
    """A fresh, seeded classifier of the family."""
    if family == "appearance":
        config = params.appearance
        return HistGradientBoostingClassifier(
            max_iter=config.max_iter,
            learning_rate=config.learning_rate,
            max_leaf_nodes=config.max_leaf_nodes,
            l2_regularization=config.l2_regularization,
            early_stopping=False,  # an internal random hold-out would see the training plates anyway
            random_state=config.seed,
        )
    if family in ("foci", FUSION):
        config = getattr(params, family)
        return make_pipeline(StandardScaler(), LogisticRegression(C=config.C, max_iter=config.max_iter))
    raise ValueError(f"unknown family {family!r} (allowed: {[*FAMILIES, FUSION]})")


def read_features(split: str) -> pd.DataFrame:
    """A split's feature table (data/features/{split}.csv)."""
    return pd.read_csv(feature_table(split))


def sham_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The unirradiated images, whose particle label no image can show."""
    return table[is_sham(table)].reset_index(drop=True)


def fit(family: str, params: Params, table: pd.DataFrame, target: Target) -> ClassifierMixin:
    """Train the family's model on ``table`` for ``target``; every class of the target must be present."""
    return fit_inputs(family, params, table[family_columns(table, family)].to_numpy(), target.encode(table), target)


def missing_classes(labels: np.ndarray, target: Target) -> list[str]:
    """The classes of ``target`` that no encoded label in ``labels`` has."""
    present = set(labels.tolist())
    return [name for index, name in enumerate(target.classes) if index not in present]


def fit_inputs(family: str, params: Params, inputs: np.ndarray, labels: np.ndarray, target: Target) -> ClassifierMixin:
    """Train the family's model on N×F ``inputs`` and their encoded ``labels`` (see :func:`fit`)."""
    missing = missing_classes(labels, target)
    if missing:
        raise PipelineError(f"train-{family}: no training images of class(es) {missing} for task.target {target.name}")
    return make_model(family, params).fit(inputs, labels)


def class_probabilities(model: ClassifierMixin, family: str, table: pd.DataFrame, target: Target) -> np.ndarray:
    """N × classes probabilities, columns in ``target.classes`` order."""
    return sklearn_io.class_probabilities(model, table[family_columns(table, family)].to_numpy(), len(target.classes))


def control_scores(control: ClassifierMixin, family: str, val: pd.DataFrame, target: Target) -> dict[str, float]:
    """The control's accuracy on the validation split's shams and their count.

    The accuracy is left out when validation holds no shams (``split.val_unit: plate`` validates
    on irradiated plates only), so that no metric is logged without a value.
    """
    shams = sham_rows(val)
    if shams.empty:
        return {"control_val_n": 0}
    correct = class_probabilities(control, family, shams, target).argmax(axis=1) == target.encode(shams)
    return {"control_val_accuracy": round(float(np.mean(correct)), 6), "control_val_n": len(shams)}


def save(folder: Path, model: ClassifierMixin, family: str, target: Target, params: Params, control: bool,
         cnn: Path | None = None, fitted_on: str | None = None) -> None:
    """The fitted model in skops format and its model card (kind ``classical``, architecture = family);
    a fusion model (kind ``fusion``) also keeps a copy of the CNN folder ``cnn`` it reads, in its own,
    and its card the role of the images it was ``fitted_on`` (``val``, or ``train``)."""
    training = {"features": params.features.model_dump(mode="json"),
                family: getattr(params, family).model_dump(mode="json")}
    card = ModelCard(
        kind=FUSION if family == FUSION else "classical", architecture=family, target=target.name,
        classes=list(target.classes), control=control,
        training=training | ({"fitted_on": fitted_on} if fitted_on else {}),
    )
    if family == FUSION:
        (folder / FUSION_CNN).mkdir(parents=True, exist_ok=True)
        for name in (CNN_WEIGHTS, CARD_FILE):
            shutil.copyfile(cnn / name, folder / FUSION_CNN / name)
    sklearn_io.save(folder, model, card)


def dose_response(table: pd.DataFrame, column: str = "foci_count") -> dict[tuple[str, int], pd.DataFrame]:
    """Mean foci per nucleus (with its standard error and count) against dose, per (particle, hour)."""
    curves = {}
    for (particle, hours), rows in table.groupby(["particle_type", "hr_post_exposure"], sort=True):
        stats = rows.groupby("dose_Gy", sort=True)[column].agg(["mean", "sem", "count"]).reset_index()
        stats.columns = ["dose_Gy", "foci_per_nucleus", "sem", "nuclei"]
        curves[(str(particle), int(hours))] = stats.fillna({"sem": 0.0})
    return curves
