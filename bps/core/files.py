"""Atomic file writes and output-folder housekeeping, so an interrupted stage loses nothing.

A file appears under its final name only once it is complete (write to a hidden ``.part``
file in the same folder, then ``os.replace``), so a crash can leave at most ``.part`` files,
which the next run sweeps away.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

PART_SUFFIX = ".part"


@contextmanager
def atomic_open(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it into place on success.

    The temporary name is unique to the process and thread (the downloads write from many
    threads), and ``open`` gives it an ordinary file's mode, 0666 less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}{PART_SUFFIX}")
    try:
        with open(tmp, mode) as stream:
            yield stream
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> None:
    """Write a text file atomically."""
    with atomic_open(path, "w") as stream:
        stream.write(text)


def write_json(path: Path | str, data: object) -> None:
    """Write pretty, key-sorted JSON atomically (stable diffs in git)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path | str, table: pd.DataFrame) -> None:
    """Write a table as CSV (no index column) atomically."""
    write_text(path, table.to_csv(index=False))


def remove_partials(folder: Path) -> int:
    """Delete leftovers of interrupted writes, in subfolders too; return how many there were."""
    partials = list(folder.rglob(f".*{PART_SUFFIX}"))
    for partial in partials:
        partial.unlink(missing_ok=True)
    return len(partials)


def prune(folder: Path, keep: Iterable[str]) -> int:
    """Delete the files below ``folder`` whose relative path (``a.tif``, ``Plate1/b.png``) is not
    in ``keep``, then the folders left empty: an output holds what its params ask."""
    keep = set(keep)
    files = [entry for entry in folder.rglob("*") if entry.is_file()]
    stale = [entry for entry in files if entry.relative_to(folder).as_posix() not in keep]
    for entry in stale:
        entry.unlink()
    for entry in sorted(folder.rglob("*"), key=lambda path: len(path.parts), reverse=True):
        if entry.is_dir() and not any(entry.iterdir()):
            entry.rmdir()
    return len(stale)
