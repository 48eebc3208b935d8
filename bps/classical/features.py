"""Per-image features for the classical baselines, from the raw TIFFs that preprocess decodes, on every core.

Two families, in columns with their family's prefix:

* ``appearance_*``: what differs between plates whatever the radiation did (background level
  and noise, nucleus brightness, texture and area fraction, crop size). A classifier on these
  alone measures how far plate recognition gets; no focus is counted.
* ``foci_*``: classical spot detection on the nucleus (:mod:`bps.classical.foci`): counts at two
  thresholds, per nucleus and per 1000 nuclear pixels, spot brightness and size. Thresholds
  and brightness are relative to the nucleus's contrast over its background, so a brighter
  plate does not have more foci.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from bps.classical import foci
from bps.classical.foci import nucleus_mask
from bps.core.params import FeatureParams, PreprocessParams
from bps.data.arrays import PreparedArray, collect_images
from bps.data.images import apply_window, intensity_window, prepare_image, read_tiff, shrink, to_uint8

FAMILIES = ("appearance", "foci")


def family_columns(table: pd.DataFrame, family: str) -> list[str]:
    """The feature columns of one family, in table order."""
    if family not in FAMILIES:
        raise ValueError(f"unknown feature family {family!r} (allowed: {list(FAMILIES)})")
    return [column for column in table.columns if column.startswith(f"{family}_")]


def image_features(image: np.ndarray, params: FeatureParams) -> dict[str, float]:
    """Both families' features of one decoded nucleus crop.

    Robust statistics (medians, quartiles) come from every other pixel of every other row, a
    quarter of the work for the same values to within noise; spots are searched at full resolution.
    """
    image = np.asarray(image, dtype=np.float32)
    smoothed = ndimage.gaussian_filter(image, params.spot_sigma)
    mask = nucleus_mask(smoothed)
    sample, sample_mask = image[::2, ::2], mask[::2, ::2]
    nucleus, outside = sample[sample_mask], sample[~sample_mask]
    if nucleus.size == 0:  # a nucleus thinner than the sampling grid
        nucleus = image[mask]
    if outside.size == 0:  # the nucleus fills the crop: take the border as background
        outside = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    background = float(np.median(outside))
    low, median, high = np.percentile(nucleus, [25, 50, 75])
    contrast = max(float(median) - background, 1.0)
    residual = (sample - smoothed[::2, ::2])[~sample_mask]
    features = {
        "appearance_background": background,
        "appearance_noise": 1.4826 * float(np.median(np.abs(residual))) if residual.size else 0.0,
        "appearance_nucleus_mean": float(nucleus.mean()),
        "appearance_nucleus_median": float(median),
        "appearance_texture_iqr": float(high - low) / contrast,
        "appearance_area_fraction": float(mask.mean()),
        "appearance_height": float(image.shape[0]),
        "appearance_width": float(image.shape[1]),
    }
    response = smoothed - foci.background(image)
    area_kpx = max(float(mask.sum()), 1.0) / 1000.0
    dim, bright = foci.spots_at(response, [t * contrast for t in params.thresholds], mask)
    relative = dim.responses / contrast
    features |= {
        "foci_count": float(len(dim)),
        "foci_per_kpx": len(dim) / area_kpx,
        "foci_count_bright": float(len(bright)),
        "foci_bright_per_kpx": len(bright) / area_kpx,
        "foci_mean_intensity": float(relative.mean()) if len(dim) else 0.0,
        "foci_max_intensity": float(relative.max()) if len(dim) else 0.0,
        "foci_mean_area": float(dim.areas.mean()) if len(dim) else 0.0,
        "foci_max_area": float(dim.areas.max()) if len(dim) else 0.0,
    }
    return features


# The foci channel maps this fraction of the image's intensity window to full scale: a focus stands
# a few tenths of the window above its nucleus, so it spans most of the 8 bits.
FOCI_CHANNEL_RANGE = 0.25


def model_input(image: np.ndarray, preprocess: PreprocessParams) -> np.ndarray:
    """One decoded crop to the CNN's C×size×size uint8 input: the image, then, with
    ``preprocess.foci_channel``, the band-pass response that the foci count thresholds.

    Shrinking a ~145 px crop to 64 px takes a focus from ~5 px wide to ~2; the band pass finds it
    at native scale first, and area averaging keeps its integrated response. The channel is in
    units of the image's own intensity window (so a plate's staining gain cancels), and only
    bright spots (positive responses) are kept.
    """
    channels = [prepare_image(image, preprocess)]
    if preprocess.foci_channel:
        low, high = intensity_window(image, preprocess)
        response = shrink(foci.band_pass(image), preprocess, crop=image)
        channels.append(to_uint8(apply_window(response, 0.0, FOCI_CHANNEL_RANGE * (high - low))))
    return np.stack(channels)


def prepared_and_features(path: Path, preprocess: PreprocessParams, params: FeatureParams
                          ) -> tuple[np.ndarray, dict[str, float]]:
    """One TIFF decoded once into both of its outputs: the model input and the classical features."""
    image = read_tiff(path)
    return model_input(image, preprocess), image_features(image, params)


def prepare_with_features(paths: list[Path], preprocess: PreprocessParams, params: FeatureParams,
                          desc: str = "preprocess") -> tuple[PreparedArray, pd.DataFrame]:
    """Every image's model input (as :func:`bps.data.arrays.prepare_images`) and features (one row
    each, row for row with the kept images), from one decode per file on every core.

    Decoding is about a fifth of the per-image work here, but the features used to decode every file a
    second time in a stage of their own. A bad image stops the run naming it (``preprocess.on_error:
    fail``) or is left out of both outputs (``skip``).
    """
    rows: list[dict[str, float]] = []
    prepared = collect_images(partial(prepared_and_features, preprocess=preprocess, params=params), paths,
                              1 + preprocess.foci_channel, preprocess, desc, side=rows)
    return prepared, pd.DataFrame(rows)
