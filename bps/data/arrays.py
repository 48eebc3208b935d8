"""A split's prepared array: one memory-mappable N×C×H×W uint8 array (BPS: C = 1), written and read here.

Written on every core: workers decode and shrink images in chunks and send back only the small result, so memory
holds the output array and a few images in flight, never the decoded dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from tqdm import tqdm

from bps.core.files import atomic_open, write_json, write_text
from bps.core.params import PreprocessParams
from bps.core.paths import PREPARED, SPLITS, prepared_images, prepared_table
from bps.core.workers import process_map
from bps.data.images import ImageError, prepare
from bps.data.layouts.meta import LABEL

T = TypeVar("T")
P = TypeVar("P")  # one work item: a file, or a sample's tuple of channel files


@dataclass
class PreparedArray:
    images: np.ndarray
    kept: list[int]
    failures: dict[str, str] = field(default_factory=dict)


def _or_report(work: Callable[[P], T], path: P) -> T | str:
    try:
        return work(path)
    except ImageError as error:
        return str(error)


def map_images(work: Callable[[P], T], paths: list[P], workers: int, on_error: str, desc: str,
               failures: dict[str, str] | None = None, names: list[str] | None = None) -> Iterator[tuple[int, T]]:
    """``work`` (picklable) applied to every image on ``workers`` processes (0: one per core): yields
    (index, result) in order for the images kept, with a progress bar.

    A bad image stops the run naming it (``on_error: fail``) or is left out (``skip``) and, with
    ``failures``, recorded there under its path (or its entry in ``names``): preprocess and
    features keep the same images.
    """
    results = process_map(partial(_or_report, work), paths, workers)
    for index, result in enumerate(tqdm(results, total=len(paths), desc=desc, unit="img")):
        if isinstance(result, str):
            if on_error == "fail":
                raise ImageError(f"{result}\n(set preprocess.on_error: skip to leave such files out)")
            if failures is not None:
                failures[names[index] if names else str(paths[index])] = result
            continue
        yield index, result


def collect_images(work: Callable[[P], object], items: list[P], channels: int, params: PreprocessParams, desc: str,
             names: list[str] | None = None, side: list | None = None) -> PreparedArray:
    """Run ``work`` (one item to a channels×size×size or size×size uint8 image) over every item
    into one N×channels×size×size array; on a bad file stop (``on_error: fail``) or skip and report it.

    With ``side``, ``work`` returns (image, value) and each kept item's value is appended to ``side``:
    a second output of the same decode (the classical features), so no file is decoded twice.
    """
    images = np.empty((len(items), channels, params.image_size, params.image_size), dtype=np.uint8)
    kept: list[int] = []
    failures: dict[str, str] = {}
    for index, result in map_images(work, items, params.workers, params.on_error, desc, failures, names):
        if side is not None:
            result, value = result
            side.append(value)
        images[len(kept)] = result
        kept.append(index)
    return PreparedArray(images[: len(kept)], kept, failures)


def prepare_images(paths: list[Path], params: PreprocessParams, desc: str = "preprocess") -> PreparedArray:
    """Prepare every single-channel TIFF (BPS) into N×1×size×size."""
    return collect_images(partial(prepare, params=params), paths, 1, params, desc)


def save_array(path: Path, array: np.ndarray) -> None:
    """Save a .npy atomically; readers load it with ``np.load(path, mmap_mode="r")``."""
    with atomic_open(path) as stream:
        np.save(stream, array)


def load_split(split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """A split's N×C×H×W uint8 images (memory-mapped, not read into RAM) and its label table.

    A layout's ``label`` column stays text: HPA's ``"5"`` is a label name, not the number 5.
    Imports no torch: the baseline stage never needs it.
    """
    table = pd.read_csv(prepared_table(split), dtype={LABEL: str})
    return np.load(prepared_images(split), mmap_mode="r"), table


def write_prepared(prepare_split: Callable[[str], tuple[pd.DataFrame, PreparedArray]], params: PreprocessParams,
                   **extra: object) -> dict:
    """Prepare every split with ``prepare_split`` (its table and array) and write the arrays, their label
    tables and report.json (the settings that shape the arrays, ``extra``, counts, skipped files).

    ``workers`` is left out of the report: it only sets the speed, and recording it would make a
    new worker count look like new data to every stage after this one.
    """
    report = {"settings": params.model_dump(mode="json", exclude={"workers"}), **extra, "splits": {}, "skipped": {}}
    for split in SPLITS:
        table, prepared = prepare_split(split)
        save_array(prepared_images(split), prepared.images)
        write_text(prepared_table(split), table.iloc[prepared.kept].to_csv(index=False))
        report["splits"][split] = {"images": len(prepared.kept), "skipped": len(prepared.failures)}
        report["skipped"].update(prepared.failures)
    write_json(PREPARED / "report.json", report)
    return report
