"""How a stage script starts and fails: validated params first, one clear line on bad input.

Also what keeps a stage from outliving its ``dvc``: every stage gets SIGTERM when its parent
dies, and holds an exclusive lock named after it (``.locks/<stage>.lock``, git- and
dvc-ignored) while it runs, so a second run of the same stage stops with one line instead of
writing the same files; trainers also lock their model folders (bps/training/guard.py). Killing
only ``dvc`` used to leave ``features`` or ``evaluate`` running: the next ``dvc repro`` started
a second one, both wrote the same outputs. The kernel drops a lock when its process dies, so a
crash never leaves a stale one.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from bps.core.errors import PipelineError
from bps.core.params import Params, load_params

BPS_SOURCES = ("synthetic", "s3")  # the BPS pipeline: dvc.yaml
LAYOUT_SOURCES = ("layout",)  # a multi-channel dataset: datasets/dvc.yaml
ALL_SOURCES = BPS_SOURCES + LAYOUT_SOURCES
PIPELINE_OF = {"synthetic": "dvc.yaml", "s3": "dvc.yaml", "layout": "datasets/dvc.yaml"}


class WrongPipelineError(PipelineError):
    """The stage belongs to the other pipeline than ``data.source`` says."""


def stage_name(argv: list[str]) -> str:
    """The running stage as dvc.yaml names it: ``python -m stages.train_lenet --control`` is train-lenet-control."""
    return "-".join([Path(argv[0]).stem, *argv[1:]]).replace("_", "-").replace("--", "")


def run_stage(main: Callable[[Params], None], sources: Sequence[str] = ALL_SOURCES) -> None:
    """Validate params.yaml, run ``main``, and turn input errors into a message and exit 1.

    A stage runs on the ``data.source`` values of its pipeline: one started with another (a
    layout's params under a BPS-only stage) stops with one line instead of failing somewhere
    inside on columns that the other kind of table lacks. Every stage is tied to its parent and
    holds its stage lock throughout (not the ranks torchrun starts: their launcher holds it).
    """
    die_with_parent()
    try:
        with ExitStack() as held:
            if os.environ.get("RANK", "0") == "0" and not os.environ.get(LOCK_HELD_BY_PARENT):
                held.enter_context(stage_lock(stage_name(sys.argv)))
            params = load_params()
            if params.data.source not in sources:
                raise WrongPipelineError(
                    f"data.source {params.data.source}: {stage_name(sys.argv)} is a stage of "
                    f"{PIPELINE_OF[sources[0]]}, not of {PIPELINE_OF[params.data.source]}"
                )
            main(params)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCHDOG_INTERVAL_S = 1.0
SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox", "fish"}
STAGE_LOCKS = Path(".locks")  # one lock file per stage name; git- and dvc-ignored
_tied_pid: int | None = None  # the process die_with_parent has tied to its parent


class TrainingLockedError(PipelineError, RuntimeError):
    """Another process is training into the same model folder."""


class StageLockedError(PipelineError, RuntimeError):
    """Another run of the same stage is in progress."""


def lock_path(folder: Path) -> Path:
    """The lock of a model folder: a hidden sibling (git-ignored), since DVC deletes the folder itself."""
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def training_lock(folder: Path) -> Iterator[IO]:
    """Hold an exclusive lock on ``folder``'s lock file, which names this pid, while training."""
    path = lock_path(folder)
    with exclusive_lock(path, lambda holder: TrainingLockedError(
            f"{folder} is being trained by pid {holder} (lock {path}); wait for it to finish or stop it")) as stream:
        yield stream


@contextmanager
def stage_lock(stage: str) -> Iterator[IO]:
    """Hold ``.locks/<stage>.lock``, which names this pid, while the stage runs."""
    path = STAGE_LOCKS / f"{stage}.lock"
    with exclusive_lock(path, lambda holder: StageLockedError(
            f"stage {stage} is already running as pid {holder} (lock {path}); wait for it to finish or stop it")
    ) as stream:
        yield stream


@contextmanager
def exclusive_lock(path: Path, busy: Callable[[str], PipelineError]) -> Iterator[IO]:
    """Hold an exclusive lock on ``path`` (created if needed), writing this pid into it; if another
    process holds it, raise ``busy(its pid)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.seek(0)
            raise busy(stream.read().strip() or "unknown") from None
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
    global _tied_pid
    if _tied_pid == os.getpid():  # once per process (a forked child is tied anew: fork clears the signal)
        return
    _tied_pid = os.getpid()
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


# Set by a parent that holds the lock and re-launches the stage under torchrun (bps/training/distributed.py).
LOCK_HELD_BY_PARENT = "BPS_TRAINING_LOCK_HELD_BY_PARENT"
