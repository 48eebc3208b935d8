"""Reading a split's prepared arrays, without importing torch (the baseline stage never needs it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bps.layout import prepared_images, prepared_table


def load_split(split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """A split's N×C×H×W uint8 images (memory-mapped, not read into RAM) and its label table."""
    return np.load(prepared_images(split), mmap_mode="r"), pd.read_csv(prepared_table(split))
