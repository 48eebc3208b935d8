"""Turn one split's TIFFs into one memory-mappable N×1×H×W uint8 array, on every core.

Workers decode and shrink images in chunks and send back only the small result, so memory
holds the output array and a few images in flight, never the decoded dataset.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bps.files import atomic_open
from bps.images import ImageError, prepare
from bps.params import PreprocessParams


@dataclass
class PreparedArray:
    images: np.ndarray
    kept: list[int]
    failures: dict[str, str] = field(default_factory=dict)


def _prepare_or_report(path: Path, params: PreprocessParams) -> np.ndarray | str:
    try:
        return prepare(path, params)
    except ImageError as error:
        return str(error)


def worker_count(requested: int) -> int:
    """``0`` means one worker per core."""
    return requested or os.cpu_count() or 1


def prepare_images(paths: list[Path], params: PreprocessParams, desc: str = "preprocess") -> PreparedArray:
    """Prepare every image; on a bad file stop (``on_error: fail``) or skip and report it."""
    images = np.empty((len(paths), 1, params.size, params.size), dtype=np.uint8)
    kept: list[int] = []
    failures: dict[str, str] = {}
    workers = worker_count(params.workers)
    chunksize = max(1, min(64, len(paths) // (workers * 4)))
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        results = pool.map(partial(_prepare_or_report, params=params), paths, chunksize=chunksize)
        for index, result in enumerate(tqdm(results, total=len(paths), desc=desc, unit="img")):
            if isinstance(result, str):
                if params.on_error == "fail":
                    raise ImageError(f"{result}\n(set preprocess.on_error: skip to leave such files out)")
                failures[str(paths[index])] = result
                continue
            images[len(kept), 0] = result
            kept.append(index)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return PreparedArray(images[: len(kept)], kept, failures)


def save_array(path: Path, array: np.ndarray) -> None:
    """Save a .npy atomically; readers load it with ``np.load(path, mmap_mode="r")``."""
    with atomic_open(path) as stream:
        np.save(stream, array)
