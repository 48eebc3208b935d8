"""train-lenet: train the CNN (LeNet-5 by default, ``train.model``), keep its best epoch.

Writes models/lenet/ (weights-only model.pt + model.json with the classes and preprocessing)
and metrics/lenet/ (dvclive: per-epoch train loss, whole-split validation loss, accuracy and
macro F1, learning rate).
"""

from pathlib import Path

import torch
from dvclive import Live
from tqdm import tqdm

from bps.batches import RandomAugment, balanced_weights, load_split
from bps.cli import run_stage
from bps.labels import get_target
from bps.layout import METRICS, MODELS
from bps.metrics import validation_scores
from bps.models import build_model, save_checkpoint
from bps.params import Params
from bps.training import (
    EarlyStopping,
    make_deterministic,
    make_optimizer,
    make_scheduler,
    pick_device,
    predict_proba,
    train_epoch,
)


def main(params: Params) -> None:
    config, target = params.train, get_target(params.task.target)
    device = pick_device(config.device)
    generator = make_deterministic(config.seed, device.type)
    train_images, train_table = load_split("train")
    val_images, val_table = load_split("val")
    train_labels, val_labels = target.encode(train_table), target.encode(val_table)
    checkpoint = {
        "architecture": config.model, "in_channels": train_images.shape[1], "size": train_images.shape[-1],
        "target": target.name, "classes": list(target.outputs),
        "preprocess": params.preprocess.model_dump(mode="json"), "train": config.model_dump(mode="json"),
    }
    model = build_model(checkpoint, Path(config.pretrained) if config.pretrained else None).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    augment = RandomAugment(generator, config.crop_pad) if config.augment else None
    per_class = balanced_weights(train_labels, len(target.classes))
    options = {
        "class_weights": per_class if config.class_weight == "balanced" else None,
        "sample_weights": per_class[train_labels] if config.sampler == "weighted" else None,
        "autocast": config.amp and device.type == "cuda",
        "channels_last": config.channels_last,
        "head_sizes": target.head_sizes,
    }
    stopping = EarlyStopping(config.early_stopping_patience, lower_is_better=config.select_metric == "val_loss")
    with Live(str(METRICS / "lenet"), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"task": target.name, **config.model_dump(mode="json")})
        for epoch in tqdm(range(config.epochs), desc=f"train-{config.model}", unit="epoch"):
            live.log_metric("lr", optimizer.param_groups[0]["lr"])
            train_loss = train_epoch(model, optimizer, train_images, train_labels, config.batch_size,
                                     generator, augment, device, **options)
            if scheduler is not None:
                scheduler.step()
            epoch_metrics = {"train_loss": train_loss,
                             **validation_scores(target, val_labels,
                                                 predict_proba(model, val_images, device, target.head_sizes))}
            for name, value in epoch_metrics.items():
                live.log_metric(name, value)
            if stopping.improved(epoch_metrics[config.select_metric]):
                save_checkpoint(MODELS / "lenet", model, {**checkpoint, "epoch": epoch, **epoch_metrics})
                live.summary["best_epoch"] = epoch
            live.next_step()
            if stopping.should_stop:
                print(f"early stop after epoch {epoch}: no better {config.select_metric} "
                      f"for {config.early_stopping_patience} epochs")
                break


if __name__ == "__main__":
    run_stage(main)
