"""train-baseline: the study's MLP on standardised, flattened pixels, one logged epoch at a time.

Writes models/baseline/model.skops (scaler + MLP), model.json (the model card, marked complete
last) and metrics/baseline/ (dvclive: per-epoch whole-split validation loss and accuracy).
"""

import numpy as np
from dvclive import Live
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from bps import baseline
from bps.batches import load_split
from bps.labels import get_target
from bps.layout import METRICS, MODELS
from bps.metrics import validation_scores
from bps.model_card import ModelCard
from bps.params import Params
from bps.run_guard import run_training_stage


def main(params: Params) -> None:
    config, target = params.baseline, get_target(params.task.target)
    train_images, train_table = load_split("train")
    val_images, val_table = load_split("val")
    train_flat = baseline.flatten(train_images)
    scaler = StandardScaler().fit(train_flat)
    train_x, val_x = scaler.transform(train_flat), scaler.transform(baseline.flatten(val_images))
    train_y, val_y = target.encode(train_table), target.encode(val_table)
    mlp = baseline.make_mlp(config)
    classes = np.arange(len(target.classes))
    with Live(str(METRICS / "baseline"), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"task": target.name, **config.model_dump(mode="json")})
        for _ in tqdm(range(config.epochs), desc="train-baseline", unit="epoch"):
            baseline.fit_epoch(mlp, train_x, train_y, classes)
            scores = {"train_loss": float(mlp.loss_), **validation_scores(target, val_y, mlp.predict_proba(val_x))}
            for name, value in scores.items():
                live.log_metric(name, value)
            live.next_step()
    card = ModelCard(
        kind="mlp", architecture="mlp", in_channels=train_images.shape[1], size=train_images.shape[-1],
        target=target.name, classes=list(target.classes), preprocess=params.preprocess,
        training=config.model_dump(mode="json"), metrics={"epoch": config.epochs - 1, **scores},
    )
    baseline.save(MODELS / "baseline", make_pipeline(scaler, mlp), card)


if __name__ == "__main__":
    run_training_stage(main, MODELS / "baseline")
