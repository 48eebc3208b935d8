"""train-appearance / train-foci: a classical baseline on per-image features, and its negative control.

``python -m stages.train_classical appearance`` (or ``foci``) fits the family's model
(bps/classical/families.py) on the training split for ``task.target`` and, in models/{family}-control/,
the same model on sham images for Fe-sham vs X-ray-sham (one fit per fold of bps/training/negative_control.py,
held-out predictions in held_out.csv).
Writes models/{family}/, models/{family}-control/ and metrics/{family}/ (dvclive: whole-split
validation scores of both);
``foci`` also writes metrics/foci/dose_response/{particle}_{hours}h.csv (foci per nucleus vs
dose, from the features of every split) for ``dvc plots``.
"""

import sys
from functools import partial

import pandas as pd
from dvclive import Live
from sklearn.base import ClassifierMixin

from bps.classical import families
from bps.classical.features import FAMILIES
from bps.core.files import write_text
from bps.core.params import Params
from bps.core.paths import METRICS, MODELS
from bps.core.stage import BPS_SOURCES
from bps.data.split import SPLITS
from bps.models.card import mark_complete
from bps.targets.labels import get_target
from bps.targets.metrics import validation_scores
from bps.training.guard import run_training_stage
from bps.training.negative_control import held_out_predictions, sham_pool, training_runs, write_held_out


def main(params: Params, family: str) -> None:
    target, control_target = get_target(params.task.target), get_target(families.CONTROL_TARGET)
    train, val = families.read_features("train"), families.read_features("val")
    model = families.fit(family, params, train, target)
    families.save(families.model_folder(family), model, family, target, params, control=False)
    control = fit_controls(params, family)

    val_proba = target.marginals(families.class_probabilities(model, family, val, target))  # per head if several
    scores = validation_scores(target, target.encode(val), val_proba)
    scores.update(families.control_scores(control, family, val, control_target))
    with Live(str(METRICS / family), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"task": target.name, "features": params.features.model_dump(mode="json"),
                         family: getattr(params, family).model_dump(mode="json")})
        for name, value in scores.items():
            live.log_metric(name, value, plot=False)
    if family == "foci":
        every_image = pd.concat([families.read_features(split) for split in SPLITS], ignore_index=True)
        for (particle, hours), curve in families.dose_response(every_image).items():
            path = METRICS / "foci" / "dose_response" / f"{particle}_{hours}h.csv"
            write_text(path, curve.to_csv(index=False, float_format="%.6g"))
    control_val = (f"val accuracy {scores['control_val_accuracy']:.3f} on {scores['control_val_n']} sham images"
                   if scores["control_val_n"] else "no sham images in val")
    print(f"train-{family}: val accuracy {scores['val_accuracy']:.3f}, control (Fe-sham vs X-ray-sham) {control_val}")


def fit_controls(params: Params, family: str) -> ClassifierMixin:
    """Fit and save the control of every fold, pool their held-out predictions; return the primary one."""
    pool = sham_pool({split: families.read_features(split) for split in SPLITS})
    fitted, predictions = [], []
    for run in training_runs(family, params, control=True):
        fitted.append(families.fit(family, params, run.rows(pool, "train"), run.target))
        families.save(MODELS / run.name, fitted[-1], family, run.target, params, control=True)
        if not run.primary:
            mark_complete(MODELS / run.name)  # the stage's own folders are marked last, by run_training_stage
        held_out = run.rows(pool, "held_out")
        proba = families.class_probabilities(fitted[-1], family, held_out, run.target)
        predictions.append(held_out_predictions(run, held_out, proba))
    write_held_out(family, predictions)
    return fitted[0]


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in FAMILIES:
        print(f"usage: python -m stages.train_classical {{{'|'.join(FAMILIES)}}}", file=sys.stderr)
        raise SystemExit(2)
    family = sys.argv[1]
    folders = families.model_folder(family), families.model_folder(family, control=True)
    run_training_stage(partial(main, family=family), *folders,
                       sources=BPS_SOURCES)
