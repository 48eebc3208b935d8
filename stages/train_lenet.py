"""train-lenet: train LeNet-5 on the prepared arrays, keep the best epoch by a validation metric.

Writes models/lenet/ (weights-only model.pt + model.json) and metrics/lenet/ (dvclive: per-epoch
train loss and whole-split validation loss, accuracy and macro F1).
"""

from dvclive import Live
from tqdm import tqdm

from bps.batches import RandomAugment, load_split
from bps.cli import run_stage
from bps.labels import get_target
from bps.layout import METRICS, MODELS
from bps.metrics import is_sham, summary
from bps.models import LeNet5, save_checkpoint
from bps.params import Params
from bps.training import make_deterministic, make_optimizer, pick_device, predict_proba, train_epoch


def main(params: Params) -> None:
    config, target = params.train, get_target(params.task.target)
    device = pick_device(config.device)
    generator = make_deterministic(config.seed, device.type)
    train_images, train_table = load_split("train")
    val_images, val_table = load_split("val")
    train_labels, val_labels = target.encode(train_table), target.encode(val_table)
    in_channels, size = train_images.shape[1], train_images.shape[-1]
    model = LeNet5(in_channels, len(target.classes), size).to(device)
    optimizer = make_optimizer(model, config)
    augment = RandomAugment(generator, config.crop_pad) if config.augment else None
    checkpoint = {
        "architecture": "lenet", "in_channels": in_channels, "size": size, "target": target.name,
        "classes": list(target.classes), "preprocess": params.preprocess.model_dump(mode="json"),
        "train": config.model_dump(mode="json"),
    }
    sign = 1 if config.select_metric == "val_loss" else -1  # lower is better only for the loss
    best = float("inf")
    with Live(str(METRICS / "lenet"), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"task": target.name, **config.model_dump(mode="json")})
        for epoch in tqdm(range(config.epochs), desc="train-lenet", unit="epoch"):
            train_loss = train_epoch(model, optimizer, train_images, train_labels, config.batch_size,
                                     generator, augment, device)
            scores = summary(target, val_labels, predict_proba(model, val_images, device), is_sham(val_table))
            epoch_metrics = {"train_loss": train_loss, "val_loss": scores["log_loss"],
                             "val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"]}
            for name, value in epoch_metrics.items():
                live.log_metric(name, value)
            if sign * epoch_metrics[config.select_metric] < best:
                best = sign * epoch_metrics[config.select_metric]
                save_checkpoint(MODELS / "lenet", model, {**checkpoint, "epoch": epoch, **epoch_metrics})
                live.summary["best_epoch"] = epoch
            live.next_step()


if __name__ == "__main__":
    run_stage(main)
