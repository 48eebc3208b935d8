"""The benchmarks' stage clock tells a process's own memory from the mapped file pages in its RSS."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_dvc import CLOCK

MIB = 1 << 20

ALLOCATE = "b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(0.5)"
MAP_AND_READ = (
    "import mmap, sys, time; f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); "
    "sum(m[i] for i in range(0, len(m), 4096)); time.sleep(0.5)"
)


def _clocked(tmp_path: Path, *command: str) -> dict:
    out = tmp_path / "clock.json"
    subprocess.run([*CLOCK, str(out), *command], check=True)
    return json.loads(out.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="file-backed RSS is told apart on Linux")
def test_allocated_memory_is_anonymous_and_mapped_file_pages_are_not(tmp_path):
    allocated = _clocked(tmp_path, sys.executable, "-c", ALLOCATE)
    assert allocated["anon_kib"] * 1024 > 280 * MIB
    assert allocated["anon_kib"] <= allocated["rss_kib"]
    data = tmp_path / "mapped.bin"
    data.write_bytes(b"\1" * (300 * MIB))
    mapped = _clocked(tmp_path, sys.executable, "-c", MAP_AND_READ, str(data))
    assert mapped["rss_kib"] * 1024 > 280 * MIB  # the touched pages count in RSS ...
    assert mapped["anon_kib"] * 1024 < 100 * MIB  # ... but are the page cache's, not the process's
    assert mapped["end"] > mapped["start"]


def test_a_failing_command_fails_the_clock_and_writes_nothing(tmp_path):
    out = tmp_path / "clock.json"
    result = subprocess.run([*CLOCK, str(out), sys.executable, "-c", "raise SystemExit(3)"])
    assert result.returncode == 3
    assert not out.exists()
