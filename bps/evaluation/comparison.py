"""metrics/comparison.md: evaluate's results as a page for people, every number with its interval."""

from __future__ import annotations

import pandas as pd

from bps.evaluation.intervals import p_value_text
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
    "irradiated_auc": "irradiated ROC AUC",
}

AUC_NOTE = (" Accuracy takes each model's probabilities at 0.5, a threshold that plates no model saw can "
            "move; the ROC AUC difference asks which model ranks the nuclei better at any threshold (a tie "
            "when its interval includes 0).")


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
    first = next(iter(results.values()))
    rows = [[label, *(cell(results[name], key) for name in results)] for key, label in MORE.items() if key in first]
    heads = sorted({key.removesuffix("_macro_f1") for key in first if key.endswith("_macro_f1") and key != "macro_f1"})
    for key in (f"{head}_{metric}" for head in heads for metric in ("accuracy", "balanced_accuracy", "macro_f1")):
        rows.append([key, *(cell(results[name], key) for name in results)])
    return markdown(header, rows)


def paired_table(pairs: dict[str, dict], labels: dict[str, str]) -> str:
    """One row per pair: the accuracy difference and its verdict, then (where the pairs carry it) the
    ROC AUC difference, which asks whether the first model ranks the nuclei better at any threshold."""
    auc = carry_auc(pairs)
    header = ["first − second", "accuracy difference [95 % CI]", "only first right", "only second right",
              "McNemar p (exact)", "verdict", *(["ROC AUC difference [95 % CI]", "AUC verdict"] * auc)]
    rows = []
    for key, pair in pairs.items():
        first, second = key.split("_vs_")
        row = [f"{labels[first]} − {labels[second]}", cell(pair, "accuracy_difference"),
               str(pair["only_first_right"]), str(pair["only_second_right"]), p_value_text(pair["mcnemar_log10_p"]),
               _verdict(pair["tie"], pair["accuracy_difference"], labels[first], labels[second])]
        if auc:
            row += [cell(pair, "auc_difference"),
                    _verdict(pair["auc_tie"], pair["auc_difference"], labels[first], labels[second])]
        rows.append(row)
    return markdown(header, rows)


def carry_auc(pairs: dict[str, dict]) -> bool:
    """Whether evaluate ranked these pairs too (two classes): the AUC columns and note go with it."""
    return all("auc_difference" in pair for pair in pairs.values())


def _verdict(tie: bool, difference: float, first: str, second: str) -> str:
    return "tie" if tie else f"{first if difference > 0 else second} better"


def frame_table(frame: pd.DataFrame, labels: dict[str, str]) -> str:
    """A per-condition or per-hour accuracy table: model columns shown as value [CI] when there is one."""
    keys = [c for c in frame.columns if c not in labels and not c.endswith((LOW, HIGH))]
    header = [*keys, *(labels[name] for name in labels if name in frame.columns)]
    rows = []
    for record in frame.to_dict("records"):
        rows.append([f"{record[k]:g}" if isinstance(record[k], float) else str(record[k]) for k in keys]
                    + [cell(record, name) for name in labels if name in frame.columns])
    return markdown(header, rows)


def verdict(results: dict[str, dict], pairs: dict[str, dict], labels: dict[str, str], protocol: str) -> str:
    """The page's first sentence: which model scores highest, which it ties with or beats (paired tests:
    a difference inside the noise is a tie), and how much plate signal the negative controls measure."""
    best = max(results, key=lambda name: results[name]["accuracy"])
    ties, beaten = [], []
    for key, pair in pairs.items():
        first, second = key.split("_vs_")
        if best in (first, second):
            (ties if pair["tie"] else beaten).append(labels[second if first == best else first])
    parts = [f"ties with {', '.join(ties)}"] * bool(ties) + [f"beats {', '.join(beaten)}"] * bool(beaten)
    text = (f"**Verdict ({protocol})**: {labels[best]} scores the highest accuracy, {cell(results[best], 'accuracy')}"
            + (f"; it {' and '.join(parts)} (paired tests on the same test images)." if parts else "."))
    controls = {name: scores["control"] for name, scores in results.items() if scores.get("control")}
    if not controls:
        return text + " No negative control was scored, so how much plate signal could explain is not measured."
    leaky = max(controls, key=lambda name: controls[name]["balanced_accuracy"])
    text += (f" The negative controls reach a balanced accuracy of {cell(controls[leaky], 'balanced_accuracy')} at "
             f"most ({labels[leaky]}): ")
    # Any control whose whole interval is above chance measures plate signal, not only the highest one.
    above = [name for name, control in controls.items()
             if control.get("balanced_accuracy" + LOW, control["balanced_accuracy"]) > 0.5]
    if not above:
        return text + "their intervals hold chance (0.5): no plate signal is measurable under this protocol."
    signal = max(controls[name]["balanced_accuracy"] for name in above) - 0.5
    names = [labels[name] for name in above]
    if above == [leaky]:
        where = ""  # the highest control, named already
    elif len(names) == 1:
        where = f"the interval of {names[0]} lies above chance; "
    else:
        where = f"the intervals of {', '.join(names[:-1])} and {names[-1]} lie above chance; "
    return text + (f"{where}plate signal alone could explain up to {signal:.3f} above chance under this protocol, "
                   "so a margin of that size is not evidence of radiation damage.")


def headline(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """metrics/headline.json, what ``dvc exp show`` and ``dvc metrics diff`` compare: per model its accuracy on
    irradiated and on sham test nuclei, and its negative control's balanced accuracy (evaluate.json has the rest)."""
    return {name: {"irradiated": scores["irradiated_accuracy"], "sham": scores["sham_accuracy"],
                   **({"control": scores["control"]["balanced_accuracy"]} if scores.get("control") else {})}
            for name, scores in results.items()}


def bps_page(results: dict[str, dict], pairs: dict[str, dict], irradiated_pairs: dict[str, dict],
             by_hour: pd.DataFrame, by_condition: pd.DataFrame, labels: dict[str, str], header: str, resamples: int,
             unit: str, control_text: str, pictures: list[str], protocol: str) -> str:
    """The BPS comparison: verdict, headline and controls, more metrics, model pairs (on all test images and on
    the irradiated ones alone), per hour and condition, pictures."""
    control_folds = control_fold_table(results, labels)
    return "\n".join([
        header + "\n",
        verdict(results, pairs, labels, protocol) + "\n",
        f"Every interval is a 95 % percentile interval of {resamples} bootstrap replicates that redraw "
        f"whole test {unit}s, with replacement, within (true class × sham/irradiated) strata "
        "(bps/evaluation/intervals.py). The negative control is the same model family trained on sham images to "
        f"tell Fe from X-ray, labels no nucleus shows: {control_text}.\n",
        headline_table(results, labels),
        *(["## Negative controls, fold by fold (balanced accuracy)\n", control_folds] if control_folds else []),
        "## More metrics\n", more_table(results, labels),
        "## Model pairs (same test images)\n",
        "A pair is a tie when the paired bootstrap interval of the difference includes 0 or McNemar's p ≥ 0.05.\n",
        paired_table(pairs, labels) if pairs else "(one model)\n",
        *(["## Model pairs on the irradiated nuclei alone\n",
           "Sham nuclei carry no damage to read: on the irradiated ones, a pair compares what the two models "
           "read of it (the same test, the same replicates, restricted to those images)."
           + AUC_NOTE * carry_auc(irradiated_pairs) + "\n",
           paired_table(irradiated_pairs, labels)] if irradiated_pairs else []),
        f"## Accuracy per hour post exposure (intervals over test {unit}s)\n", frame_table(by_hour, labels),
        "## Accuracy per condition (one plate each; no interval: see the wells column)\n",
        frame_table(by_condition, labels),
        "## Pictures (`dvc plots show`)\n",
        markdown(["what", "files"], [["reliability (binned confidence vs accuracy)", "metrics/calibration/*.csv"],
                                     ["CNN saliency per true class", ", ".join(pictures) or "none"]]),
    ])


def layout_page(results: dict[str, dict], labels: dict[str, str], keys: list[str], header: str, resamples: int,
                unit: str, n_groups: int, threshold_mode: str | None) -> str:
    """A layout's comparison: what the intervals are, caveats, and the headline table."""
    notes = [f"Labels are predicted at each model's thresholds (task.threshold: {threshold_mode}), chosen on "
             "the validation split after training and stored in its model card. Average precisions carry no "
             "interval (a replicate would re-rank every label's scores)."] if threshold_mode else []
    if n_groups == 1:
        notes.append(f"The test split is one {unit}: every replicate redraws it, so the intervals are single points "
                     f"and say nothing about {unit}-to-{unit} variation.")
    return "\n".join([
        header + "\n",
        f"Every interval is a 95 % percentile interval of {resamples} bootstrap replicates that redraw "
        f"whole test {unit}s with replacement (grouped by {unit}, unstratified; bps/evaluation/layout_scores.py). "
        + " ".join(notes) + "\n",
        layout_headline(results, labels, keys),
        "The negative controls and the classical appearance and foci baselines need sham plates and nucleus foci, "
        "so the layout pipeline (datasets/dvc.yaml) has no stages for them.\n",
    ])


def layout_headline(results: dict[str, dict], labels: dict[str, str], keys: list[str]) -> str:
    """One row per model: the layout's headline scores with their intervals."""
    return markdown(["model", *keys], [[labels[name], *(cell(scores, key) for key in keys)]
                                       for name, scores in results.items()])
