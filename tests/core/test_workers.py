"""bps.core.workers: the process pool every image loop runs on, and the cores it counts."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import pytest

from bps.core.workers import process_map, usable_cores


def _square(value: int) -> int:
    return value * value


def _pid(_: int) -> int:
    return os.getpid()


def _touch_slowly(folder: Path, value: int) -> int:
    (folder / str(value)).touch()
    time.sleep(0.005)
    return value


def _fail_on_three(value: int) -> int:
    if value == 3:
        raise ValueError("three")
    return value


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
def test_usable_cores_counts_this_process_s_affinity():
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_results_come_back_in_order_from_other_processes():
    assert list(process_map(_square, range(500), workers=2)) == [value * value for value in range(500)]
    assert os.getpid() not in set(process_map(_pid, range(8), workers=2))


def test_a_worker_s_error_reaches_the_caller():
    with pytest.raises(ValueError, match="three"):
        list(process_map(_fail_on_three, range(10), workers=2))


def test_no_items_and_zero_workers_are_fine():
    assert list(process_map(_square, [], workers=0)) == []
    assert list(process_map(_square, [4], workers=0)) == [16]


def test_leaving_the_loop_early_cancels_the_work_not_yet_started(tmp_path):
    """A bad image stops preprocess: the pool must not go on through the rest of the dataset. The
    chunks already handed to the workers (a few of 64 items) still run; the rest do not."""
    results = process_map(partial(_touch_slowly, tmp_path), range(2000), workers=2)
    assert next(results) == 0
    results.close()  # what a `raise` or `break` inside the caller's loop does to the generator
    assert len(list(tmp_path.iterdir())) < 1000
