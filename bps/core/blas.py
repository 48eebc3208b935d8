"""One OpenBLAS kernel and thread count for every stage, so numpy's numbers do not depend on the CPU.

OpenBLAS picks its matrix kernels by the CPU it finds, and splits each product over its threads;
both change the last bits of a float sum. The MLP baseline trains by thousands of such products,
so the same params gave another model file on an AVX-512 machine (OpenBLAS's SkylakeX kernels)
than on this project's reference machines (Haswell kernels), and another again on one thread.
:func:`pin_openblas` runs before any stage imports numpy (stages/__init__.py): the Haswell
kernels, which every x86-64 CPU with AVX2 runs (Intel since 2013, AMD since 2015), on
:data:`THREADS` threads whatever the core count. On a CPU without AVX2, or not x86-64, OpenBLAS
keeps its own choice, and the MLP's and classical models' files may differ in their last bits.
"""

from __future__ import annotations

import os
from pathlib import Path

KERNEL = "Haswell"
THREADS = "2"  # the reference machines' core count: the committed dvc.lock was made so


def cpu_has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU runs AVX2 (Linux; elsewhere unknown, so no)."""
    try:
        return " avx2" in cpuinfo.read_text()
    except OSError:
        return False


def pin_openblas() -> None:
    """Set OpenBLAS's kernel and thread count for this process; call it before numpy is imported."""
    if cpu_has_avx2():
        os.environ["OPENBLAS_CORETYPE"] = KERNEL
    os.environ["OPENBLAS_NUM_THREADS"] = THREADS
