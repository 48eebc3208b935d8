"""evaluate: score both models on the whole test split, side by side.

Writes metrics/evaluate.json (headline metrics per model, sham and irradiated images also
scored apart), metrics/per_class/<model>.csv, metrics/confusion/<model>.csv (DVC plots) and
metrics/comparison.md (a table for people).
"""

import json

import pandas as pd

from bps import baseline
from bps.batches import load_split
from bps.cli import run_stage
from bps.errors import PipelineError
from bps.files import write_json, write_text
from bps.labels import get_target
from bps.layout import METRICS, MODELS
from bps.metrics import confusion_rows, is_sham, per_class, summary
from bps.models import load_checkpoint
from bps.params import Params
from bps.training import pick_device, predict_proba

MODEL_NAMES = ("baseline", "lenet")
ROWS = ("accuracy", "balanced_accuracy", "macro_f1", "hamming_loss", "jaccard", "log_loss",
        "sham_accuracy", "irradiated_accuracy", "n_test")


def comparison_table(results: dict[str, dict]) -> str:
    models = list(results)
    lines = ["| metric | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    head_rows = [key for key in results[models[0]] if key not in ROWS and key != "task"]  # particle_accuracy...
    for row in [*ROWS, *head_rows]:
        cells = [results[m][row] for m in models]
        lines.append(f"| {row} | " + " | ".join("n/a" if c is None else f"{c:.4g}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def check_target(name: str, target: str) -> None:
    """Refuse to score a model trained for another target (e.g. after editing params by hand)."""
    trained_for = json.loads((MODELS / name / "model.json").read_text())["target"]
    if trained_for != target:
        raise PipelineError(f"models/{name} was trained for {trained_for!r} but task.target is {target!r}")


def main(params: Params) -> None:
    target = get_target(params.task.target)
    for name in MODEL_NAMES:
        check_target(name, target.name)
    images, table = load_split("test")
    labels, sham = target.encode(table), is_sham(table)
    device = pick_device(params.train.device)
    lenet, _ = load_checkpoint(MODELS / "lenet", device)
    probabilities = {
        "baseline": target.marginals(baseline.load(MODELS / "baseline").predict_proba(baseline.flatten(images))),
        "lenet": predict_proba(lenet, images, device, target.head_sizes),
    }
    results = {}
    for folder in ("per_class", "confusion"):
        (METRICS / folder).mkdir(parents=True, exist_ok=True)
    for name, proba in probabilities.items():
        predicted = target.predict(proba)
        results[name] = {"task": target.name, **summary(target, labels, proba, sham)}
        pd.DataFrame(per_class(target, labels, predicted)).to_csv(METRICS / "per_class" / f"{name}.csv", index=False)
        confusion_rows(target, labels, predicted).to_csv(METRICS / "confusion" / f"{name}.csv", index=False)
    write_json(METRICS / "evaluate.json", results)
    table_md = comparison_table(results)
    write_text(METRICS / "comparison.md", f"Test split ({len(labels)} images), target `{target.name}`\n\n{table_md}")
    print(table_md)


if __name__ == "__main__":
    run_stage(main)
