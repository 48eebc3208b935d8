"""One trainer per model folder, that dies with its parent and marks its model finished last.

Killing only ``dvc`` used to leave its trainer running: the next ``dvc repro`` started a second
one, both wrote the same outputs, and a model folder left by an interrupted run looked finished.
:func:`run_training_stage` wraps a training stage so that

* it holds an exclusive lock on ``models/.<name>.lock`` (beside the folder, which DVC deletes
  before a stage runs) for as long as it runs; a second trainer of the same folder stops with
  one line naming the pid that holds it. The kernel drops the lock when the process dies, so a
  crash never leaves a stale lock;
* it receives SIGTERM as soon as its parent process dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a
  watchdog thread notices that it was re-parented);
* the model card is marked complete only after the stage returned without error.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from bps.cli import run_stage
from bps.errors import PipelineError
from bps.model_card import mark_complete
from bps.params import Params

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCHDOG_INTERVAL_S = 1.0


class TrainingLockedError(PipelineError, RuntimeError):
    """Another process is training into the same model folder."""


def lock_path(folder: Path) -> Path:
    """The lock of a model folder: a hidden sibling (git-ignored), since DVC deletes the folder itself."""
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def training_lock(folder: Path) -> Iterator[IO]:
    """Hold an exclusive lock on ``folder``'s lock file, which names this pid, while training."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.seek(0)
            holder = stream.read().strip() or "unknown"
            raise TrainingLockedError(
                f"{folder} is being trained by pid {holder} (lock {path}); wait for it to finish or stop it"
            ) from None
        stream.seek(0)
        stream.truncate()
        stream.write(f"{os.getpid()}\n")
        stream.flush()
        try:
            yield stream
        finally:
            stream.seek(0)
            stream.truncate()  # the file stays (removing a lock file races with the next locker)


def die_with_parent() -> None:
    """Get SIGTERM when the parent process exits, so an orphaned trainer never keeps writing."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCHDOG_INTERVAL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


# Set by a parent that holds the lock and re-launches the stage under torchrun (bps/distributed.py).
LOCK_HELD_BY_PARENT = "BPS_TRAINING_LOCK_HELD_BY_PARENT"


def run_training_stage(main: Callable[[Params], None], *folders: Path) -> None:
    """:func:`bps.cli.run_stage` for a trainer of ``folders``: locked, tied to its parent, finished last.

    Under torchrun only rank 0 (the one that writes) locks and marks complete, and not even it
    when the stage re-launched itself: then its parent holds the lock and marks the folders.
    """
    die_with_parent()
    if os.environ.get("RANK", "0") != "0" or os.environ.get(LOCK_HELD_BY_PARENT):
        run_stage(main)
        return

    def guarded(params: Params) -> None:
        with ExitStack() as locks:
            for folder in folders:
                locks.enter_context(training_lock(folder))
            main(params)
            for folder in folders:
                mark_complete(folder)

    run_stage(guarded)
