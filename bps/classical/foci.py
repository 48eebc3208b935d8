"""Classical nucleus segmentation and DNA-repair focus (spot) detection, scipy.ndimage only.

A focus is a bright spot a few pixels wide on a nucleus whose own brightness varies slowly, so
spots are found in a difference of Gaussians (a band-pass: blur at the spot's scale minus blur at
the nucleus's), as local maxima whose response exceeds a threshold. The stage sets that
threshold relative to the nucleus's contrast over its background, so it means the same on a
dim plate and on a bright one. A few milliseconds per crop: cheap enough for 77k images.

The simulator's realism check measures crops with bps/sim/crop_stats.py instead, on purpose:
it compares absolute grey levels (a focus's peak and width) with the one real crop, where a
threshold in grey levels is the right unit, while this detector must mean the same on every
plate. tests/classical/test_foci.py shows that both find the same nucleus and the same focus in the real
crop: its one focus is this detector's one bright spot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SPOT_SIGMA = 1.5  # px: the width of a focus after the microscope's blur (1-2 px)
BACKGROUND_SIGMA = 4.0  # px: wider than a focus, narrower than a nucleus (~50-100 px)


@dataclass(frozen=True)
class Spots:
    """Detected spots: peak positions (row, col), band-pass responses and blob areas in pixels."""

    rows: np.ndarray
    cols: np.ndarray
    responses: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def band_pass(image: np.ndarray, sigma: float = SPOT_SIGMA, background_sigma: float = BACKGROUND_SIGMA) -> np.ndarray:
    """Difference of Gaussians: keeps structures about ``sigma`` wide, removes the nucleus's slow shape."""
    image = np.asarray(image, dtype=np.float32)
    return ndimage.gaussian_filter(image, sigma) - background(image, background_sigma)


def background(image: np.ndarray, sigma: float = BACKGROUND_SIGMA) -> np.ndarray:
    """The wide blur that the band pass subtracts (kernel cut at 2.5 sigma: it only has to be smooth)."""
    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma, truncate=2.5)


def find_spots(image: np.ndarray, threshold: float, mask: np.ndarray | None = None, sigma: float = SPOT_SIGMA) -> Spots:
    """Spots whose band-pass response peaks above ``threshold`` (intensity units) inside ``mask``."""
    return spots_at(band_pass(image, sigma), [threshold], mask)[0]


def spots_at(response: np.ndarray, thresholds: list[float], mask: np.ndarray | None = None) -> list[Spots]:
    """The spots of one band-pass response at each threshold, filtering once for all of them.

    A spot is a local maximum of the response over its 3×3 neighbourhood; its area is the number
    of pixels of its connected region above the threshold. Maxima are looked for, and regions
    labelled, only in the box around the pixels above the lowest threshold.
    """
    candidates = response > min(thresholds)
    if mask is not None:
        candidates &= mask
    rows_any, cols_any = np.flatnonzero(candidates.any(axis=1)), np.flatnonzero(candidates.any(axis=0))
    if not len(rows_any):
        empty = np.empty(0, dtype=np.intp)
        return [Spots(empty, empty, np.empty(0, dtype=response.dtype), empty) for _ in thresholds]
    top, left = max(rows_any[0] - 1, 0), max(cols_any[0] - 1, 0)
    box = (slice(top, rows_any[-1] + 2), slice(left, cols_any[-1] + 2))
    response, candidates = response[box], candidates[box]  # nothing outside the box is a candidate
    local_max = response == ndimage.maximum_filter(response, size=3)
    found = []
    for threshold in thresholds:
        above = candidates & (response > threshold)
        rows, cols = np.nonzero(above & local_max)
        regions, count = ndimage.label(above)
        areas = np.bincount(regions.ravel(), minlength=count + 1)[regions[rows, cols]]
        found.append(Spots(rows + top, cols + left, response[rows, cols], areas))
    return found


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """The level that best separates two intensity populations (between-class variance)."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def nucleus_mask(smoothed: np.ndarray) -> np.ndarray:
    """The largest bright region of a smoothed crop (the nucleus, not the bits of neighbours at its edges).

    The threshold comes from every other pixel of every other row: a quarter of the work, the same level.
    """
    foreground = smoothed > otsu_threshold(smoothed[::2, ::2])
    regions, count = ndimage.label(foreground)
    if count <= 1:
        return foreground
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0
    return regions == int(np.argmax(sizes))
