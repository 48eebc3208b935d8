"""metrics/comparison.md: evaluate's results as tables for people, every number with its interval."""

from __future__ import annotations

import pandas as pd

from bps.evaluation.scores import HIGH, LOW

HEADLINE = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1",
    "sham_accuracy": "sham accuracy",
    "irradiated_accuracy": "irradiated accuracy",
}
MORE = {
    "log_loss": "log loss",
    "hamming_loss": "Hamming loss",
    "jaccard": "Jaccard",
    "calibration_error": "calibration error (ECE)",
}

# A layout's multi-label headline (bps/layout_evaluation.py): evaluate.json holds more.
LAYOUT_MULTILABEL_HEADLINE = ("sample_f1", "macro_f1", "micro_f1", "subset_accuracy", "hamming_loss", "jaccard",
                              "micro_ap", "macro_ap")


def cell(scores: dict | None, name: str) -> str:
    """``0.695 [0.612, 0.771]``, or n/a."""
    if scores is None or scores.get(name) is None:
        return "n/a"
    if name + LOW not in scores:
        return f"{scores[name]:.3f}"
    return f"{scores[name]:.3f} [{scores[name + LOW]:.3f}, {scores[name + HIGH]:.3f}]"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def headline_table(results: dict[str, dict], labels: dict[str, str]) -> str:
    """One row per model: its headline metrics, and its negative control beside them."""
    header = ["model", *HEADLINE.values(), "negative control: balanced accuracy", "leakage"]
    rows = [
        [labels[name], *(cell(scores, key) for key in HEADLINE),
         cell(scores.get("control"), "balanced_accuracy"), cell(scores.get("control"), "leakage")]
        for name, scores in results.items()
    ]
    return markdown(header, rows)


def control_fold_table(results: dict[str, dict], labels: dict[str, str]) -> str | None:
    """Cross-validated controls: each fold's balanced accuracy, the spread their interval comes from."""
    folds = {name: scores["control"]["fold_balanced_accuracy"] for name, scores in results.items()
             if "fold_balanced_accuracy" in scores.get("control", {})}
    if not folds:
        return None
    names = list(next(iter(folds.values())))
    rows = [[labels[name], *(f"{values[fold]:.3f}" for fold in names)] for name, values in folds.items()]
    return markdown(["model", *(f"{fold} held out" for fold in names)], rows)


def more_table(results: dict[str, dict], labels: dict[str, str]) -> str:
    """Secondary metrics, then each head's own scores for a multi-head target (``particle_accuracy``...)."""
    header = ["metric", *(labels[name] for name in results)]
    rows = [[label, *(cell(results[name], key) for name in results)] for key, label in MORE.items()]
    first = next(iter(results.values()))
    heads = sorted({key.removesuffix("_macro_f1") for key in first if key.endswith("_macro_f1") and key != "macro_f1"})
    for key in (f"{head}_{metric}" for head in heads for metric in ("accuracy", "balanced_accuracy", "macro_f1")):
        rows.append([key, *(cell(results[name], key) for name in results)])
    return markdown(header, rows)


def paired_table(pairs: dict[str, dict], labels: dict[str, str]) -> str:
    header = ["first − second", "accuracy difference [95 % CI]", "only first right", "only second right",
              "McNemar p (exact)", "verdict"]
    rows = []
    for key, pair in pairs.items():
        first, second = key.split("_vs_")
        better = labels[first] if pair["accuracy_difference"] > 0 else labels[second]
        rows.append([f"{labels[first]} − {labels[second]}", cell(pair, "accuracy_difference"),
                     str(pair["only_first_right"]), str(pair["only_second_right"]), f"{pair['mcnemar_p']:.3g}",
                     "tie" if pair["tie"] else f"{better} better"])
    return markdown(header, rows)


def frame_table(frame: pd.DataFrame, labels: dict[str, str]) -> str:
    """A per-condition or per-hour accuracy table: model columns shown as value [CI] when there is one."""
    keys = [c for c in frame.columns if c not in labels and not c.endswith((LOW, HIGH))]
    header = [*keys, *(labels[name] for name in labels if name in frame.columns)]
    rows = []
    for record in frame.to_dict("records"):
        rows.append([f"{record[k]:g}" if isinstance(record[k], float) else str(record[k]) for k in keys]
                    + [cell(record, name) for name in labels if name in frame.columns])
    return markdown(header, rows)
