"""train-lenet: train the CNN (LeNet-5 by default, ``train.model``), keep its best epoch.

Writes models/lenet/ (weights-only model.pt + model.json, the model card, marked complete last)
and metrics/lenet/ (dvclive: per-epoch train loss, whole-split validation loss, accuracy and
macro F1, learning rate; metrics.json adds the kept epoch, ``best_epoch``, and its scores,
``kept``). With ``--control``, the negative control instead (bps/training/negative_control.py):
particle on sham images only, into models/ and metrics/lenet-control/ (one run per fold,
held-out predictions in held_out.csv).
"""

from functools import partial
from pathlib import Path

import pandas as pd
import torch
from dvclive import Live

from bps.core.params import Params
from bps.core.paths import METRICS, MODELS
from bps.core.stage import ALL_SOURCES, BPS_SOURCES
from bps.models.card import ModelCard, layout_fields, mark_complete, store_thresholds
from bps.models.inference import pick_device, predict_proba
from bps.models.networks import build_model
from bps.targets.multilabel import choose_thresholds
from bps.training.adversary import plate_adversary
from bps.training.distributed import SilentLive, World, process_group, relaunch_under_torchrun, wrap
from bps.training.foci_target import foci_regression
from bps.training.guard import run_training_stage
from bps.training.kept_epoch import KeptEpoch
from bps.training.loop import Split, fit, make_deterministic
from bps.training.negative_control import (
    TrainingData,
    control_requested,
    held_out_predictions,
    output_name,
    training_labels,
    training_runs,
    write_held_out,
)


def main(params: Params, control: bool = False) -> None:
    world = World.from_env()
    if params.train.processes > 1 and not world.launched:
        relaunch_under_torchrun(params.train.processes, "stages.train_lenet", ["--control"] if control else [])
        return
    with process_group(world, pick_device(params.train.device)) as device:
        runs = training_runs("lenet", params, control, params.train.shams)
        predictions = [train(params, world, device, run) for run in runs]
        if control and world.is_main:
            write_held_out("lenet", predictions)


def train(params: Params, world: World, device: torch.device, data: TrainingData) -> pd.DataFrame | None:
    """Train one run, keeping its best epoch; a control fold returns (on rank 0) its held-out predictions."""
    config, target = params.train, data.target
    generator = make_deterministic(config.seed, device.type)
    (train_images, train_table), (val_images, val_table) = data.load("train"), data.load("val")
    val_labels = target.encode(val_table)
    card = ModelCard(
        kind="cnn", architecture=config.model, in_channels=train_images.shape[1], image_size=train_images.shape[-1],
        target=target.name, classes=list(target.outputs), preprocess=params.preprocess, control=data.control,
        training=config.model_dump(mode="json"), world_size=world.size, **layout_fields(params, target.multilabel),
    )
    model = build_model(card, Path(config.pretrained) if config.pretrained else None)
    auxiliary = None  # a training-only head: the plate adversary or the foci regression
    if config.adversary > 0:
        model, auxiliary = plate_adversary(model, train_table, config.adversary)
    elif config.foci_auxiliary > 0:
        model, auxiliary = foci_regression(model, train_table, config.foci_auxiliary)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = wrap(model, world, device)
    # Thresholds and a control's held-out predictions come from the kept epoch's weights, kept in memory.
    kept = KeptEpoch(MODELS / data.name, card, model, world, keep_weights=data.control or target.multilabel)
    with Live(str(METRICS / data.name), dvcyaml=None, save_dvc_exp=False) if world.is_main else SilentLive() as live:
        live.log_params({"task": target.name, **config.model_dump(mode="json")})
        fit(model, config, target, Split(train_images, training_labels(target, train_table, data.shams), auxiliary),
            Split(val_images, val_labels), generator, device, world, live, kept)
    if not world.is_main:
        return None
    network = kept.restore()
    if target.multilabel:  # the kept epoch's thresholds, on the whole validation split
        proba = predict_proba(network, val_images, device, multilabel=True, tta=config.tta)
        store_thresholds(MODELS / data.name, choose_thresholds(val_labels, proba, params.task.threshold))
    if not data.primary:
        mark_complete(MODELS / data.name)  # the stage's own folder is marked last, by run_training_stage
    if not data.control:
        return None
    held_images, held_table = data.load("held_out")
    held_out = predict_proba(network, held_images, device, target.head_sizes, tta=config.tta)
    return held_out_predictions(data, held_table, held_out)


if __name__ == "__main__":
    control = control_requested()
    run_training_stage(partial(main, control=control), MODELS / output_name("lenet", control),
                       sources=BPS_SOURCES if control else ALL_SOURCES)
