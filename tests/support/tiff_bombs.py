"""Decompression bombs: small TIFFs whose one strip decodes to far more than their header declares.

Each is a valid 64×64 uint16 TIFF whose strip is replaced by a codec stream of a huge blank
image (or of far more bytes than 64×64×2), with the Compression tag set to match. The streams
are built incrementally, so making a bomb never holds its decoded size in memory.
"""

from __future__ import annotations

import io
import struct
import zlib

import imagecodecs
import numpy as np
import tifffile

HEADER_SHAPE = (64, 64)
STRUCT_CODES = {3: "H", 4: "I", 16: "Q"}  # TIFF SHORT, LONG, LONG8


def forge(strip: bytes, compression: int) -> bytes:
    """A 64×64 uint16 TIFF whose single strip is ``strip``, declared as ``compression``."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros(HEADER_SHAPE, np.uint16), rowsperstrip=HEADER_SHAPE[0])
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tiff:
        order, tags = tiff.byteorder, tiff.pages.first.tags
        patches = [(tags["Compression"], int(compression)), (tags["StripOffsets"], len(data))]
        patches.append((tags["StripByteCounts"], len(strip)))
        for tag, value in patches:
            assert tag.count == 1
            struct.pack_into(order + STRUCT_CODES[tag.dtype], data, tag.valueoffset, value)
    return bytes(data) + strip


def zeros_deflated(size: int, chunk: int = 2**20) -> bytes:
    """A zlib stream of ``size`` zero bytes (~1000:1), in milliseconds.

    Every whole chunk compresses, from a flushed state, to the same byte-aligned raw Deflate
    segment, so it is compressed once and repeated; the Adler-32 of n zeros is (n mod 65521) << 16 | 1.
    """

    def segment(length: int) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(bytes(length)) + compressor.flush(zlib.Z_FULL_FLUSH)

    whole, rest = divmod(size, chunk)
    body = segment(chunk) * whole + (segment(rest) if rest else b"")
    final_empty_block = b"\x03\x00"
    return b"\x78\xda" + body + final_empty_block + struct.pack(">I", (size % 65521) << 16 | 1)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def blank_png(side: int) -> bytes:
    """A side×side 8-bit greyscale PNG of zeros: its image data is one zero filter byte per row, then zeros."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    stream = zeros_deflated(side * (side + 1))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")


def png_bomb(side: int = 16000) -> bytes:
    """The issue's bomb: a 64×64 header over a PNG strip of side×side pixels (256 MB at 16000)."""
    return forge(blank_png(side), tifffile.COMPRESSION.PNG)


def jpeg_bomb(side: int = 8000) -> bytes:
    """JPEG-in-TIFF: a 64×64 header over a side×side JPEG strip (64 MB at 8000)."""
    return forge(imagecodecs.jpeg8_encode(np.zeros((side, side), np.uint8)), tifffile.COMPRESSION.JPEG)


def deflate_bomb(size: int = 256 * 2**20) -> bytes:
    """An accepted codec past its declared size: a Deflate strip inflating to ``size`` bytes, not 8 kB."""
    return forge(zeros_deflated(size), tifffile.COMPRESSION.ADOBE_DEFLATE)


def zstd_bomb(size: int = 64 * 2**20) -> bytes:
    """A Zstd strip decoding to ``size`` bytes (the encoder needs them once, here, not the reader)."""
    return forge(imagecodecs.zstd_encode(bytes(size)), tifffile.COMPRESSION.ZSTD)


def packbits_bomb(size: int = 256 * 2**20) -> bytes:
    """A PackBits strip of runs of 128 zeros (2 bytes each) decoding to ``size`` bytes."""
    return forge(b"\x81\x00" * (size // 128), tifffile.COMPRESSION.PACKBITS)


def lzw_bomb(size: int = 16 * 2**20) -> bytes:
    """An LZW strip decoding to ``size`` bytes."""
    return forge(imagecodecs.lzw_encode(bytes(size)), tifffile.COMPRESSION.LZW)


def header_only_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG of a few dozen bytes whose header declares width×height (the issue's 99-byte 20000×20000 file)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b""))
            + _png_chunk(b"IEND", b""))
