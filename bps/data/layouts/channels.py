"""One multi-channel sample (one grayscale file per channel) to one C×size×size model input.

Each channel file is a PNG (read by Pillow) or a TIFF (read by bps/data/images.py's checked reader),
of the dataset's ``bit_depth`` (8: uint8, 16: uint16; anything else is refused, naming the
file). Every channel goes through :func:`bps.data.images.prepare_image` on its own: padded to a
square, area-resized, and normalised by ``preprocess.normalize`` measured on that channel of
that image alone (``percentile``: its own percentiles; ``minmax``: its own range; ``fixed``:
``preprocess.fixed_range`` for every channel), so a dim stain is not drowned by a bright one.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from bps.core.params import PreprocessParams
from bps.data.arrays import PreparedArray, collect_images
from bps.data.images import (
    MAX_SIDE,
    ImageError,
    ImageShapeError,
    ImageTooLargeError,
    PixelTypeError,
    check_size,
    prepare_image,
    read_tiff,
    tiff_size,
)

TIFF_SUFFIXES = (".tif", ".tiff")
DTYPES = {8: np.uint8, 16: np.uint16}
# Pillow's single-channel modes and the pixel type they hold.
PNG_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_HEAD = 24  # signature, IHDR length and type, width, height


class NotAPngError(ImageError):
    """A channel file named as a PNG (not .tif) whose bytes are not one."""


def png_size(source: Path | BinaryIO, label: str) -> tuple[int, int]:
    """Height and width from a PNG's IHDR (its first 24 bytes), read before Pillow sees the file.

    Pillow checks its bomb limit only after parsing the header itself, and raises an error that is
    not an :class:`ImageError`; a 99-byte file can declare 20000×20000.
    """
    if isinstance(source, Path):
        with open(source, "rb") as stream:
            head = stream.read(PNG_HEAD)
    else:
        source.seek(0)
        head = source.read(PNG_HEAD)
        source.seek(0)
    if len(head) < PNG_HEAD or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise NotAPngError(f"{label}: not a PNG file (no PNG signature and IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def read_png(source: Path | BinaryIO, name: str | None = None, max_side: int = MAX_SIDE) -> np.ndarray:
    """A single-channel PNG (a path or an open binary file): its size checked from the header before
    Pillow parses it, and every chunk checked whole (CRCs, IEND) before any pixel is decoded, so a
    file cut short is refused instead of decoded with zeros where its pixels were."""
    path = name or str(source)
    check_size(path, *png_size(source, path), max_side)
    try:
        with Image.open(source, formats=["PNG"]) as image:
            image.verify()
        if not isinstance(source, Path):
            source.seek(0)
        with Image.open(source, formats=["PNG"]) as image:
            if image.mode not in PNG_MODES:
                raise ImageShapeError(f"{path}: PNG mode {image.mode} is not one grayscale channel (L or I;16)")
            return np.asarray(image, dtype=PNG_MODES[image.mode])
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{path}: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as error:
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"{path}: cannot read the PNG ({type(error).__name__}: {error})") from None


def channel_size(source: Path | BinaryIO, name: str | None = None, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Height and width a channel file's header declares (PNG or TIFF, by its name), no pixel decoded."""
    label = name or str(source)
    if Path(label).suffix.lower() in TIFF_SUFFIXES:
        return tiff_size(source, name, max_side)
    size = png_size(source, label)
    check_size(label, *size, max_side)
    return size


def read_channel(source: Path | BinaryIO, bit_depth: int, name: str | None = None,
                 max_side: int = MAX_SIDE) -> np.ndarray:
    """One channel file (a path, or an upload named ``name``) as a 2-D array of the expected pixel type."""
    if isinstance(source, Path) and not source.is_file():
        raise ImageError(f"{source}: file not found")
    label = name or str(source)
    is_tiff = Path(label).suffix.lower() in TIFF_SUFFIXES
    image = read_tiff(source, name, max_side) if is_tiff else read_png(source, name, max_side)
    if image.dtype != DTYPES[bit_depth]:
        raise PixelTypeError(f"{label}: {image.dtype} pixels, but data.layout.bit_depth is {bit_depth}")
    return image


def read_sample(sources: Sequence[Path | BinaryIO], bit_depth: int, names: Sequence[str] | None = None,
                max_side: int = MAX_SIDE) -> list[np.ndarray]:
    """A sample's channel files as arrays of one size: channels of different sizes (512×37 beside
    64×64) are not the same field of view, and resizing each to the model's size would hide it."""
    given = names if names is not None else [None] * len(sources)
    images = [read_channel(source, bit_depth, name, max_side) for source, name in zip(sources, given)]
    labels = [name or str(source) for source, name in zip(sources, given)]
    odd = next((index for index, image in enumerate(images) if image.shape != images[0].shape), None)
    if odd is not None:
        sizes = ", ".join(f"{label} ({'×'.join(map(str, image.shape))})" for label, image in zip(labels, images))
        raise ImageShapeError(f"{labels[odd]}: channels of one sample differ in size: {sizes}")
    return images


def prepare_sample(paths: tuple[Path, ...], params: PreprocessParams, bit_depth: int) -> np.ndarray:
    """A sample's channel files to one C×size×size uint8 array, each channel normalised on its own."""
    return np.stack([prepare_image(image, params) for image in read_sample(paths, bit_depth)])


def prepare_samples(files: list[tuple[Path, ...]], names: list[str], channels: int, bit_depth: int,
                    params: PreprocessParams, desc: str = "preprocess") -> PreparedArray:
    """Prepare every sample (its ``channels`` files) into N×channels×size×size on every core; a
    bad file stops the run or, with ``on_error: skip``, leaves its sample out, reported under its name."""
    work = partial(prepare_sample, params=params, bit_depth=bit_depth)
    return collect_images(work, files, channels, params, desc, names)
