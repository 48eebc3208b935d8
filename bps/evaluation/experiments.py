"""Mean ± SD of every metric across DVC experiments, read from ``dvc exp show --json``.

    dvc exp run --queue -S 'train.seed=range(0, 5)' && dvc queue start -j 1   # then, when done:
    python -m bps exp-summary                          # every experiment in `dvc exp show`
    python -m bps exp-summary --metrics 'lenet\\.(irradiated|control)$'
    python -m bps exp-summary --json shown.json        # a saved `dvc exp show --json`

One trained network is one draw: seeds 0-4 of LeNet-5 gave test accuracies 0.59-0.71 on the
default data. Queue one experiment per seed, then summarise them here, so a comparison rests on
the spread across seeds and not on one lucky run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def flatten(data: object, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric leaves of nested metrics as (dotted key, value), as ``dvc metrics show`` names them."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}{key}.")
    elif isinstance(data, int | float) and not isinstance(data, bool):
        yield prefix.rstrip("."), float(data)


def experiments(shown: list[dict], metrics_file: str) -> list[dict]:
    """Every finished experiment of ``dvc exp show --json``: its name, params and flat metrics.

    The workspace and the commits themselves are left out: only experiments (``dvc exp run``,
    queued or not) count, each once.
    """
    found = []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                metrics = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
                if not metrics:
                    continue  # queued, running or failed
                params = dict(flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {})))
                found.append({"name": rev.get("name") or rev["rev"][:7], "params": params,
                              "metrics": dict(flatten(metrics))})
    return found


def varied_params(found: list[dict]) -> dict[str, list[float]]:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bps exp-summary", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="a saved `dvc exp show --json` (default: run it now)")
    parser.add_argument("--metrics", default=".",
                        help="regular expression picking metric keys (default: every one)")
    parser.add_argument("--file", default="metrics/headline.json", help="the metrics file to read (a DVC metric)")
    args = parser.parse_args(argv)
    if args.json:
        shown = json.loads(args.json.read_text())
    else:
        result = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"error: `dvc exp show --json` failed: {result.stderr.strip()}", file=sys.stderr)
            raise SystemExit(1)
        shown = json.loads(result.stdout)
    found = experiments(shown, args.file)
    if len(found) < 2:
        print(f"error: {len(found)} finished experiment(s) with {args.file}; queue at least two "
              "(dvc exp run --queue -S 'train.seed=range(0, 5)' && dvc queue start)", file=sys.stderr)
        raise SystemExit(1)
    varied = ", ".join(f"{key} = {values}" for key, values in varied_params(found).items()) or "nothing"
    print(f"{len(found)} experiments ({', '.join(e['name'] for e in found)}); params varied: {varied}\n")
    print(f"{'metric':<40} {'n':>3}  {'mean ± SD':>17}  {'min':>7}  {'max':>7}")
    for row in spread(found, args.metrics):
        print(f"{row['metric']:<40} {row['n']:>3}  {row['mean']:>7.4f} ± {row['sd']:<7.4f}  "
              f"{row['min']:>7.4f}  {row['max']:>7.4f}")
