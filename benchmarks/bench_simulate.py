"""Simulator speed: images rendered and written per second, and the full dataset's projected time."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import Row, timed
from bps.core.workers import usable_cores
from bps.sim.render import plan_dataset, write_images

FULL_SIZE = 77_180  # images in a full-size simulated dataset (17 conditions × 4,540)


def run(workdir: Path, quick: bool) -> list[Row]:
    count = 340 if quick else 2040  # a multiple of the 17 conditions
    table = plan_dataset(count // 17, [4, 24, 48], seed=0)
    workers = usable_cores()
    seconds = timed(lambda: write_images(workdir / "raw", table, seed=0, workers=workers))
    rate = len(table) / seconds
    return [
        Row("simulate_images_per_s", rate, "images/s", f"{len(table)} images rendered and written, {workers} workers"),
        Row("simulate_full_size_projected_s", FULL_SIZE / rate, "s", f"{FULL_SIZE} images at that rate"),
    ]
