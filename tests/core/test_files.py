"""bps.core.files: atomic writes leave ordinary files (open()'s 0666 less the umask), whole or not at all."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bps.core.files import atomic_open

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_mode_open_would_give(tmp_path, umask, mode):
    script = (
        "import os, sys\n"
        f"os.umask({umask})\n"
        "from bps.core.files import write_text, atomic_open\n"
        "write_text(sys.argv[1] + '/a.txt', 'a')\n"
        "with atomic_open(sys.argv[1] + '/b.bin') as stream:\n"
        "    stream.write(b'b')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, check=True)
    assert {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {"a.txt": mode, "b.bin": mode}


def test_a_failed_write_leaves_the_old_file_and_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as stream:
        stream.write(b"half of the new")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["out.bin"]


def test_threads_writing_one_file_never_mix_their_bytes(tmp_path):
    target = tmp_path / "out.bin"
    payloads = [bytes([n]) * 100_000 for n in range(8)]

    def write(payload: bytes) -> None:
        for _ in range(20):
            with atomic_open(target) as stream:
                stream.write(payload)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, payloads))
    assert target.read_bytes() in payloads
    assert [path.name for path in tmp_path.iterdir()] == ["out.bin"]
