"""train-fusion: the CNN's features and the foci features in one logistic regression, and its negative control.

The CNN (models/lenet) describes each nucleus by what its last layer reads; the foci count by the
spots it finds at native scale (bps/classical/families.py, ``fusion``). The regression is fitted on
the validation split: the CNN never trained on those images, so the regression learns how far to
trust its description of a nucleus it has not seen (on the training split, which the CNN has
learnt, it would trust it too far). Writes models/fusion/ (the regression, its card, a copy of the
CNN it reads in cnn/) and models/fusion-control/: per control fold, the same regression on that
fold's validation shams as the fold's own CNN control (models/lenet-control) describes them, so it
reads no plate the fold held out; held-out predictions in held_out.csv.
"""

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin

from bps.classical import families
from bps.classical.families import FUSION
from bps.classical.features import family_columns
from bps.core.params import Params
from bps.core.paths import MODELS
from bps.core.stage import BPS_SOURCES
from bps.data.split import SPLITS
from bps.models.card import mark_complete
from bps.models.loader import LoadedModel, fusion_inputs, load_model
from bps.models.sklearn_io import class_probabilities
from bps.training.guard import run_training_stage
from bps.training.negative_control import TrainingData, held_out_predictions, training_runs, write_held_out


def main(params: Params) -> None:
    tables = pd.concat([families.read_features(split) for split in SPLITS], ignore_index=True)
    foci = tables.set_index("filename")[family_columns(tables, "foci")]

    def fit(run: TrainingData, cnn_run: TrainingData) -> tuple[ClassifierMixin, LoadedModel]:
        """The regression on the run's validation images, as ``cnn_run``'s CNN describes them; on its
        training images when validation lacks a class (a small dataset), as the run says."""
        cnn = load_model(MODELS / cnn_run.name, params.train.device)
        role, (images, rows) = "val", cnn_run.load("val")
        if families.missing_classes(run.target.encode(rows), run.target):
            print(f"train-fusion: {run.name}: the validation images lack a class of {run.target.name}; "
                  "fitted on the training images, which the CNN has learnt")
            role, (images, rows) = "train", cnn_run.load("train")
        model = families.fit_inputs(FUSION, params, inputs(cnn, images, rows), run.target.encode(rows), run.target)
        families.save(MODELS / run.name, model, FUSION, run.target, params, run.control, MODELS / cnn_run.name, role)
        return model, cnn

    def inputs(cnn: LoadedModel, images: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
        return fusion_inputs(cnn, images, foci.loc[rows["filename"]].to_numpy())

    (model_run,) = training_runs(FUSION, params, control=False)
    fit(model_run, training_runs("lenet", params, control=False)[0])
    predictions = []
    for run, cnn_run in zip(training_runs(FUSION, params, control=True), training_runs("lenet", params, control=True),
                            strict=True):
        model, cnn = fit(run, cnn_run)
        if not run.primary:
            mark_complete(MODELS / run.name)  # the stage's own folders are marked last, by run_training_stage
        images, rows = cnn_run.load("held_out")
        proba = class_probabilities(model, inputs(cnn, images, rows), len(run.target.classes))
        predictions.append(held_out_predictions(run, rows, proba))
    write_held_out(FUSION, predictions)
    print(f"train-fusion: the model and {len(predictions)} control fold(s) fitted")


if __name__ == "__main__":
    run_training_stage(main, families.model_folder(FUSION), families.model_folder(FUSION, control=True),
                       sources=BPS_SOURCES)
