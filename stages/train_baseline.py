"""train-baseline: the study's MLP on standardised, flattened pixels, one logged epoch at a time.

Writes models/baseline/model.skops (scaler + MLP), model.json (the model card, marked complete
last) and metrics/baseline/ (dvclive: per-epoch whole-split validation loss and accuracy). With
``--control``, the negative control instead (bps/training/negative_control.py): particle on sham images only, into
models/ and metrics/baseline-control/ (one run per fold, held-out predictions in held_out.csv).
MLPClassifier has one softmax: for a multi-head target it learns the joint classes and is scored
through their marginals, one block per head.
"""

from functools import partial

import numpy as np
import pandas as pd
from dvclive import Live
from sklearn.pipeline import make_pipeline
from tqdm import tqdm

from bps.core.params import Params
from bps.core.paths import METRICS, MODELS
from bps.core.stage import ALL_SOURCES, BPS_SOURCES
from bps.models import pixel_mlp, sklearn_io
from bps.models.card import ModelCard, layout_fields, mark_complete
from bps.targets.metrics import validation_scores
from bps.targets.multilabel import choose_thresholds
from bps.training.guard import run_training_stage
from bps.training.negative_control import (
    TrainingData,
    control_requested,
    held_out_predictions,
    output_name,
    training_runs,
    write_held_out,
)


def main(params: Params, control: bool = False) -> None:
    predictions = [train(params, run) for run in training_runs("baseline", params, control)]
    if control:
        write_held_out("baseline", predictions)


def train(params: Params, data: TrainingData) -> pd.DataFrame | None:
    """Train and save one run; a control fold returns its held-out predictions."""
    config, target = params.baseline, data.target
    train_images, train_table = data.load("train")
    val_images, val_table = data.load("val")
    scaler = pixel_mlp.fit_scaler(train_images)
    train_x, val_x = pixel_mlp.standardize(train_images, scaler), pixel_mlp.standardize(val_images, scaler)
    train_y, val_y = target.encode(train_table), target.encode(val_table)
    mlp = pixel_mlp.make_mlp(config)
    classes = np.arange(len(target.classes))
    with Live(str(METRICS / data.name), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"task": target.name, **config.model_dump(mode="json")})
        for _ in tqdm(range(config.epochs), desc=f"train-{data.name}", unit="epoch"):
            pixel_mlp.fit_epoch(mlp, train_x, train_y, classes)
            val_proba = target.marginals(mlp.predict_proba(val_x))
            scores = {"train_loss": float(mlp.loss_), **validation_scores(target, val_y, val_proba)}
            for name, value in scores.items():
                live.log_metric(name, value)
            live.next_step()
    del train_x, val_x  # the features go before saving, which imports skops (and torch with it)
    card = ModelCard(
        kind="mlp", architecture="mlp", in_channels=train_images.shape[1], image_size=train_images.shape[-1],
        target=target.name, classes=list(target.outputs), preprocess=params.preprocess, control=data.control,
        training=config.model_dump(mode="json"), metrics={"epoch": config.epochs - 1, **scores},
        **layout_fields(params, target.multilabel),
    )
    if target.multilabel:  # the final epoch's thresholds, on the whole validation split
        thresholds = choose_thresholds(val_y, val_proba, params.task.threshold)
        card = card.model_copy(update={"thresholds": thresholds.tolist()})
    model = make_pipeline(scaler, mlp)
    sklearn_io.save(MODELS / data.name, model, card)
    if not data.primary:
        mark_complete(MODELS / data.name)  # the stage's own folder is marked last, by run_training_stage
    if not data.control:
        return None
    held_images, held_table = data.load("held_out")
    return held_out_predictions(data, held_table, model.predict_proba(pixel_mlp.flatten(held_images)))


if __name__ == "__main__":
    control = control_requested()
    run_training_stage(partial(main, control=control), MODELS / output_name("baseline", control),
                       sources=BPS_SOURCES if control else ALL_SOURCES)
