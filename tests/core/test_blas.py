"""bps.core.blas: a stage's numpy uses OpenBLAS's Haswell kernels on two threads, whatever the CPU says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bps.core.blas import KERNEL, THREADS, cpu_has_avx2

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import stages, json, numpy\nfrom threadpoolctl import threadpool_info\n"
         "print(json.dumps([(i['internal_api'], i.get('architecture'), i['num_threads']) for i in threadpool_info()]))")


def test_avx2_is_read_from_the_cpu_flags(tmp_path):
    (tmp_path / "cpuinfo").write_text("flags\t\t: fpu sse2 avx avx2 fma\n")
    assert cpu_has_avx2(tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text("flags\t\t: fpu sse2 avx\n")
    assert not cpu_has_avx2(tmp_path / "cpuinfo") and not cpu_has_avx2(tmp_path / "absent")


@pytest.mark.skipif(not cpu_has_avx2(), reason="the kernel is pinned on AVX2 CPUs only")
@pytest.mark.parametrize("machine", [{}, {"OPENBLAS_CORETYPE": "SkylakeX", "OPENBLAS_NUM_THREADS": "1"}])
def test_a_stage_process_pins_the_kernel_and_threads_whatever_the_machine_says(machine):
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPENBLAS_")} | machine
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                           check=True)
    blas = [entry for entry in json.loads(probe.stdout) if entry[0] == "openblas"]
    assert blas and all((architecture, str(threads)) == (KERNEL, THREADS) for _, architecture, threads in blas)
