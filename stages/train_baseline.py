"""train-baseline: the study's MLP on standardised, flattened pixels, one logged epoch at a time.

Writes models/baseline/model.skops (scaler + MLP) and metrics/baseline/ (dvclive: per-epoch
whole-split validation loss and accuracy). MLPClassifier has one softmax: for a multi-head target
it learns the joint classes and is scored through their marginals, one block per head.
"""

import numpy as np
from dvclive import Live
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from bps import baseline
from bps.batches import load_split
from bps.cli import run_stage
from bps.labels import get_target
from bps.layout import METRICS, MODELS
from bps.metrics import validation_scores
from bps.params import Params


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
            val_proba = target.marginals(mlp.predict_proba(val_x))
            scores = {"train_loss": float(mlp.loss_), **validation_scores(target, val_y, val_proba)}
            for name, value in scores.items():
                live.log_metric(name, value)
            live.next_step()
    info = {
        "target": target.name, "classes": list(target.outputs),
        "preprocess": params.preprocess.model_dump(mode="json"), "baseline": config.model_dump(mode="json"),
    }
    baseline.save(MODELS / "baseline", make_pipeline(scaler, mlp), info)


if __name__ == "__main__":
    run_stage(main)
