"""lr-find: a learning-rate range test of the CNN that train-lenet trains, to choose ``train.lr``.

The network ``train.model`` builds, on ``task.target`` (both heads of ``particle+dose``), with
the trainer's optimizer, batches, sampler, class weights and augmentation, trained for
``lr_find.steps`` mini-batches of the training split at rates growing from ``lr_find.min_lr``
to ``lr_find.max_lr`` (bps/training/lr_find.py). Writes metrics/lr_find/curve.csv (the plot) and
suggestion.json (the suggested rates); the network itself is thrown away. One process in float32:
``train.processes``, ``amp`` and ``channels_last`` change how fast a batch trains, not the curve.
"""

from pathlib import Path

from tqdm import tqdm

from bps.core.files import write_csv, write_json
from bps.core.params import Params
from bps.core.paths import METRICS
from bps.core.stage import run_stage
from bps.models.card import ModelCard
from bps.models.inference import pick_device
from bps.models.networks import build_model
from bps.targets.labels import task_target
from bps.training import lr_find
from bps.training.batches import RandomAugment, training_weights
from bps.training.loop import make_deterministic, make_optimizer
from bps.training.negative_control import load_training_split, training_labels

OUTPUT = METRICS / "lr_find"


def main(params: Params) -> None:
    config, settings, target = params.train, params.lr_find, task_target(params)
    device = pick_device(config.device)
    generator = make_deterministic(config.seed, device.type)
    images, table = load_training_split("train", config.shams)
    labels = training_labels(target, table, config.shams)
    card = ModelCard(kind="cnn", architecture=config.model, in_channels=images.shape[1], image_size=images.shape[-1],
                     target=target.name, classes=list(target.outputs), preprocess=params.preprocess,
                     training=config.model_dump(mode="json"))
    model = build_model(card, Path(config.pretrained) if config.pretrained else None).to(device)
    class_weights, sample_weights = training_weights(labels, len(target.classes))
    augment = RandomAugment(generator, config.crop_pad) if config.augment else None
    batches = lr_find.endless_batches(images, labels, config.batch_size, generator, augment,
                                      sample_weights if config.sampler == "weighted" else None)
    step = lr_find.batch_step(model, make_optimizer(model, config), batches, device, target.head_sizes,
                              class_weights if config.class_weight == "balanced" else None, target.multilabel)
    lrs = lr_find.rates(settings.min_lr, settings.max_lr, settings.steps)
    with tqdm(lrs, desc=f"lr-find-{config.model}", unit="step") as progress:
        curve = lr_find.range_test(step, progress, settings.smoothing, settings.diverge_factor)
    suggested, cautious = lr_find.suggest(curve.lrs, curve.smoothed, settings.smoothing)
    write_csv(OUTPUT / "curve.csv", curve.table())
    write_json(OUTPUT / "suggestion.json", {
        "suggested_lr": suggested, "min_loss_lr_over_10": cautious, "steps_run": len(curve.lrs),
        "stopped_early": curve.stopped_early, "model": config.model, "target": target.name,
    })
    ended = "stopped early: the loss diverged" if curve.stopped_early else "all steps run"
    print(f"lr-find: suggested train.lr {suggested:.3g} (steepest descent), {cautious:.3g} (lowest loss / 10); "
          f"{len(curve.lrs)} of {settings.steps} steps, {ended}")


if __name__ == "__main__":
    run_stage(main)
