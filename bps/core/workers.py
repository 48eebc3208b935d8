"""Work spread over this process's cores: how many there are, and a process pool that maps in small chunks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
P = TypeVar("P")

MAX_CHUNK = 64  # items sent to a worker at once: enough to amortise the pickling, small enough to balance


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's cpuset), not the host's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def process_map(work: Callable[[P], T], items: Sequence[P], workers: int = 0) -> Iterator[T]:
    """``work`` (picklable) applied to ``items`` on ``workers`` processes (0: one per core), results in order.

    Chunks of at most :data:`MAX_CHUNK` items and at least four chunks per worker: with a few large
    chunks, one core idles while another finishes the last. Leaving the loop early (an error, a
    bad image) cancels the chunks not yet handed to a worker; the few already handed still run.
    """
    workers = workers or usable_cores()
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(work, items, chunksize=max(1, min(MAX_CHUNK, len(items) // (workers * 4))))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
