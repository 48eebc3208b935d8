"""Mean ± SD of every metric across DVC experiments, read from ``dvc exp show --json``.

One trained network is one draw: seeds 0-4 of LeNet-5 gave test accuracies 0.59-0.71 on the
default data. Queue one experiment per seed, then summarise them here, so a comparison rests on
the spread across seeds and not on one lucky run.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator


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
