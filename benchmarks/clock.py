"""Runs one command inside a timed ``dvc repro`` and writes when it started and ended and its memory.

Usage: ``python benchmarks/clock.py OUT.json COMMAND...``. Run by path, as a script: the stage's
command runs in a copy of the project that has no ``benchmarks/``.

Peak RSS (``ru_maxrss`` of the largest child) counts the pages of memory-mapped files a process has
touched, which belong to the page cache and go when memory is short. So the command's process tree
is also sampled every 50 ms for its anonymous memory (RSS less file-backed and shared pages: what
the process itself allocated), and the largest process's peak of it is written beside peak RSS.
"""

import json
import resource
import subprocess
import sys
import time

import psutil

INTERVAL_S = 0.05


def _anonymous_bytes(process: psutil.Process) -> int:
    """The largest anonymous resident memory among ``process`` and its descendants (0 when gone)."""
    largest = 0
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in family:
        try:
            info = member.memory_info()
        except psutil.Error:
            continue
        largest = max(largest, info.rss - getattr(info, "shared", 0))
    return largest


def main(out: str, command: list[str]) -> None:
    start = time.time()
    child = subprocess.Popen(command)
    watched = psutil.Process(child.pid)
    peak = 0
    while True:  # waits at most one interval between samples, and returns as soon as the command ends
        try:
            code = child.wait(timeout=INTERVAL_S)
            break
        except subprocess.TimeoutExpired:
            peak = max(peak, _anonymous_bytes(watched))
    if code:
        sys.exit(code)
    with open(out, "w") as file:
        json.dump({"start": start, "end": time.time(),
                   "rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                   "anon_kib": peak // 1024}, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
