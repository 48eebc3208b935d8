"""One trainer per model folder, that dies with its parent and marks its model finished last.

The locking and the tie to the parent live in :mod:`bps.core.stage`; this module adds the model card.

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

import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from bps.core.params import Params
from bps.core.stage import ALL_SOURCES, LOCK_HELD_BY_PARENT, run_stage, training_lock
from bps.models.card import mark_complete


def run_training_stage(main: Callable[[Params], None], *folders: Path,
                       sources: Sequence[str] = ALL_SOURCES) -> None:
    """:func:`bps.core.stage.run_stage` (tied to its parent, the stage locked) for a trainer of ``folders``:
    each folder locked too, and marked finished last.

    Under torchrun only rank 0 (the one that writes) locks and marks complete, and not even it
    when the stage re-launched itself: then its parent holds the lock and marks the folders.
    """
    if os.environ.get("RANK", "0") != "0" or os.environ.get(LOCK_HELD_BY_PARENT):
        run_stage(main, sources)
        return

    def guarded(params: Params) -> None:
        with ExitStack() as locks:
            for folder in folders:
                locks.enter_context(training_lock(folder))
            main(params)
            for folder in folders:
                mark_complete(folder)

    run_stage(guarded, sources)
