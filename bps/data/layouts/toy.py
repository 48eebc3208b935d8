"""Small offline datasets in the exact HPA and RxRx1 layouts, for the layout presets and tests.

``python -m bps toy-data hpa OUT`` / ``python -m bps toy-data rxrx1 OUT [--seed N]`` writes:

* **hpa**: ``train.csv`` (``Id,Target``, Target = space-separated class indices of the 28 HPA
  classes) and ``train/{Id}_{red,green,blue,yellow}.png`` (8-bit grayscale). 120 images of
  64×64 using 6 of the 28 classes, 1-3 labels each.
* **rxrx1**: ``metadata.csv`` with the columns of the RxRx1 release (``site_id, well_id,
  cell_type, dataset, experiment, plate, well, site, well_type, sirna, sirna_id``) and
  ``images/{experiment}/Plate{plate}/{well}_s{site}_w{1..6}.png`` (8-bit grayscale): 2
  experiments × 2 plates × 19 wells × 2 sites = 152 images, 6 treatment siRNAs in 2 wells per
  plate, 3 negative-control wells (``EMPTY``) and 2 positive-control siRNAs in 2 wells each.

Learnable on purpose: every cell has a nucleus (blue / w1) and a faint cytoplasm, and each class
adds one bright blob at its own place in its own channel. RxRx1 adds its batch effect: a gain
per experiment and an offset per plate on every channel, as strong as a class's signal, so a
split that shares plates flatters a model. Deterministic for a seed; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bps.core.files import atomic_open, write_csv

SIZE = 64
HPA_CHANNELS = ("red", "green", "blue", "yellow")
HPA_CLASSES = ("0", "2", "5", "7", "23", "25")  # 6 of the 28: nucleoplasm, nucleoli, nuclear bodies, Golgi...
HPA_IMAGES = 120
RXRX1_CHANNELS = ("1", "2", "3", "4", "5", "6")
RXRX1_EXPERIMENTS = ("HEPG2-01", "U2OS-01")
RXRX1_PLATES = (1, 2)
RXRX1_SITES = (1, 2)
RXRX1_SIRNAS = ("s21721", "s20894", "s18582", "s24929", "s7128", "s3447")  # treatment siRNAs, sirna_id 0..5
RXRX1_POSITIVE = ("s501308", "s35651")  # positive controls, sirna_id 1108, 1109
RXRX1_NEGATIVE = ("EMPTY", 1138)
RXRX1_COLUMNS = ("site_id", "well_id", "cell_type", "dataset", "experiment", "plate", "well", "site",
                 "well_type", "sirna", "sirna_id")
# Where each class's blob sits: cell k of a 3×3 grid of the image (the centre is the nucleus's).
GRID = [(row, col) for row in range(3) for col in range(3) if (row, col) != (1, 1)]


def _blob(size: int, row: int, col: int, rng: np.random.Generator) -> np.ndarray:
    """A bright Gaussian spot in grid cell (row, col), jittered a little."""
    centre = (np.array([row, col]) + 0.5) * size / 3 + rng.normal(0, size / 40, 2)
    yy, xx = np.mgrid[:size, :size]
    sigma = size / 14 * rng.uniform(0.8, 1.2)
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def render(n_channels: int, dna: int, marks: list[tuple[int, int]], rng: np.random.Generator, size: int = SIZE,
           gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """C×size×size uint8 channels: background, a nucleus bright in channel ``dna``, one blob per
    (channel, grid cell) mark; then the batch's ``gain`` and ``offset``."""
    yy, xx = np.mgrid[:size, :size]
    nucleus = np.exp(-(((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 8) ** 2)) ** 2)
    images = rng.normal(20, 4, (n_channels, size, size)) + 40 * nucleus  # cytoplasm-ish haze everywhere
    images[dna] += 120 * nucleus
    for channel, cell in marks:
        images[channel] += rng.uniform(110, 150) * _blob(size, *GRID[cell], rng)
    return np.clip(images * gain + offset, 0, 255).round().astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> None:
    """An 8-bit grayscale PNG, written atomically."""
    stream = io.BytesIO()
    Image.fromarray(image, mode="L").save(stream, format="PNG")
    with atomic_open(path) as out:
        out.write(stream.getvalue())


def write_hpa(out: Path, seed: int = 0, images: int = HPA_IMAGES) -> pd.DataFrame:
    """The HPA fixture; returns its train.csv table."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(images):
        hexes = rng.bytes(16).hex()
        sample_id = f"{hexes[:8]}-{hexes[8:12]}-11e8-{hexes[12:16]}-{hexes[16:28]}"
        # Every class leads a sixth of the images, with 0-2 others drawn at random.
        first = index % len(HPA_CLASSES)
        others = rng.choice([k for k in range(len(HPA_CLASSES)) if k != first], rng.integers(0, 3), replace=False)
        chosen = sorted({first, *others.tolist()})
        marks = [(k % len(HPA_CHANNELS), k) for k in chosen]  # class k: channel k mod 4, grid cell k
        for channel, image in zip(HPA_CHANNELS, render(len(HPA_CHANNELS), HPA_CHANNELS.index("blue"), marks, rng)):
            write_png(out / "train" / f"{sample_id}_{channel}.png", image)
        rows.append({"Id": sample_id, "Target": " ".join(HPA_CLASSES[k] for k in chosen)})
    table = pd.DataFrame(rows)
    write_csv(out / "train.csv", table)
    return table


def _rxrx1_wells(rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """One plate's (well_type, sirna, sirna_id) per well, in a shuffled plate map."""
    contents = [("treatment", name, k) for k, name in enumerate(RXRX1_SIRNAS) for _ in range(2)]
    contents += [("negative_control", *RXRX1_NEGATIVE)] * 3
    contents += [("positive_control", name, 1108 + k) for k, name in enumerate(RXRX1_POSITIVE) for _ in range(2)]
    order = rng.permutation(len(contents))
    return [contents[k] for k in order]


def write_rxrx1(out: Path, seed: int = 0) -> pd.DataFrame:
    """The RxRx1 fixture; returns its metadata.csv table."""
    rng = np.random.default_rng(seed)
    signals = [*RXRX1_SIRNAS, *RXRX1_POSITIVE]
    rows = []
    for experiment in RXRX1_EXPERIMENTS:
        gain = rng.uniform(0.75, 1.25)  # the experiment's batch effect...
        for plate in RXRX1_PLATES:
            offset = rng.uniform(-20, 20)  # ...and the plate's
            wells = [f"{chr(ord('B') + k // 22)}{k % 22 + 2:02d}" for k in rng.choice(14 * 22, 19, replace=False)]
            for well, (well_type, sirna, sirna_id) in zip(sorted(wells), _rxrx1_wells(rng)):
                well_id = f"{experiment}_{plate}_{well}"
                for site in RXRX1_SITES:
                    cell = signals.index(sirna) if sirna in signals else None
                    marks = [] if cell is None else [(cell % len(RXRX1_CHANNELS), cell % len(GRID))]
                    images = render(len(RXRX1_CHANNELS), 0, marks, rng, gain=gain, offset=offset)
                    for channel, image in zip(RXRX1_CHANNELS, images):
                        plate_folder = out / "images" / experiment / f"Plate{plate}"
                        write_png(plate_folder / f"{well}_s{site}_w{channel}.png", image)
                    rows.append((f"{well_id}_{site}", well_id, experiment.split("-")[0], "train", experiment, plate,
                                 well, site, well_type, sirna, sirna_id))
    table = pd.DataFrame(rows, columns=list(RXRX1_COLUMNS))
    write_csv(out / "metadata.csv", table)
    return table


WRITERS = {"hpa": write_hpa, "rxrx1": write_rxrx1}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(WRITERS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    table = WRITERS[args.dataset](args.out, seed=args.seed)
    print(f"{args.dataset}: {len(table)} samples in {args.out}/")


if __name__ == "__main__":
    main()
