"""Reading a split's prepared arrays, without importing torch (the baseline stage never needs it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bps.layout import prepared_images, prepared_table
from bps.layout_meta import LABEL


def load_split(split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """A split's N×C×H×W uint8 images (memory-mapped, not read into RAM) and its label table.

    A layout's ``label`` column stays text: HPA's ``"5"`` is a label name, not the number 5.
    """
    table = pd.read_csv(prepared_table(split), dtype={LABEL: str})
    return np.load(prepared_images(split), mmap_mode="r"), table
