"""bps.files: atomic writes leave ordinary files (open()'s 0666 less the umask), never mkstemp's 0600."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
