"""Preprocess: the project's parallel stage vs a naive one-process loop, and vs bare decoding."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from benchmarks.common import Row, best_of_each, simulated_tiffs
from bps.core.params import PreprocessParams
from bps.core.workers import usable_cores
from bps.data.arrays import prepare_images


def naive_loop(paths: list[Path], size: int) -> np.ndarray:
    """The study's way: read, min-max scale, resize and append one image at a time."""
    images = []
    for path in paths:
        image = tifffile.imread(path).astype(np.float32)
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
        images.append(np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX)))
    return np.stack(images)


def decode_only(paths: list[Path]) -> None:
    for path in paths:
        tifffile.imread(path)


def decoded_bytes(path: Path) -> int:
    with tifffile.TiffFile(path) as tiff:
        return tiff.pages.first.nbytes


def run(workdir: Path, quick: bool) -> list[Row]:
    count = 500 if quick else 5000
    folder = workdir / "preprocess-tiffs"
    table = simulated_tiffs(folder, count)
    paths = [folder / name for name in table["filename"]]
    params = PreprocessParams()
    repeats = 1 if quick else 3
    best = best_of_each(
        {
            "project": lambda: prepare_images(paths, params),
            "naive": lambda: naive_loop(paths, params.image_size),
            "decode": lambda: decode_only(paths),
        },
        repeats,
    )
    project, naive, decode = best["project"], best["naive"], best["decode"]
    tracemalloc.start()  # an untimed extra run: what the parent holds at its peak
    prepare_images(paths, params)
    parent_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    cores = usable_cores()
    decode_limit = count / decode * cores
    output_mb = count * params.image_size * params.image_size / 2**20
    decoded_mb = sum(decoded_bytes(p) for p in paths[:50]) / 50 * count / 2**20
    return [
        Row("preprocess_vs_naive", naive / project, "x", f"{count} TIFFs, {cores} workers vs 1 process"),
        Row("preprocess_images_per_s", count / project, "images/s", f"naive: {count / naive:.0f} images/s"),
        Row(
            "preprocess_vs_decode_limit",
            decode_limit / (count / project),
            "x",
            f"limit = bare tifffile decode × {cores} cores = {decode_limit:.0f} images/s",
        ),
        Row(
            "preprocess_parent_peak_alloc_mb",
            parent_peak_mb,
            "MiB",
            f"output array {output_mb:.1f} MiB; the {count} decoded crops would be ~{decoded_mb:.0f} MiB",
        ),
    ]
