"""One trainer per model folder, that dies with its parent and marks its model finished last.

Killing only ``dvc`` used to leave its trainer running: the next ``dvc repro`` started a second
one, both wrote the same outputs, and a model folder left by an interrupted run looked finished.
:func:`run_training_stage` wraps a training stage so that

* it holds an exclusive lock on ``models/.<name>.lock`` (beside the folder, which DVC deletes
  before a stage runs) for as long as it runs; a second trainer of the same folder stops with
  one line naming the pid that holds it. The kernel drops the lock when the process dies, so a
  crash never leaves a stale lock;
* it receives SIGTERM as soon as its parent process dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a
  watchdog thread notices that it was re-parented), or, when that parent is the ``sh -c``
  wrapper DVC runs commands in, as soon as the wrapper's parent dies;
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

from bps.cli import BpsOnly, run_stage
from bps.errors import PipelineError
from bps.model_card import mark_complete
from bps.params import Params

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCHDOG_INTERVAL_S = 1.0
SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox", "fish"}


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
    """Get SIGTERM when the parent process exits, so an orphaned trainer never keeps writing.

    DVC runs a stage through ``$SHELL -c`` (``/bin/sh`` when unset); bash execs a lone command but
    dash does not, so the parent may be a shell that outlives a killed ``dvc``. Then the shell's
    own parent is watched too.
    """
    parent = os.getppid()
    launcher = _launcher_of_wrapping_shell(parent)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)
            if launcher is not None:
                _watch(lambda: _parent_of(parent) == launcher)
            return
    _watch(lambda: os.getppid() == parent)


def _watch(still_attached: Callable[[], bool]) -> None:
    """SIGTERM this process from a daemon thread once ``still_attached`` turns false."""

    def watch() -> None:
        while still_attached():
            time.sleep(WATCHDOG_INTERVAL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _parent_of(pid: int) -> int | None:
    """``pid``'s parent from ``/proc`` (Linux), or None once it is gone or unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid, ...


def _launcher_of_wrapping_shell(pid: int) -> int | None:
    """The parent of ``pid`` when ``pid`` is a ``<shell> -c <command>`` wrapper, else None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return None
    is_wrapper = len(argv) >= 3 and argv[-2] == b"-c" and Path(os.fsdecode(argv[0])).name in SHELLS
    return _parent_of(pid) if is_wrapper else None


# Set by a parent that holds the lock and re-launches the stage under torchrun (bps/distributed.py).
LOCK_HELD_BY_PARENT = "BPS_TRAINING_LOCK_HELD_BY_PARENT"


def run_training_stage(main: Callable[[Params], None], *folders: Path, layouts: bool = False,
                       bps_only: BpsOnly | None = None) -> None:
    """:func:`bps.cli.run_stage` for a trainer of ``folders``: locked, tied to its parent, finished last.

    Under torchrun only rank 0 (the one that writes) locks and marks complete, and not even it
    when the stage re-launched itself: then its parent holds the lock and marks the folders.
    """
    die_with_parent()
    if os.environ.get("RANK", "0") != "0" or os.environ.get(LOCK_HELD_BY_PARENT):
        run_stage(main, layouts, bps_only)
        return

    def guarded(params: Params) -> None:
        with ExitStack() as locks:
            for folder in folders:
                locks.enter_context(training_lock(folder))
            main(params)
            for folder in folders:
                mark_complete(folder)

    run_stage(guarded, layouts, bps_only)
