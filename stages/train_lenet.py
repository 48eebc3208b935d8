"""train-lenet: train the CNN (LeNet-5 by default, ``train.model``), keep its best epoch.

Writes models/lenet/ (weights-only model.pt + model.json, the model card, marked complete last)
and metrics/lenet/ (dvclive: per-epoch train loss, whole-split validation loss, accuracy and
macro F1, learning rate). With ``--control``, the negative control instead (bps/controls.py):
particle on sham images only, into models/ and metrics/lenet-control/ (one run per fold,
held-out predictions in held_out.csv).
"""

import copy
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from dvclive import Live
from tqdm import tqdm

from bps.core.params import Params
from bps.core.paths import METRICS, MODELS
from bps.core.stage import ALL_SOURCES, BPS_SOURCES
from bps.models.card import ModelCard, layout_fields, mark_complete, store_thresholds
from bps.models.inference import pick_device, predict_proba
from bps.models.networks import build_model, save_checkpoint
from bps.targets.metrics import validation_scores
from bps.targets.multilabel import choose_thresholds
from bps.training.batches import RandomAugment, training_weights
from bps.training.distributed import (
    SilentLive,
    World,
    predict_whole_split,
    process_group,
    relaunch_under_torchrun,
    sum_over_ranks,
    unwrap,
    wrap,
)
from bps.training.guard import run_training_stage
from bps.training.loop import EarlyStopping, make_deterministic, make_optimizer, make_scheduler, train_epoch
from bps.training.negative_control import (
    TrainingData,
    control_requested,
    held_out_predictions,
    output_name,
    training_runs,
    write_held_out,
)


def main(params: Params, control: bool = False) -> None:
    world = World.from_env()
    if params.train.processes > 1 and not world.launched:
        relaunch_under_torchrun(params.train.processes, "stages.train_lenet", ["--control"] if control else [])
        return
    with process_group(world, pick_device(params.train.device)) as device:
        predictions = [train(params, world, device, run) for run in training_runs("lenet", params, control)]
        if control and world.is_main:
            write_held_out("lenet", predictions)


def train(params: Params, world: World, device: torch.device, data: TrainingData) -> pd.DataFrame | None:
    """Train one run, keeping its best epoch; a control fold returns (on rank 0) its held-out predictions."""
    config, target = params.train, data.target
    generator = make_deterministic(config.seed, device.type)
    train_images, train_table = data.load("train")
    val_images, val_table = data.load("val")
    train_labels, val_labels = target.encode(train_table), target.encode(val_table)
    card = ModelCard(
        kind="cnn", architecture=config.model, in_channels=train_images.shape[1], size=train_images.shape[-1],
        target=target.name, classes=list(target.outputs), preprocess=params.preprocess, control=data.control,
        training=config.model_dump(mode="json"), world_size=world.size, **layout_fields(params, target.multilabel),
    )
    model = build_model(card, Path(config.pretrained) if config.pretrained else None).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = wrap(model, world, device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    augment = RandomAugment(generator, config.crop_pad) if config.augment else None
    class_weights, sample_weights = training_weights(train_labels, len(target.classes))
    options = {
        "class_weights": class_weights if config.class_weight == "balanced" else None,
        "sample_weights": sample_weights if config.sampler == "weighted" else None,
        "autocast": config.amp and device.type == "cuda",
        "channels_last": config.channels_last,
        "shard": world.shard,
        "head_sizes": target.head_sizes,
        "multilabel": target.multilabel,
    }
    stopping = EarlyStopping(config.early_stopping_patience, lower_is_better=config.select_metric == "val_loss")
    # Thresholds and a control's held-out predictions come from the kept epoch's weights, kept in memory.
    reuse_kept_epoch = data.control or target.multilabel
    live = Live(str(METRICS / data.name), dvcyaml=None, save_dvc_exp=False) if world.is_main else SilentLive()
    with live:
        live.log_params({"task": target.name, **config.model_dump(mode="json")})
        quiet = {} if world.is_main else {"disable": True}  # one progress bar, rank 0's
        for epoch in tqdm(range(config.epochs), desc=f"train-{config.model}", unit="epoch", **quiet):
            live.log_metric("lr", optimizer.param_groups[0]["lr"])
            train_loss = train_epoch(model, optimizer, train_images, train_labels, config.batch_size,
                                     generator, augment, device, **options)
            if scheduler is not None:
                scheduler.step()
            proba = predict_whole_split(model, val_images, device, world, target.head_sizes, target.multilabel)
            epoch_metrics = {"train_loss": sum_over_ranks(train_loss, world, device),
                             **validation_scores(target, val_labels, proba)}
            for name, value in epoch_metrics.items():
                live.log_metric(name, value)
            if stopping.improved(epoch_metrics[config.select_metric]):
                if world.is_main:
                    kept = card.model_copy(update={"metrics": {"epoch": epoch, **epoch_metrics}})
                    save_checkpoint(MODELS / data.name, unwrap(model), kept)
                    if reuse_kept_epoch:
                        best = copy.deepcopy(unwrap(model).state_dict())
                live.summary["best_epoch"] = epoch
            live.next_step()
            if stopping.should_stop:  # every rank saw the same metrics: all stop together
                if world.is_main:
                    print(f"early stop after epoch {epoch}: no better {config.select_metric} "
                          f"for {config.early_stopping_patience} epochs")
                break
    if not world.is_main:
        return None
    if reuse_kept_epoch:
        unwrap(model).load_state_dict(best)
    if target.multilabel:  # the kept epoch's thresholds, on the whole validation split
        proba = predict_proba(unwrap(model), val_images, device, multilabel=True)
        store_thresholds(MODELS / data.name, choose_thresholds(val_labels, proba, params.task.threshold))
    if not data.primary:
        mark_complete(MODELS / data.name)  # the stage's own folder is marked last, by run_training_stage
    if not data.control:
        return None
    held_images, held_table = data.load("held_out")
    return held_out_predictions(data, held_table, predict_proba(unwrap(model), held_images, device, target.head_sizes))


if __name__ == "__main__":
    control = control_requested()
    run_training_stage(partial(main, control=control), MODELS / output_name("lenet", control),
                       sources=BPS_SOURCES if control else ALL_SOURCES)
