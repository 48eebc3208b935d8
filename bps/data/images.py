"""TIFF decode, intensity normalisation and resizing: one nucleus crop to one model input.

Normalisation methods (``preprocess.normalize``):

* ``fixed``: map a fixed intensity window ``preprocess.fixed_range`` (default 200-3000, from
  below background to above the brightest foci) to 0-1 and clip. Every image gets the same
  scale, so absolute brightness survives, and so does every plate's staining drift.
* ``percentile`` (default): map each image's own ``preprocess.percentiles`` to 0-1. Robust to plate
  brightness, but the top percentile is often a focus's peak, so a focus's brightness is divided away.
* ``nucleus``: map the crop's background to 0 and ``NUCLEUS_WINDOW`` times its nucleus's contrast
  over that background to 1 (:func:`nucleus_window`): the unit the foci count measures foci in, so
  a plate's gain and offset cancel and a focus keeps its brightness relative to its nucleus.
* ``minmax``: each image's own min and max, as the original study did. Kept for comparison;
  one bright focus rescales the whole nucleus.

Crops are cut or padded (with their border's median) to their centre ``preprocess.window_px``
square and shrunk by area averaging (PIL's box filter), which integrates over pixels instead of
skipping them: one factor for every crop (``preprocess.scale: window``); the window is then
applied to the small image (see :func:`prepare_image`). ``fit`` pads each crop to a square and
shrinks the whole of it, ``nucleus`` first cuts the crop to its nucleus's box (:func:`nucleus_box`),
``native`` takes its centre unshrunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage
from tifffile import TiffPage

from bps.core.errors import PipelineError
from bps.core.params import PreprocessParams


class ImageError(PipelineError, ValueError):
    """An image file cannot be used: the message names the file."""


class NotATiffError(ImageError):
    """The bytes are not a readable TIFF."""


class PixelTypeError(ImageError):
    """The pixels are not integer camera counts."""


class ImageShapeError(ImageError):
    """Not exactly one 2-D single-channel page."""


class ImageTooLargeError(ImageError):
    """Far larger than a nucleus crop."""


class CompressionError(ImageError):
    """Pixel data in a codec that is not accepted (image codecs carry their own, unchecked, size)."""


# Crops are ~90-260 px a side; a whole field of view (or a forged header) is a mistake.
MAX_SIDE = 4096
# Pillow's own decompression-bomb limit, set to ours: every reader checks the declared size first
# (check_size), so Pillow's check is a second line, and read_png turns its error into ours.
Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE

# TIFF Compression tag values (tifffile.COMPRESSION) that microscopy crops use. tifffile decodes
# these into a buffer of the size the header declares, so a stream that inflates further fails
# instead of filling memory. Image codecs (PNG, JPEG, WebP, JPEG 2000...) decode to the size in
# their own stream, which the TIFF header does not bound (a 64×64 header over a 24000×24000 PNG),
# so they are refused before any pixel is decoded.
CODECS = {
    "none": (tifffile.COMPRESSION.NONE,),
    "LZW": (tifffile.COMPRESSION.LZW,),
    "Deflate": (tifffile.COMPRESSION.ADOBE_DEFLATE, tifffile.COMPRESSION.DEFLATE),
    "PackBits": (tifffile.COMPRESSION.PACKBITS,),
    "Zstd": (tifffile.COMPRESSION.ZSTD,),
}
ALLOWED_COMPRESSIONS = frozenset(int(code) for codes in CODECS.values() for code in codes)


def read_tiff(source: Path | str | BinaryIO, name: str | None = None, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode a single-channel integer TIFF (a path or an open binary file) to a 2-D array.

    Pages, pixel type, size and compression are checked from the header before any pixel is
    decoded (a few kB of compressed zeros can claim a gigapixel image), and the accepted codecs
    decode into the declared size only. Every refusal is an :class:`ImageError` subclass naming
    the file (``name``, else the path).
    """
    with _tiff_page(source, name, max_side) as (label, page):
        _check_compression(label, page.compression)
        try:
            image = page.asarray(maxworkers=1)  # one thread: files are small, workers are many
        except Exception as error:  # a valid header over corrupt or truncated pixel data
            raise ImageError(f"{label}: cannot decode TIFF pixel data ({type(error).__name__}: {error})") from None
    return np.squeeze(image)


def tiff_size(source: Path | str | BinaryIO, name: str | None = None, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Height and width a TIFF's header declares (checked as :func:`read_tiff` checks it), no pixel decoded."""
    with _tiff_page(source, name, max_side) as (_, page):
        height, width = (side for side in page.shape if side != 1)
    return height, width


@contextmanager
def _tiff_page(source: Path | str | BinaryIO, name: str | None, max_side: int) -> Iterator[tuple[str, TiffPage]]:
    """The one page of a TIFF and its label, its header checked (pages, pixel type, size); a stream
    is read from its start."""
    label = name or (str(source) if isinstance(source, str | Path) else str(getattr(source, "name", "upload")))
    with ExitStack() as cleanup:
        try:
            stream_name = None
            if not isinstance(source, str | Path):
                stream_name = Path(label).name  # a spooled upload has none
                source.seek(0)
            tiff = cleanup.enter_context(tifffile.TiffFile(source, name=stream_name))
            pages, page = len(tiff.pages), tiff.pages.first
        except Exception as error:  # tifffile raises many types for non-TIFF input
            raise NotATiffError(f"{label}: not a TIFF file ({type(error).__name__}: {error})") from None
        if pages != 1:
            raise ImageShapeError(f"{label}: expected one image, found {pages} pages")
        _check_header(label, page.shape, page.dtype, max_side)
        yield label, page


def _check_header(label: str, shape: tuple[int, ...], dtype: np.dtype | None, max_side: int) -> None:
    if dtype is None or np.dtype(dtype).kind not in "iu":
        raise PixelTypeError(f"{label}: pixel type {dtype} is not supported; expected integer counts (e.g. uint16)")
    sides = [side for side in shape if side != 1]
    if len(sides) != 2 or min(sides) < 2:
        raise ImageShapeError(f"{label}: expected one 2-D single-channel image, got shape {tuple(shape)}")
    check_size(label, sides[0], sides[1], max_side)


def check_size(label: str, height: int, width: int, max_side: int) -> None:
    """Refuse a declared size over ``max_side`` a side (so over ``max_side``² pixels), before any decoding."""
    if max(height, width) > max_side:
        raise ImageTooLargeError(f"{label}: image is {height}×{width} px; at most {max_side} px a side")


def _check_compression(label: str, compression: int) -> None:
    if compression in ALLOWED_COMPRESSIONS:
        return
    try:
        codec = f"{tifffile.COMPRESSION(compression).name} ({int(compression)})"
    except ValueError:
        codec = str(int(compression))
    allowed = ", ".join(f"{name} ({' or '.join(str(int(code)) for code in codes)})" for name, codes in CODECS.items())
    raise CompressionError(f"{label}: TIFF compression {codec} is not accepted; allowed: {allowed}")


def intensity_window(image: np.ndarray, params: PreprocessParams) -> tuple[float, float]:
    """The raw intensities that map to 0 and 1 under the chosen method."""
    if params.normalize == "fixed":
        low, high = params.fixed_range
    elif params.normalize == "percentile":
        low, high = np.percentile(image, params.percentiles)
    elif params.normalize == "nucleus":
        low, high = nucleus_window(image)
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


def pad_to_square(image: np.ndarray, at_least: int = 0) -> np.ndarray:
    """Centre the crop on a square canvas, of at least ``at_least`` a side, filled with its border's
    median (its background)."""
    height, width = image.shape
    side = max(height, width, at_least)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    canvas = np.full((side, side), np.median(border), dtype=image.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = image
    return canvas


def resize_area(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Area-averaged resize of an image to ``size``×``size``, or to ``size`` (width, height) (float32)."""
    # Mode "F" reads the buffer as float32: any other dtype would be silently reinterpreted.
    image = np.ascontiguousarray(image, dtype=np.float32)
    shape = (size, size) if isinstance(size, int) else size
    return np.asarray(Image.fromarray(image, mode="F").resize(shape, Image.Resampling.BOX))


def centre_window(image: np.ndarray, size: int) -> np.ndarray:
    """The ``size``×``size`` window at the crop's centre, at native scale (float32): a focus keeps
    its real width (~5 px FWHM), which shrinking a ~145 px crop to 64 px would take to ~2 px."""
    square = pad_to_square(image, at_least=size)
    start = (square.shape[0] - size) // 2
    return square[start : start + size, start : start + size].astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise 0-1 to 0-255: a quarter of float32's size, and memory-mappable as is."""
    return np.round(image * 255.0).astype(np.uint8)


def prepare_image(image: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """One decoded crop to one ``image_size``² uint8 model input, shrunk as ``preprocess.scale``
    says (:func:`shrink`).

    The window is measured on the raw crop but applied after shrinking, which is the same
    affine map on 20× fewer pixels; clipping after area averaging also keeps the integrated
    brightness of a small focus that saturates the window.
    """
    return to_uint8(apply_window(shrink(image, params), *intensity_window(image, params)))


def shrink(image: np.ndarray, params: PreprocessParams, crop: np.ndarray | None = None) -> np.ndarray:
    """A crop (or ``crop``'s map of the same shape) to ``image_size``² float32, as ``preprocess.scale``
    says: the whole crop shrunk to fit (``fit``), its centre at native scale (``native``), the
    box of the crop's nucleus shrunk to fit (``nucleus``; the box is found on ``crop``, default ``image``),
    or its centre window of ``window_px`` shrunk (``window``).

    ``fit`` and ``nucleus`` shrink each crop by its own factor, so a focus's width in pixels is
    relative to its nucleus's size; ``window`` shrinks every crop by the same factor, so it keeps
    the width in µm that tells a heavy ion's focus from an X-ray's (bps/sim/physics.py).
    """
    if params.scale == "native":
        return centre_window(image, params.image_size)
    if params.scale == "window":
        return resize_area(centre_window(image, params.window_px), params.image_size)
    if params.scale == "nucleus":
        image = image[nucleus_box(image if crop is None else crop)]
    return resize_area(pad_to_square(image), params.image_size)


NUCLEUS_THUMB_PX = 40  # the long side of the thumbnail the nucleus is found on
NUCLEUS_MARGIN = 0.1  # of the box's long side, added on every side


def nucleus_box(image: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of the crop's nucleus, with a NUCLEUS_MARGIN margin (``preprocess.scale: nucleus``).

    A nucleus fills about a quarter of its crop's area, so shrinking the whole crop to 64 px spends
    half of each side on background; its box at the same size shows every focus about 1.5 times as
    wide, for the same training cost. A crop with no nucleus found is kept whole.
    """
    height, width = image.shape
    _, _, nucleus, step = _thumbnail_nucleus(image)
    if nucleus is None:
        return slice(0, height), slice(0, width)
    rows, cols = ndimage.find_objects(nucleus.astype(np.int8))[0]
    top, bottom, left, right = rows.start * step, rows.stop * step, cols.start * step, cols.stop * step
    pad = NUCLEUS_MARGIN * max(bottom - top, right - left)
    return (slice(max(0, int(top - pad)), min(height, int(np.ceil(bottom + pad)))),
            slice(max(0, int(left - pad)), min(width, int(np.ceil(right + pad)))))


# The window of ``preprocess.normalize: nucleus`` spans this many times the nucleus's contrast over its
# background: the brightest simulated Fe focus peaks about 3.2 times it (bps/sim/physics.py), real ones
# 2.4 times (the real crop), so foci are not clipped and the nucleus keeps a quarter of the 8 bits.
NUCLEUS_WINDOW = 4.0


def nucleus_window(image: np.ndarray) -> tuple[float, float]:
    """(background, background + NUCLEUS_WINDOW × the nucleus's contrast over it), from the thumbnail.

    Background and nucleus level are medians (of the thumbnail outside every bright component, and
    of the nucleus), so a focus or a neighbour's edge moves neither; a plate's staining gain and
    offset scale and shift both, and cancel. The foci count measures its spots in the same unit
    (bps/classical/features.py). A crop with no nucleus found spans its thumbnail's 5th-99th percentiles.
    """
    thumb, foreground, nucleus, _ = _thumbnail_nucleus(image)
    if nucleus is None:
        low, high = np.percentile(thumb, [5, 99])
        return float(low), float(high)
    background = float(np.median(thumb[~foreground]))  # never empty: the 5th percentile is below the threshold
    contrast = max(float(np.median(thumb[nucleus])) - background, 1e-6)
    return background, background + NUCLEUS_WINDOW * contrast


def _thumbnail_nucleus(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """The crop's NUCLEUS_THUMB_PX area-averaged thumbnail, its pixels above the threshold, its
    nucleus's mask there (None when nothing stands above the threshold: a flat crop) and the
    thumbnail's pixel side in crop pixels.

    The nucleus is the bright component under the centre (or the largest) of the thumbnail
    thresholded halfway between its 5th and 99th percentiles: a tenth of a millisecond.
    """
    height, width = image.shape
    step = max(height, width) / NUCLEUS_THUMB_PX
    thumb = resize_area(image, (max(1, round(width / step)), max(1, round(height / step))))
    low, high = np.percentile(thumb, [5, 99])
    foreground = thumb > (low + high) / 2
    labels, count = ndimage.label(foreground)
    if count == 0:
        return thumb, foreground, None, step
    label = labels[labels.shape[0] // 2, labels.shape[1] // 2]
    if label == 0:
        label = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))  # the largest
    return thumb, foreground, labels == label, step


def prepare(path: Path | str, params: PreprocessParams) -> np.ndarray:
    """One TIFF file to one ``size``×``size`` uint8 model input."""
    return prepare_image(read_tiff(path), params)
