"""TIFF decode, intensity normalisation and resizing: one nucleus crop to one model input.

Normalisation methods (``preprocess.normalize``):

* ``fixed`` (default): map a fixed intensity window ``preprocess.fixed_range`` (default
  200-3000, from below background to above the brightest foci) to 0-1 and clip. Every image
  gets the same scale, so absolute brightness, which is where foci and dose show, survives.
* ``percentile``: map each image's own ``preprocess.percentiles`` to 0-1. Robust to plate
  brightness, but hides absolute intensity.
* ``minmax``: each image's own min and max, as the original study did. Kept for comparison;
  one bright focus rescales the whole nucleus.

Crops are padded to a square with their border's median (aspect ratio kept) and shrunk by area
averaging (PIL's box filter), which integrates over pixels instead of skipping them; the window
is then applied to the small image (see :func:`prepare_image`).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from bps.errors import PipelineError
from bps.params import PreprocessParams


class ImageError(PipelineError, ValueError):
    """An image file cannot be used: the message names the file."""


def read_tiff(source: Path | str | BinaryIO, name: str | None = None) -> np.ndarray:
    """Decode a single-channel TIFF (a path or an open binary file) to a 2-D array.

    Raises :class:`ImageError` naming the file (``name``, else the path) when it is not one.
    """
    label = name or str(source)
    try:
        with tifffile.TiffFile(source) as tiff:
            if len(tiff.pages) != 1:
                raise ImageError(f"{label}: expected one image, found {len(tiff.pages)} pages")
            image = tiff.pages.first.asarray(maxworkers=1)  # one thread: files are small, workers are many
    except ImageError:
        raise
    except Exception as error:  # tifffile raises many types for corrupt input
        raise ImageError(f"{label}: cannot decode TIFF ({type(error).__name__}: {error})") from None
    image = np.squeeze(image)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ImageError(f"{label}: expected one 2-D single-channel image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.integer) and not np.issubdtype(image.dtype, np.floating):
        raise ImageError(f"{label}: unsupported pixel type {image.dtype}")
    return image


def intensity_window(image: np.ndarray, params: PreprocessParams) -> tuple[float, float]:
    """The raw intensities that map to 0 and 1 under the chosen method."""
    if params.normalize == "fixed":
        low, high = params.fixed_range
    elif params.normalize == "percentile":
        low, high = np.percentile(image, params.percentiles)
    else:
        low, high = image.min(), image.max()
    return float(low), float(high)


def apply_window(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low``..``high`` to 0..1 (float32), clipping outside."""
    scale = max(high - low, 1e-6)
    return np.clip((image.astype(np.float32) - low) / scale, 0.0, 1.0)


def normalize(image: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Map intensities to 0-1 (float32) by the chosen method; see the module docstring."""
    return apply_window(image, *intensity_window(image, params))


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Centre the crop on a square canvas filled with its border's median (its background)."""
    height, width = image.shape
    side = max(height, width)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    canvas = np.full((side, side), np.median(border), dtype=image.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = image
    return canvas


def resize_area(image: np.ndarray, size: int) -> np.ndarray:
    """Area-averaged resize of an image to ``size``×``size`` (float32)."""
    # Mode "F" reads the buffer as float32: any other dtype would be silently reinterpreted.
    image = np.ascontiguousarray(image, dtype=np.float32)
    return np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.Resampling.BOX))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise 0-1 to 0-255: a quarter of float32's size, and memory-mappable as is."""
    return np.round(image * 255.0).astype(np.uint8)


def prepare_image(image: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """One decoded crop to one ``size``×``size`` uint8 model input.

    The window is measured on the raw crop but applied after shrinking, which is the same
    affine map on 20× fewer pixels; clipping after area averaging also keeps the integrated
    brightness of a small focus that saturates the window.
    """
    low, high = intensity_window(image, params)
    return to_uint8(apply_window(resize_area(pad_to_square(image), params.size), low, high))


def prepare(path: Path | str, params: PreprocessParams) -> np.ndarray:
    """One TIFF file to one ``size``×``size`` uint8 model input."""
    return prepare_image(read_tiff(path), params)
