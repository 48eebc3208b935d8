"""Mean ± SD of every metric across DVC experiments, read from ``dvc exp show --json``.

    dvc exp run --queue -S 'train.seed=range(0, 5)' && dvc queue start -j 1   # then, when done:
    python -m bps exp-summary                          # every experiment in `dvc exp show`
    python -m bps exp-summary --metrics 'lenet\\.(irradiated|control)$'
    python -m bps exp-summary --json shown.json        # a saved `dvc exp show --json`
    python -m bps exp-summary --by data.synthetic.plate_effect --intervals   # the plate-drift stress test
    python -m bps exp-summary --rows > runs.csv        # one row each: the CNN's validation and test figures
    python -m bps exp-summary --seeds runs.csv more.csv  # those rows as one table: a variant per row, a seed per column

One trained network is one draw: seeds 0-4 of LeNet-5 gave test accuracies 0.59-0.71 on the
default data. Queue one experiment per seed, then summarise them here, so a comparison rests on
the spread across seeds and not on one lucky run.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml


def flatten(data: object, prefix: str = "", numeric: bool = True) -> Iterator[tuple[str, object]]:
    """Numeric leaves of nested metrics as (dotted key, value), as ``dvc metrics show`` names them;
    with ``numeric`` False every leaf (params: ``preprocess.normalize`` is a name), lists as tuples."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}{key}.", numeric)
    elif not numeric:
        yield prefix.rstrip("."), tuple(data) if isinstance(data, list) else data
    elif isinstance(data, int | float) and not isinstance(data, bool):
        yield prefix.rstrip("."), float(data)


def experiments(shown: list[dict], metrics_file: str) -> list[dict]:
    """Every finished experiment of ``dvc exp show --json``: its name, params and flat metrics.

    The workspace and the commits themselves are left out: only experiments (``dvc exp run``,
    queued or not) count, each once. One still queued or running is left out too: an experiment
    running in the workspace shows the workspace's old metrics until it ends.
    """
    found = []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state") in ("queued", "running"):
                continue
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                metrics = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
                if not metrics:
                    continue  # failed
                params = dict(flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}), numeric=False))
                found.append({"name": rev.get("name") or rev["rev"][:7], "rev": rev["rev"], "params": params,
                              "metrics": dict(flatten(metrics))})
    return found


def varied_params(found: list[dict]) -> dict[str, list]:
    """Params whose value differs between the experiments (e.g. train.seed), with each one's values."""
    keys = sorted(set().union(*(e["params"] for e in found))) if found else []
    return {key: [e["params"].get(key) for e in found] for key in keys
            if len({e["params"].get(key) for e in found}) > 1}


def spread(found: list[dict], pattern: str = ".*") -> list[dict]:
    """Per metric matching ``pattern``: experiments with it, mean, SD (n − 1), min and max."""
    keys = sorted({key for e in found for key in e["metrics"] if re.search(pattern, key)})
    rows = []
    for key in keys:
        values = [e["metrics"][key] for e in found if key in e["metrics"]]
        rows.append({"metric": key, "n": len(values), "mean": statistics.fmean(values),
                     "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
                     "min": min(values), "max": max(values)})
    return rows


def where(found: list[dict], conditions: list[str]) -> list[dict]:
    """The experiments whose params match every ``PARAM=VALUE`` of ``conditions`` (the value read as
    YAML, as ``dvc exp run -S`` reads it: ``0`` matches a param of 0.0)."""
    wanted = {}
    for condition in conditions:
        key, equals, value = condition.partition("=")
        if not equals or not key:
            raise ValueError(f"--where {condition!r}: expected PARAM=VALUE, e.g. train.model=cnn")
        value = yaml.safe_load(value)
        wanted[key] = tuple(value) if isinstance(value, list) else value  # lists are flattened to tuples
    return [e for e in found if all(e["params"].get(key) == value for key, value in wanted.items())]


def grouped(found: list[dict], keys: list[str]) -> dict[tuple, list[dict]]:
    """The experiments by their values of the params ``keys`` (e.g. data.synthetic.plate_effect), in order."""
    groups: dict[tuple, list[dict]] = {}
    for experiment in found:
        groups.setdefault(tuple(experiment["params"].get(key) for key in keys), []).append(experiment)
    return groups


# Reads a file from an experiment's commit: :func:`committed`, or a stand-in in the tests.
Reader = Callable[..., dict | list[dict] | None]


def committed(rev: str, path: str = "metrics/evaluate.json") -> dict | list[dict] | None:
    """A metrics file as an experiment's commit holds it (git tracks metrics/), or None if it has none:
    JSON parsed, a DVCLive ``.tsv`` as its rows (one dict per step, values as text)."""
    result = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    if path.endswith(".tsv"):
        return list(csv.DictReader(result.stdout.splitlines(), delimiter="\t"))
    return json.loads(result.stdout)


# The stress test's figures per model in metrics/evaluate.json: the block each sits in, and its key.
STRESS_FIGURES = {"irradiated": ("", "irradiated_accuracy"), "sham": ("", "sham_accuracy"),
                  "control": ("control", "accuracy")}


def stress(evaluations: list[dict], chance: float = 0.5) -> list[dict]:
    """Per model of ``evaluations`` (one ``evaluate.json`` per seed): irradiated and sham accuracy
    and the negative control, each as mean and SD over the seeds and in how many seeds its 95 %
    interval holds ``chance``. A model that reads plates, not damage, puts its sham accuracy and
    control away from chance on plates it never saw. A model that only some experiments scored
    (one added to ``evaluate`` later) is summarised over those, and its ``n`` says how many."""
    models = dict.fromkeys(name for evaluation in evaluations for name, scores in evaluation.items()
                           if "sham_accuracy" in scores)
    rows = []
    for model in models:
        scoring = [evaluation[model] for evaluation in evaluations if model in evaluation]
        row: dict = {"model": model, "n": len(scoring)}
        for figure, (block, key) in STRESS_FIGURES.items():
            scored = [scores[block] if block else scores for scores in scoring]
            values = [score[key] for score in scored]
            row[figure] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan"))
            row[f"{figure}_holds_chance"] = sum(score[f"{key}_ci95_low"] <= chance <= score[f"{key}_ci95_high"]
                                                for score in scored)
        rows.append(row)
    return rows


# evaluate.json's models that hold the network train-lenet trained (``train.model``), whatever it is.
NETWORK_ROWS = ("lenet", "hybrid", "fusion")


def row_name(model: str, group: list[dict]) -> str:
    """``model``, naming the network behind it when it is not LeNet-5: ``lenet (cnn)``, ``hybrid (cnn)``."""
    networks = sorted({str(e["params"].get("train.model", "lenet")) for e in group})
    return model if model not in NETWORK_ROWS or networks == ["lenet"] else f"{model} ({'/'.join(networks)})"


def print_stress(groups: dict[tuple, list[dict]], keys: list[str],
                 read: Reader = committed) -> None:
    """The stress test's table per group: each model's irradiated, sham and control figures over its seeds."""
    for values, group in groups.items():
        evaluations = [evaluation for evaluation in map(read, (e["rev"] for e in group)) if evaluation]
        varied = ", ".join(f"{key} = {found}" for key, found in varied_params(group).items()) or "no other param varies"
        print(f"\n{', '.join(f'{key}={value}' for key, value in zip(keys, values))}: {len(evaluations)} "
              f"experiment{'s' if len(evaluations) != 1 else ''} ({varied})")
        if not evaluations:
            continue
        rows = stress(evaluations)
        names = [row_name(row["model"], group) for row in rows]
        width = max(12, *map(len, names))
        print(f"{'model':<{width}} {'irradiated':>15}  {'sham':>15} {'CI∋0.5':>6}  {'control':>15} {'CI∋0.5':>6}")
        for name, row in zip(names, rows):
            cells = [f"{row[figure][0]:.3f} ± {row[figure][1]:.3f}" if row["n"] > 1 else f"{row[figure][0]:.3f}        "
                     for figure in STRESS_FIGURES]  # one experiment: no spread to give
            n = row["n"]
            print(f"{name:<{width}} {cells[0]:>15}  {cells[1]:>15} {row['sham_holds_chance']:>3}/{n:<2}  "
                  f"{cells[2]:>15} {row['control_holds_chance']:>3}/{n:<2}")


# The models a row gives beside the foci count on the irradiated nuclei: the CNN, and the regression
# on its features and the foci features (older experiments have no fusion: its cells stay empty).
ROW_MODELS = ("lenet", "fusion")


def experiment_row(experiment: dict, keys: list[str], read: Reader = committed) -> dict:
    """One experiment as a CSV row: the params ``keys``, what its CNN's kept epoch scored on validation
    (:func:`kept_epoch_scores`), and for each of :data:`ROW_MODELS` on the test split its irradiated and sham
    accuracy and its paired difference from the foci count on the irradiated nuclei, with that
    difference's 95 % interval."""
    test = read(experiment["rev"]) or {}
    row = {"experiment": experiment["name"], **{key: experiment["params"].get(key) for key in keys},
           **kept_epoch_scores(experiment["rev"], read)}
    for model in ROW_MODELS:
        scores = test.get(model, {})
        difference = versus_foci(test.get("paired_irradiated", {}), model)
        row |= {f"{model}.irradiated": _rounded(scores.get("irradiated_accuracy")),
                f"{model}.sham": _rounded(scores.get("sham_accuracy")),
                **{f"{model}-foci.{end}": value for end, value in difference.items()}}
    return row


def kept_epoch_scores(rev: str, read: Reader = committed) -> dict:
    """The CNN's validation macro F1 and accuracy at the epoch it kept (``best_epoch``), from DVCLive's
    per-epoch files: ``metrics.json`` holds the last epoch's, which is another epoch whenever
    training went on past the kept one. Empty where the experiment has no such files."""
    epoch = (read(rev, "metrics/lenet/metrics.json") or {}).get("best_epoch")
    scores: dict = {"val_macro_f1": None, "val_accuracy": None, "best_epoch": epoch}
    for key in ("val_macro_f1", "val_accuracy"):
        steps = read(rev, f"metrics/lenet/plots/metrics/{key}.tsv") or []
        scores[key] = next((float(step[key]) for step in steps if int(step["step"]) == epoch), None)
    return scores


def versus_foci(pairs: dict, model: str) -> dict[str, float | None]:
    """``model`` − foci count in accuracy and in ROC AUC, each with its interval, whichever order
    evaluate paired them in (experiments evaluated before the AUC existed leave it empty)."""
    if f"{model}_vs_foci" in pairs:
        pair, sign = pairs[f"{model}_vs_foci"], 1
    else:
        pair, sign = pairs.get(f"foci_vs_{model}", {}), -1
    row = {}
    for name, key, prefix in (("irradiated", "accuracy_difference", ""), ("auc", "auc_difference", "auc_")):
        low, high = (pair.get(f"{key}_ci95_{end}") for end in ("low", "high"))
        if sign < 0:
            low, high = high, low
        row |= {name: _signed(pair.get(key), sign), f"{prefix}ci95_low": _signed(low, sign),
                f"{prefix}ci95_high": _signed(high, sign)}
    return row


def _signed(value: float | None, sign: int) -> float | None:
    return None if value is None else sign * value


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def print_rows(found: list[dict], read: Reader = committed) -> None:
    """Every experiment as a CSV row (see :func:`experiment_row`), with the params that vary between them."""
    keys = list(varied_params(found))
    writer = csv.DictWriter(sys.stdout, fieldnames=list(experiment_row(found[0], keys, read)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(experiment_row(experiment, keys, read) for experiment in found)


def interval_verdict(low: float, high: float) -> str:
    """A paired difference's verdict from its 95 % interval: a difference inside the noise is a tie."""
    return "better" if low > 0 else "behind" if high < 0 else "tie"


def seed_table(rows: list[dict], renames: dict[str, str] | None = None) -> str:
    """The rows that ``--rows`` wrote (``fs<seed>-<variant>`` experiments, from one or more files) as a
    Markdown table: one variant per row, one seed per column, each cell LeNet-5 − foci count on the
    irradiated nuclei with its verdict (in accuracy, then in ROC AUC where the row has it) and LeNet-5's
    sham accuracy (0.5 reads no plates).

    A row without a ``seed`` column takes the seed its name gives; ``renames`` maps a variant's name to the
    row it belongs on (runs of one setting named apart); the first cell of a variant and seed is kept."""
    cells: dict[str, dict[int, str]] = {}
    for row in rows:
        match = re.fullmatch(r"fs(\d+)-(.+)", row["experiment"])
        if not match:
            raise ValueError(f"experiment {row['experiment']!r}: expected a name fs<seed>-<variant>")
        seed, variant = int(row.get("seed") or match[1]), (renames or {}).get(match[2], match[2])
        difference = float(row["lenet-foci.irradiated"])
        low, high = (float(row.get(f"lenet-foci.{end}") or row[end]) for end in ("ci95_low", "ci95_high"))
        text = f"{difference:+.3f} {interval_verdict(low, high)}"
        if row.get("lenet-foci.auc"):  # rows evaluated since the AUC exists
            auc_low, auc_high = (float(row[f"lenet-foci.auc_ci95_{end}"]) for end in ("low", "high"))
            text += f", AUC {float(row['lenet-foci.auc']):+.3f} {interval_verdict(auc_low, auc_high)}"
        cells.setdefault(variant, {}).setdefault(seed, f"{text} (sham {float(row['lenet.sham']):.2f})")
    seeds = sorted({seed for by_seed in cells.values() for seed in by_seed})
    lines = ["| variant | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
             "|---|" + "---|" * len(seeds)]
    lines += [f"| {variant} | " + " | ".join(by_seed.get(seed, "") for seed in seeds) + " |"
              for variant, by_seed in cells.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bps exp-summary", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="a saved `dvc exp show --json` (default: run it now)")
    parser.add_argument("--metrics", default=".",
                        help="regular expression picking metric keys (default: every one)")
    parser.add_argument("--file", default="metrics/headline.json", help="the metrics file to read (a DVC metric)")
    parser.add_argument("--all-commits", action="store_true",
                        help="the experiments of every commit (dvc exp show -A), not only of HEAD's")
    parser.add_argument("--where", action="append", default=[], metavar="PARAM=VALUE",
                        help="only the experiments with this param value, e.g. train.model=cnn (repeatable)")
    parser.add_argument("--by", action="append", default=[], metavar="PARAM",
                        help="one summary per value of this param, e.g. data.synthetic.plate_effect (repeatable)")
    parser.add_argument("--intervals", action="store_true",
                        help="per model, irradiated and sham accuracy and the control over the seeds, and how many "
                             "95 %% intervals hold 0.5 (each experiment's metrics/evaluate.json, from its commit)")
    parser.add_argument("--rows", action="store_true",
                        help="one CSV row per experiment: the params that vary, the CNN's kept epoch's validation "
                             "scores, and its and the fusion's test figures beside the foci count's (from each "
                             "experiment's commit)")
    parser.add_argument("--seeds", nargs="+", type=Path, metavar="CSV",
                        help="instead of the experiments: CSV files that --rows wrote, as one Markdown table of "
                             "LeNet-5 − foci count on the irradiated nuclei, a variant per row and a seed per column")
    parser.add_argument("--rename", action="append", default=[], metavar="VARIANT=ROW",
                        help="with --seeds: put the variant named VARIANT (fs<seed>-VARIANT) on the row ROW "
                             "(repeatable), e.g. base=defaults")
    args = parser.parse_args(argv)
    if args.seeds:
        if any("=" not in rename for rename in args.rename):
            parser.error(f"--rename: expected VARIANT=ROW, got {args.rename}")
        try:
            rows = [row for path in args.seeds for row in csv.DictReader(path.open(newline=""))]
            print(seed_table(rows, dict(rename.split("=", 1) for rename in args.rename)))
        except KeyError as error:
            parser.error(f"--seeds: no column {error}: expected the CSV files that --rows writes")
        except (OSError, ValueError) as error:
            parser.error(f"--seeds: {error}")
        return
    if args.json:
        shown = json.loads(args.json.read_text())
    else:
        command = ["dvc", "exp", "show", "--json", *(["--all-commits"] if args.all_commits else [])]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError:
            print("error: exp-summary reads `dvc exp show --json`, and dvc is not on PATH "
                  "(activate the project's virtual environment)", file=sys.stderr)
            raise SystemExit(1) from None
        if result.returncode != 0:
            print(f"error: `dvc exp show --json` failed: {result.stderr.strip()}", file=sys.stderr)
            raise SystemExit(1)
        shown = json.loads(result.stdout)
    try:
        found = where(experiments(shown, args.file), args.where)
    except ValueError as error:
        parser.error(str(error))
    needed = 1 if args.rows else 2  # a row per experiment; a spread needs two
    if len(found) < needed:
        matching = f" matching --where {' '.join(args.where)}" if args.where else ""
        print(f"error: {len(found)} finished experiment(s) with {args.file}{matching}; queue at least {needed} "
              "(dvc exp run --queue -S 'train.seed=range(0, 5)' && dvc queue start)", file=sys.stderr)
        raise SystemExit(1)
    if args.rows:
        print_rows(found)
        return
    varied = ", ".join(f"{key} = {values}" for key, values in varied_params(found).items()) or "nothing"
    print(f"{len(found)} experiments ({', '.join(e['name'] for e in found)}); params varied: {varied}")
    groups = grouped(found, args.by)
    if args.intervals:
        print_stress(groups, args.by)
        return
    for values, group in groups.items():
        if args.by:
            print(f"\n{', '.join(f'{key}={value}' for key, value in zip(args.by, values))}: {len(group)} experiments")
        print(f"\n{'metric':<40} {'n':>3}  {'mean ± SD':>17}  {'min':>7}  {'max':>7}")
        for row in spread(group, args.metrics):
            print(f"{row['metric']:<40} {row['n']:>3}  {row['mean']:>7.4f} ± {row['sd']:<7.4f}  "
                  f"{row['min']:>7.4f}  {row['max']:>7.4f}")
