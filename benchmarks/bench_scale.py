"""Scaling: a full-size run stage by stage, the baseline's memory at full size, DDP on CPU.

Full size is the NASA dataset's: 17 conditions × 4,540 images = 77,180 (simulated here, never
downloaded). ``python -m benchmarks --only full_size`` runs the whole pipeline at that size
(about 10 minutes and several GB on 2 cores); ``--images-per-condition`` makes it smaller.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import bench_limits
from benchmarks.bench_dvc import BIN, CLOCK, QUICK, StageRun, _run, project_copy, set_params, stage_rows, stage_runs
from benchmarks.bench_limits import Limit
from benchmarks.common import Row
from bps.sim.render import plan_dataset

FULL_SIZE = 4540  # images per condition: 77,180 in all, the size of the NASA bucket
QUICK_SIZE = 8
SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _size(quick: bool, images_per_condition: int | None) -> int:
    return images_per_condition or (QUICK_SIZE if quick else FULL_SIZE)


def full_size_rows(workdir: Path, quick: bool, images_per_condition: int | None = None,
                   results: Path | None = None) -> list[Row]:
    """``dvc repro`` from scratch on simulated data of the full size: seconds and peak RSS per stage, and
    each stage's time over its limit measured in the same run (bench_limits); with ``results``, the
    table also as full_size_<N>.json and .md there."""
    count = _size(quick, images_per_condition)
    print(f"full_size: {count} images per condition ({17 * count} in all), stage by stage", file=sys.stderr)
    changes = {("data", "synthetic", "images_per_condition"): count}
    if quick:
        changes |= {("train", "epochs"): 1, ("baseline", "epochs"): 1}
    project = project_copy(workdir / "full", changes)
    load = os.getloadavg()[0]  # other work on the machine slows stages and limits alike, not always equally
    host = {"before": bench_limits.host_rate()}
    try:
        timed = stage_runs(project, "full")
    finally:  # the run's results table, for people: the project copy goes with the scratch folder
        comparison = project / "metrics" / "comparison.md"
        if comparison.is_file():
            print(comparison.read_text(), file=sys.stderr)
            if results is not None:  # every model with its intervals and paired tests, for the docs
                results.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(comparison, results / f"full_size_{count}_comparison.md")
    print("  limits: rendering, decoding and the CNN in memory, on the same data", file=sys.stderr, flush=True)
    limit_of = {"download": bench_limits.render_limit(project)}
    limit_of["preprocess"], one_image = bench_limits.decode_limit(project)
    limit_of |= bench_limits.cnn_limits(project)
    host["after"] = bench_limits.host_rate()
    rerun = rerun_between_limits(project, limit_of["train-lenet"])
    runs, _ = timed
    rows = stage_rows(project, "full", timed)
    rows[-1].note += f"; {17 * count} simulated images"
    seconds = {run.stage: run.seconds for run in runs}
    for stage, limit in limit_of.items():
        rows.append(Row(f"full_{stage}_vs_limit", seconds[stage] / limit.seconds, "x",
                        f"{seconds[stage]:.1f} s vs {limit.seconds:.1f} s: {limit.what}"))
    split = ", ".join(f"{part.removesuffix('_ms').replace('_', ' ')} {one_image[part]:.2f} ms"
                      for part in ("decode_ms", "model_input_ms", "features_ms"))
    rows.append(Row("full_train-lenet_rerun_vs_limit", rerun["vs_limit"], "x",
                    f"its command again after the run, {rerun['command_s']:.1f} s, between two limits "
                    f"({rerun['limit_before_s']:.1f} s and {rerun['limit_after_s']:.1f} s)"))
    rows.append(Row("full_host_rate", host["before"], "images/s",
                    f"LeNet-5 on random tensors before the run; {host['after']:.0f} after it"))
    rows.append(Row("full_features_vs_decode", one_image["features_ms"] / one_image["decode_ms"], "x",
                    f"one image's work on one core: {split}"))
    if results is not None:
        write_results(results, count, runs, limit_of, one_image, rows, load, host, rerun)
    return rows


def rerun_between_limits(project: Path, before: Limit) -> dict[str, float]:
    """train-lenet's command run again (same data and params: the same bytes out), then its limit measured
    again: its ratio to the mean of the two limits that bracket it, which a host whose speed drifts over a
    long run cannot skew the way it can skew a ratio of two measurements minutes apart."""
    print("  train-lenet again, between two measurements of its limit", file=sys.stderr, flush=True)
    start = time.perf_counter()
    _run(sys.executable, "-m", "stages.train_lenet", cwd=project)
    seconds = time.perf_counter() - start
    after = bench_limits.cnn_limits(project)["train-lenet"]
    return {"command_s": round(seconds, 2), "limit_before_s": round(before.seconds, 3),
            "limit_after_s": round(after.seconds, 3),
            "vs_limit": round(2 * seconds / (before.seconds + after.seconds), 2)}


def write_results(folder: Path, count: int, runs: list[StageRun], limit_of: dict[str, Limit],
                  one_image: dict[str, float], rows: list[Row], load: float, host: dict[str, float],
                  rerun: dict[str, float]) -> None:
    """The run's table as full_size_<N>.json (for docs to include) and the same as Markdown."""
    stages = [{"stage": run.stage, "seconds": round(run.seconds, 1), "command_s": round(run.command_s, 1),
               "peak_rss_mib": round(run.rss_mb), "peak_anonymous_mib": round(run.anon_mb),
               "limit_s": round(limit_of[run.stage].seconds, 1) if run.stage in limit_of else None,
               "vs_limit": round(run.seconds / limit_of[run.stage].seconds, 2) if run.stage in limit_of else None,
               "limit": limit_of[run.stage].what if run.stage in limit_of else None} for run in runs]
    total = rows[len(runs)]
    table = {"command": f"python -m benchmarks --only full_size --images-per-condition {count}",
             "images_per_condition": count, "images": 17 * count, "cores": os.cpu_count(),
             "load_at_start": round(load, 1),
             "date": time.strftime("%Y-%m-%d", time.gmtime()), "stages": stages, "total_s": round(total.value, 1),
             "result": total.note, "one_image_ms": {k: round(v, 3) for k, v in one_image.items()},
             "host_rate": {k: round(v) for k, v in host.items()}, "train_lenet_rerun": rerun}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"full_size_{count}.json").write_text(json.dumps(table, indent=2) + "\n")
    lines = [f"`{table['command']}`: {table['images']:,} simulated images, {table['cores']} cores "
             f"(load average {table['load_at_start']} at the start), {table['date']}. One `dvc repro` from scratch; "
             "a stage's seconds run from its command's start to the next one's, so they include DVC hashing and "
             "caching its outputs; peak RSS is its command's largest process (dvc's own is ~100 MiB), and of it "
             "the peak anonymous memory, sampled every 50 ms: RSS less file-backed pages (shared libraries, a "
             "memory-mapped array's pages), which the page cache holds and can drop.",
             "", "| stage | seconds | its command (s) | peak RSS (MiB) | anonymous (MiB) | limit (s) | × limit "
             "| limit, measured in the same run |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for stage in stages:
        limit = ("", "", "") if stage["limit_s"] is None else (stage["limit_s"], stage["vs_limit"], stage["limit"])
        lines.append(f"| {stage['stage']} | {stage['seconds']} | {stage['command_s']} | {stage['peak_rss_mib']} "
                     f"| {stage['peak_anonymous_mib']} "
                     f"| {limit[0]} | {limit[1]} | {limit[2]} |")
    lines += [f"| **whole `dvc repro`** | **{table['total_s']}** | | | | | | |", "", f"{total.note}.", "",
              "One image's work on one core (ms): " + ", ".join(f"{k.removesuffix('_ms').replace('_', ' ')} {v}"
                                                               for k, v in table["one_image_ms"].items()
                                                               if k != "images") + ".", "",
              f"train-lenet's command again after the run, between two measurements of its limit: "
              f"{rerun['command_s']:.1f} s against {rerun['limit_before_s']:.2f} s and {rerun['limit_after_s']:.2f} s, "
              f"**{rerun['vs_limit']} × its limit**.", "",
              f"The host's speed (LeNet-5 training on random tensors, images/s): {table['host_rate']['before']:,} "
              f"before the run, {table['host_rate']['after']:,} after it."]
    (folder / f"full_size_{count}.md").write_text("\n".join(lines) + "\n")


def write_prepared(root: Path, images_per_condition: int, size: int = 64) -> int:
    """``data/prepared`` as preprocess would leave it for this many images per condition, with
    random pixels and labels drawn from the dataset's real table: no simulation, no TIFFs."""
    table = plan_dataset(images_per_condition, [4, 24, 48], seed=0)
    rng = np.random.default_rng(0)
    split = rng.choice(list(SPLITS), size=len(table), p=list(SPLITS.values()))
    folder = root / "data" / "prepared"
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        rows = table[split == name]
        rows.to_csv(folder / f"{name}.csv", index=False)
        shape = (len(rows), 1, size, size)
        array = np.lib.format.open_memmap(folder / f"{name}_images.npy", mode="w+", dtype=np.uint8, shape=shape)
        for start in range(0, len(rows), 4096):
            array[start : start + 4096] = rng.integers(0, 256, (len(array[start : start + 4096]), 1, size, size))
        array.flush()
    return int((split == "train").sum())


# The stage as it was: torch imported with its loader, one float matrix scaled as a whole, saved
# while the features were still alive.
ONE_MATRIX = """
from pathlib import Path
import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from bps.models import pixel_mlp, sklearn_io
from bps.data.arrays import load_split
from bps.targets.labels import get_target
from bps.core.params import BaselineParams
train_images, train_table = load_split("train")
val_images, _ = load_split("val")
train_flat = pixel_mlp.flatten(train_images)
scaler = StandardScaler().fit(train_flat)
train_x, val_x = scaler.transform(train_flat), scaler.transform(pixel_mlp.flatten(val_images))
mlp = pixel_mlp.make_mlp(BaselineParams())
pixel_mlp.fit_epoch(mlp, train_x, get_target("particle").encode(train_table), np.arange(2))
mlp.predict_proba(val_x)
import skops.io as sio  # the saving step's imports (torch among them), as the stage had them
sio.dumps(make_pipeline(scaler, mlp))
"""


def _peak_rss_mb(command: list[str], cwd: Path) -> tuple[float, float]:
    """``command``'s peak RSS (MiB) and seconds, as :data:`CLOCK` records them."""
    clock = cwd.parent / f"{cwd.name}-clock.json"
    _run(*CLOCK, str(clock), *command, cwd=cwd)
    run = json.loads(clock.read_text())
    return run["rss_kib"] / 1024, run["end"] - run["start"]


def baseline_memory_rows(workdir: Path, quick: bool, images_per_condition: int | None = None) -> list[Row]:
    """Peak RSS of the train-baseline stage (one epoch) on full-size prepared arrays, beside the
    one-matrix way it used to work (StandardScaler.fit and transform of the whole split)."""
    count = _size(quick, images_per_condition)
    root = project_copy(workdir / "baseline", {("baseline", "epochs"): 1})
    train = write_prepared(root, count)
    stage_mb, stage_s = _peak_rss_mb([sys.executable, "-m", "stages.train_baseline"], root)
    reference_mb, _ = _peak_rss_mb([sys.executable, "-c", ONE_MATRIX], root)
    note = f"{train} train images of 64×64, 1 epoch, {stage_s:.0f} s; one float matrix: {reference_mb:.0f} MiB"
    return [Row("baseline_peak_rss_mb", stage_mb, "MiB", note),
            Row("baseline_rss_vs_one_matrix", reference_mb / stage_mb, "x", "peak RSS, one-matrix way / blockwise")]


def ddp_rows(workdir: Path, quick: bool) -> list[Row]:
    """train-lenet with 2 processes (torchrun, gloo) vs 1, same data, params and seed, side by side."""
    root = project_copy(workdir / "ddp", QUICK if quick else {("train", "epochs"): 3})
    _run(str(BIN / "dvc"), "repro", "-q", "preprocess", cwd=root)
    runs = {}
    for processes in (1, 2):
        set_params(root, {("train", "processes"): processes})
        start = time.perf_counter()
        _run(sys.executable, "-m", "stages.train_lenet", cwd=root)
        seconds = time.perf_counter() - start
        runs[processes] = seconds, json.loads((root / "metrics/lenet/metrics.json").read_text())
    (one_s, one), (two_s, two) = runs[1], runs[2]
    images = len((root / "data/prepared/train.csv").read_text().splitlines()) - 1
    epochs = 1 if quick else 3
    return [
        Row("ddp_2proc_vs_1proc", one_s / two_s, "x",
            f"train-lenet, {images} images × {epochs} epoch(s) on CPU: 1 process {one_s:.1f} s, 2: {two_s:.1f} s"),
        Row("ddp_val_accuracy_2proc", two["val_accuracy"], "",
            f"1 process {one['val_accuracy']:.4f}; val loss {two['val_loss']:.4f} vs {one['val_loss']:.4f}"),
    ]
