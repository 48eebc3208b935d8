"""What each full-size stage could take at best, measured in the same run on the same data.

* download (the simulator): rendering alone, no TIFF written, on every core, over a sample of the
  run's own images (every k-th), projected to all of them;
* preprocess (which also computes the classical features): one bare TIFF decode of every raw file,
  on every core; beside it the single-core split of one image's work (decode, model input, features);
* train-lenet and lr-find: the same network on batches already in memory as tensors (same batch
  size, torch's default threads as in the stage, augmentation off): one epoch of training over the
  train split and one forward pass over the val split, times the stage's epochs (lr-find: its steps).

A shared 2-core host can run at half its speed for minutes, so a limit taken after a run of many minutes
may not describe the moment a stage ran. :func:`host_rate` (the same network on random tensors, a few
seconds) says how fast the host was before the run; the benchmark also re-runs train-lenet's command
right between two measurements of its limit, so that the ratio compares two things timed together.

Each limit is a floor, not a target: the stage also starts Python, reads tables and writes files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from bps.core.params import Params, load_params
from bps.core.workers import process_map, usable_cores
from bps.sim.render import simulate_image

RENDER_SAMPLE = 2040  # images rendered for the simulator's rate (120 per condition)
SPLIT_SAMPLE = 300  # images timed one by one for the decode / model input / features split


@dataclass
class Limit:
    seconds: float
    what: str


def _render(row: tuple[str, float, str, int]) -> None:
    simulate_image(*row, seed=0)


def _decode(path: Path) -> None:
    tifffile.imread(path, maxworkers=1)


def _on_every_core(work, items: list) -> float:
    start = time.perf_counter()
    for _ in process_map(work, items):
        pass
    return time.perf_counter() - start


def render_limit(project: Path) -> Limit:
    """Rendering the images without writing them, on every core (a sample, projected)."""
    table = pd.read_csv(project / "data/raw/meta.csv")
    step = max(1, len(table) // RENDER_SAMPLE)
    sample = table.iloc[::step]
    rows = list(sample[["filename", "particle_type", "dose_Gy", "hr_post_exposure"]].itertuples(index=False, name=None))
    seconds = _on_every_core(_render, rows) * len(table) / len(rows)
    return Limit(seconds, f"rendering without I/O on {usable_cores()} cores ({len(rows)} of the images, projected)")


def decode_limit(project: Path) -> tuple[Limit, dict[str, float]]:
    """One bare decode of every raw TIFF on every core; and one image's work, part by part, on one core."""
    paths = sorted((project / "data/raw").glob("*.tif"))
    seconds = _on_every_core(_decode, paths)
    return Limit(seconds, f"bare TIFF decode of all {len(paths)} files on {usable_cores()} cores"), _one_image_split(
        paths[:: max(1, len(paths) // SPLIT_SAMPLE)], _params(project))


def _params(project: Path) -> Params:
    return load_params(project / "params.yaml")


def _one_image_split(paths: list[Path], params: Params) -> dict[str, float]:
    """Milliseconds per image on one core: decode, the model input from the decoded pixels, the features."""
    from bps.classical.features import image_features
    from bps.data.images import prepare_image, read_tiff

    preprocess, features = params.preprocess, params.features
    start = time.perf_counter()
    images = [read_tiff(path) for path in paths]
    decoded = time.perf_counter()
    for image in images:
        prepare_image(image, preprocess)
    prepared = time.perf_counter()
    for image in images:
        image_features(image, features)
    done = time.perf_counter()
    per_ms = 1000 / len(paths)
    return {"decode_ms": (decoded - start) * per_ms, "model_input_ms": (prepared - decoded) * per_ms,
            "features_ms": (done - prepared) * per_ms, "images": len(paths)}


def _train_rate(model, batches: list, lr: float) -> float:
    """Images per second of training steps over ``batches`` (after one warm-up step)."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(images: torch.Tensor, target: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), target).backward()
        optimizer.step()

    step(*batches[0])  # first-call allocations
    start = time.perf_counter()
    for images, target in batches:
        step(images, target)
    return sum(len(target) for _, target in batches) / (time.perf_counter() - start)


def host_rate(size: int = 64, batch: int = 64, steps: int = 100) -> float:
    """The host's speed now: LeNet-5's training rate (images/s) on random ``size``-pixel tensors."""
    import torch

    from bps.models.networks import LeNet5

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.rand(batch, 1, size, size, generator=generator), torch.arange(batch) % 2)] * steps
    torch.manual_seed(0)
    return _train_rate(LeNet5(1, 2, size), batches, lr=3e-4)


# The small networks whose training the limit reproduces; the bigger ones would need their own.
LIMITED_NETWORKS = ("lenet", "lenet_pool")


def cnn_limits(project: Path) -> dict[str, Limit]:
    """train-lenet's and lr-find's floors: the configured LeNet-5 or its pooled variant on in-memory tensors,
    timed over one epoch and one val pass."""
    import torch

    from bps.models.networks import ARCHITECTURES
    from bps.training.batches import iterate_batches

    params = _params(project)
    train, lr_find = params.train, params.lr_find
    if train.model not in LIMITED_NETWORKS:
        allowed = " or ".join(LIMITED_NETWORKS)
        raise ValueError(f"the CNN limit is measured for train.model {allowed}, not {train.model}")
    prepared = project / "data/prepared"
    train_images = np.load(prepared / "train_images.npy")
    val_images = np.load(prepared / "val_images.npy")
    size, batch = train_images.shape[-1], train.batch_size
    labels = np.zeros(len(train_images), dtype=np.int64)
    labels[::2] = 1  # the labels do not change the work
    train_batches = list(iterate_batches(train_images, labels, batch))
    val_batches = [images for images, _ in iterate_batches(val_images, np.zeros(len(val_images), np.int64), batch)]
    torch.manual_seed(0)
    model = ARCHITECTURES[train.model](train_images.shape[1], 2, size)
    rate = _train_rate(model, train_batches, train.lr)
    epoch = len(train_images) / rate
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for images in val_batches:
            model(images)
    val_pass = time.perf_counter() - start
    threads = torch.get_num_threads()
    return {
        "train-lenet": Limit(
            train.epochs * (epoch + val_pass),
            f"{train.model} on in-memory tensors, batch {batch}, {threads} threads, no augmentation: {train.epochs} × "
            f"({len(train_images)} train images at {rate:.0f}/s + a val pass of {len(val_images)}: {val_pass:.1f} s)"),
        "lr-find": Limit(
            lr_find.steps * batch / rate,
            f"{lr_find.steps} training steps of {batch} images at the in-memory rate {rate:.0f} images/s"),
    }
