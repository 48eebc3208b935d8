"""The DVC stage scripts, run as ``python -m stages.<name>`` by dvc.yaml and datasets/dvc.yaml.

Importing the package pins OpenBLAS before any stage imports numpy (bps/core/blas.py), so a
stage's numbers do not depend on the CPU it runs on.
"""

from bps.core.blas import pin_openblas

pin_openblas()
