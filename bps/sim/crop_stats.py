"""Measurements of one nucleus crop, the same for a real BPS file and a simulated one.

The simulator is calibrated against the real crop in ``shared/bps-real`` by these functions
alone (``python -m bps realism`` prints the table; ``tests/sim/test_render.py`` checks it),
so "looks like the real data" is a set of numbers measured one way on both sides. Its focus
detector thresholds absolute grey levels, right for comparing with one real crop; the foci
baseline's (bps/classical/foci.py) is relative to each nucleus's contrast, right across plates.
tests/classical/test_foci.py shows that the two agree on the real crop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

# A focus is a spot whose difference-of-Gaussians response (σ 1 px minus σ 3 px) exceeds this many
# grey levels. On the real crop the one Fe focus responds ~770 and the brightest chromatin speckle
# ~140 (measured with this module), so 250 separates them with margin on both sides.
FOCUS_RESPONSE = 250.0
FOCUS_MIN_DISTANCE_PX = 3  # two maxima closer than this are one focus


@dataclass(frozen=True)
class CropStats:
    height: int
    width: int
    p1: float
    p50: float
    p99: float
    background_level: float  # median of the background: the darker half of what is not nucleus
    background_sigma: float  # std of (image − its σ 1 px blur) there: the noise, free of slow gradients
    nucleus_fraction: float  # area of the central nucleus / crop area
    nucleus_level: float  # median inside the central nucleus
    foci: int  # detectable foci in the central nucleus
    focus_peak: float  # the brightest focus: maximum of the σ 1 px blurred image (nan without a focus)
    focus_fwhm_px: float  # its full width at half maximum above the surrounding nucleus (nan without a focus)

    def as_dict(self) -> dict:
        return asdict(self)


def _isodata_threshold(values: np.ndarray) -> float:
    """Ridler-Calvard: the level halfway between the means of the two classes it splits."""
    threshold = float(values.mean())
    for _ in range(100):
        low, high = values[values <= threshold], values[values > threshold]
        if not len(low) or not len(high):
            break
        updated = (float(low.mean()) + float(high.mean())) / 2
        if abs(updated - threshold) < 0.01:
            break
        threshold = updated
    return threshold


def nucleus_masks(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(central nucleus, background) by isodata thresholds on a σ 2 px blur.

    The nucleus is the bright component under the crop's centre (the largest one if the centre
    is dark).
    """
    smooth = ndimage.gaussian_filter(image.astype(float), 2.0)
    foreground = smooth > _isodata_threshold(smooth)
    labels, count = ndimage.label(foreground)
    centre = labels[image.shape[0] // 2, image.shape[1] // 2]
    if not centre and count:
        centre = int(np.argmax(ndimage.sum(foreground, labels, range(1, count + 1)))) + 1
    nucleus = labels == centre if centre else np.zeros_like(foreground)
    # The dark class still holds the nuclei's out-of-focus halo: its own darker half is background.
    dark = smooth[~foreground]
    background = smooth <= _isodata_threshold(dark) if len(dark) else np.zeros_like(foreground)
    return nucleus, background


def focus_response(image: np.ndarray) -> np.ndarray:
    """Difference of Gaussians: high on spots 2-6 px wide, flat on nuclei and background."""
    image = image.astype(float)
    return ndimage.gaussian_filter(image, 1.0) - ndimage.gaussian_filter(image, 3.0)


def focus_centres(image: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """(row, col) of every detectable focus, brightest first; only within ``inside`` if given."""
    response = focus_response(image)
    peaks = (ndimage.maximum_filter(response, 2 * FOCUS_MIN_DISTANCE_PX + 1) == response) & (response > FOCUS_RESPONSE)
    if inside is not None:
        peaks &= inside
    rows, cols = np.nonzero(peaks)
    order = np.argsort(-response[rows, cols])
    return np.stack([rows[order], cols[order]], axis=1)


def count_foci(image: np.ndarray) -> int:
    """Detectable foci in the central nucleus of a crop."""
    return len(focus_centres(image, nucleus_masks(image)[0]))


def _focus_shape(image: np.ndarray, row: int, col: int) -> tuple[float, float]:
    """(peak, FWHM): the peak of the σ 1 px blur near (row, col), and the diameter of the disc
    with the area that stays above half of the peak's height over the surrounding nucleus (the
    median of a ring 6-10 px out)."""
    blurred = ndimage.gaussian_filter(image.astype(float), 1.0)
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    distance = np.hypot(rows - row, cols - col)
    near = distance <= 2
    peak = float(blurred[near].max())
    base = float(np.median(image[(distance > 6) & (distance < 10)]))
    above, _ = ndimage.label(ndimage.gaussian_filter(image.astype(float), 0.7) > (peak + base) / 2)
    spot = above[row, col]
    area = float((above == spot).sum()) if spot else 1.0
    return peak, 2 * float(np.sqrt(area / np.pi))


def measure_crop(image: np.ndarray) -> CropStats:
    """Every statistic of the real-vs-simulated table, for one crop."""
    values = image.astype(float)
    nucleus, background = nucleus_masks(values)
    residual = values - ndimage.gaussian_filter(values, 1.0)
    centres = focus_centres(values, nucleus)
    peak, fwhm = _focus_shape(values, *centres[0]) if len(centres) else (float("nan"), float("nan"))
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    return CropStats(
        height=int(image.shape[0]),
        width=int(image.shape[1]),
        p1=float(p1),
        p50=float(p50),
        p99=float(p99),
        background_level=float(np.median(values[background])),
        background_sigma=float(residual[background].std()),
        nucleus_fraction=float(nucleus.mean()),
        nucleus_level=float(np.median(values[nucleus])) if nucleus.any() else float("nan"),
        foci=len(centres),
        focus_peak=peak,
        focus_fwhm_px=fwhm,
    )
