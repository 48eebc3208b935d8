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
from sklearn.metrics import log_loss
from sklearn.model_selection import GroupKFold
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
    if family == "foci":
        return regression(params.foci.C, params.foci.max_iter)
    raise ValueError(f"unknown family {family!r} (allowed: {list(FAMILIES)})")


def regression(C: float, max_iter: int) -> ClassifierMixin:
    """Standardised inputs, then logistic regression: the foci count's model, and the fusion's."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))


def read_features(split: str) -> pd.DataFrame:
    """A split's feature table (data/features/{split}.csv)."""
    return pd.read_csv(feature_table(split))


def sham_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The unirradiated images, whose particle label no image can show."""
    return table[is_sham(table)].reset_index(drop=True)


def fit(family: str, params: Params, table: pd.DataFrame, target: Target) -> ClassifierMixin:
    """Train the family's model on ``table`` for ``target``; every class of the target must be present."""
    labels = target.encode(table)
    check_classes(family, labels, target)
    return make_model(family, params).fit(table[family_columns(table, family)].to_numpy(), labels)


def check_classes(name: str, labels: np.ndarray, target: Target) -> None:
    """A model needs training images of every class of its target."""
    present = set(labels.tolist())
    missing = [label for index, label in enumerate(target.classes) if index not in present]
    if missing:
        raise PipelineError(f"train-{name}: no training images of class(es) {missing} for task.target {target.name}")


def fit_fusion(params: Params, inputs: np.ndarray, labels: np.ndarray, groups: np.ndarray, target: Target
               ) -> tuple[ClassifierMixin, dict[str, float]]:
    """The fusion regression on N×F ``inputs``, at the ``fusion.Cs`` value whose cross-validation over
    whole ``groups`` (``fusion.folds``) has the lowest log loss, refitted on all of them; and that
    choice (``C``, and its ``cv_log_loss``). Too few groups to cross-validate: the first value."""
    config, n_classes = params.fusion, len(target.classes)
    check_classes(FUSION, labels, target)
    splits = min(config.folds, len(np.unique(groups)))
    folds = [] if len(config.Cs) == 1 or splits < 2 else [
        (train, test) for train, test in GroupKFold(n_splits=splits).split(inputs, labels, groups)
        if len(np.unique(labels[train])) > 1]  # a fold that trains on one class alone cannot fit

    def cv_log_loss(C: float) -> float:
        losses = [log_loss(labels[test], sklearn_io.class_probabilities(
                      regression(C, config.max_iter).fit(inputs[train], labels[train]), inputs[test], n_classes),
                  labels=range(n_classes)) * len(test) for train, test in folds]
        return sum(losses) / sum(len(test) for _, test in folds)

    scored = {C: cv_log_loss(C) for C in config.Cs} if folds else {}
    chosen = {"C": min(scored, key=scored.get), "cv_log_loss": round(min(scored.values()), 6)} if scored else {
        "C": config.Cs[0]}
    return regression(chosen["C"], config.max_iter).fit(inputs, labels), chosen


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
         cnn: Path | None = None, chosen: dict[str, float] | None = None) -> None:
    """The fitted model in skops format and its model card (kind ``classical``, architecture = family);
    a fusion model (kind ``fusion``) also keeps a copy of the CNN folder ``cnn`` it reads, in its own,
    and its card the cross-validation's ``chosen`` C."""
    card = ModelCard(
        kind=FUSION if family == FUSION else "classical", architecture=family, target=target.name,
        classes=list(target.classes), control=control, metrics=chosen or {},
        training={"features": params.features.model_dump(mode="json"),
                  family: getattr(params, family).model_dump(mode="json")},
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
