"""Writing RGB PNGs with every core: numpy's Up filter, then deflate in row chunks over threads.

Pillow's PNG encoder runs its filters and zlib on one core. For a 12-megapixel 8-bit result
``darkraw enhance`` writes, that was 0.75 s with the other core idle (AMD EPYC, 2 cores); this
module writes it in 0.20 s, 0.75 % larger (9.46 against 9.39 MB), in 0.12-0.13 s and 7 %
smaller than that through zlib-ng (:data:`DEFLATE`), and in 0.07 s, 7.64 MB, with Huffman
coding alone (:data:`DEFAULT_STRATEGY`).

The image is cut into chunks of whole rows, and each chunk is filtered and deflated in a thread
of :func:`darkraw.parallel.thread_map` (numpy and zlib release the GIL), in the manner of pigz:
each chunk is a raw deflate stream primed with the 32 KiB of filtered bytes before it (so the
split costs almost nothing in size), ended with a sync flush (a byte-aligned empty stored block)
so that the pieces concatenate into one valid stream, the last one ended with ``Z_FINISH``. The
zlib header goes in front, and the Adler-32 of the whole filtered stream, combined from the
chunks' own, behind.

Why the Up filter alone: on that 12-megapixel denoised result (4256x2848) at zlib level 1, Up
gave 9.46 MB, Average 9.29 MB, Paeth 9.39 MB (Pillow's size too), Sub 10.29 MB, no filter
15.4 MB, and a per-row choice among the five by least sum of absolute signed bytes 9.39 MB
(Paeth on nearly every row). Up costs one numpy subtraction (0.03 s for the whole image on one
core); Average 0.17 s, Paeth 0.8 s and the per-row choice 0.7 s, more than they could save in
deflate time (0.34 s on one core). On a photograph tiled to the same size the sizes were as
close (Up 7.04 MB, Pillow 7.05 MB).
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import numpy as np

from darkraw.parallel import bands, thread_map

#: The deflate library: zlib-ng's Python binding where installed (a dependency of darkraw),
#: whose level 2 deflated a 12-megapixel denoised result 1.5x faster than zlib's level 1 and
#: 7 % smaller (0.205 s and 8.99 MB against 0.307 s and 9.65 MB, on one core); zlib otherwise.
#: Its streams, checksums and dictionaries are zlib's.
DEFLATE: ModuleType
try:
    from zlib_ng import zlib_ng as DEFLATE
except ImportError:  # pragma: no cover - zlib-ng is a dependency; a platform may lack a wheel
    DEFLATE = zlib

#: The level :func:`write_png` deflates at unless told: the fast level of the library in use.
DEFAULT_LEVEL = 2 if DEFLATE is not zlib else 1

#: How :func:`write_png` deflates unless told. ``"huffman"``: each chunk's filtered bytes are
#: Huffman-coded without deflate's search for repeated strings (``Z_HUFFMAN_ONLY``), except a chunk
#: mostly of zero bytes (flat areas: a clipped sky, a black border), whose runs are coded as
#: such (``Z_RLE``). ``"default"``: deflate's own string matching at the level given. On a
#: 12-megapixel result of ``darkraw enhance`` (Up-filtered, 36 MB, zlib-ng, one core) the
#: string matching of level 2 took 0.216 s for 9.49 MB, Huffman coding alone 0.113 s for 7.64
#: MB: a denoised photo's residuals repeat little, and the short matches a fast level finds cost
#: more than the bytes they replace. Over 13 pictures (darkraw's results, the demo's, photos of
#: buildings and landscapes, a half-flat synthetic image) the files came to 40.6 MB against 43.2
#: MB at level 2, in 0.51 against 0.86 s; photos of buildings, whose patterns repeat, were up to
#: 10 % larger, darkraw's results 4-20 % smaller.
DEFAULT_STRATEGY = "huffman"

#: The strategies :func:`write_png` takes (:data:`DEFAULT_STRATEGY`).
_STRATEGIES = ("huffman", "default")

#: A chunk with more zero bytes than this share (after the Up filter) is run-length coded in the
#: ``"huffman"`` strategy: Huffman coding spends at least a bit on each byte of a run.
_FLAT_SHARE = 0.8

#: Bytes of filtered image data (rows of ``1 + 3 * width * depth`` bytes) per deflate chunk.
#: Small enough that two cores stay busy to the end (a 12-megapixel 8-bit image is 36 MB, 18
#: chunks), large enough that the per-chunk cost (priming with 32 KiB, a sync flush of a few
#: bytes, a thread hand-off) stays far below 1 %.
CHUNK_BYTES = 1 << 21

#: Bytes of the data before a chunk that prime its compressor: deflate's whole window, so a
#: chunk finds the matches it would have found in one stream.
_WINDOW = 1 << 15

#: The most bytes of a compressed piece one IDAT holds (PNG allows 2**31 - 1 in a chunk): only
#: a piece of rows wider than 170 million pixels is ever cut into several.
_MAX_IDAT = 1 << 30

_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: PNG filter type 2: each byte minus the byte above it.
_UP = 2

#: Adler-32's modulus.
_ADLER_BASE = 65521


def write_png(
    path: str | Path,
    hwc: np.ndarray,
    *,
    icc: bytes | None,
    exif: bytes | None,
    level: int = DEFAULT_LEVEL,
    strategy: str = DEFAULT_STRATEGY,
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """Write an ``(H, W, 3)`` uint8 (8-bit) or uint16 (16-bit) image as an RGB PNG.

    The chunks are what Pillow writes for ``save(..., icc_profile=icc, exif=exif)``: IHDR, iCCP
    (named ``ICC Profile``), eXIf, IDAT, IEND, so Pillow reads back the same ``icc_profile`` and
    ``getexif()``.

    Args:
        icc: the ICC profile, or ``None``/empty for none.
        exif: a TIFF-structured EXIF block (``II*\\0...``), as the ``eXIf`` chunk holds it; a
            leading ``Exif\\0\\0`` (a JPEG APP1 segment's) is dropped, as Pillow does.
        level: deflate level, 0 to 9 (:data:`DEFAULT_LEVEL`); 0 stores the bytes whatever the
            strategy.
        strategy: ``"huffman"`` or ``"default"`` (:data:`DEFAULT_STRATEGY`).
        chunk_bytes: filtered bytes per deflate chunk (:data:`CHUNK_BYTES`); tests make it small.

    Raises:
        ValueError: not an ``(H, W, 3)`` uint8 or uint16 array of at least one pixel, a level
            outside 0..9 or an unknown strategy.
        OSError: the file cannot be written.
    """
    if hwc.ndim != 3 or hwc.shape[2] != 3 or hwc.shape[0] < 1 or hwc.shape[1] < 1:
        raise ValueError(f"expected an image of shape (H, W, 3), got {hwc.shape}")
    if hwc.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8 or uint16 pixels, got {hwc.dtype}")
    if not 0 <= level <= 9:
        raise ValueError(f"zlib level must be 0 to 9, got {level}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}, got {strategy!r}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    height, width = hwc.shape[:2]
    depth = 8 * hwc.dtype.itemsize
    pieces, adler = _deflate(np.ascontiguousarray(hwc), level, strategy, chunk_bytes)
    with open(path, "wb") as out:
        out.write(_SIGNATURE)
        _chunk(out, b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0))
        if icc:
            # Compression method 0 (zlib) after the name's terminating zero.
            _chunk(out, b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))
        if exif:
            _chunk(out, b"eXIf", exif.removeprefix(b"Exif\0\0"))
        # One IDAT a piece, the zlib header in the first and the Adler-32 at the end of the last.
        header, trailer = _zlib_header(level), struct.pack(">I", adler)
        for index, piece in enumerate(pieces):
            view = memoryview(piece)
            cuts = range(0, len(view), _MAX_IDAT)  # never empty: a piece has a block's end
            for start in cuts:
                head = header if index == 0 and start == 0 else b""
                tail = trailer if index == len(pieces) - 1 and start == cuts[-1] else b""
                _chunk(out, b"IDAT", head, view[start : start + _MAX_IDAT], tail)
        _chunk(out, b"IEND")


def _deflate(
    hwc: np.ndarray, level: int, strategy: str, chunk_bytes: int
) -> tuple[list[bytes], int]:
    """The filtered image as raw deflate pieces that concatenate into one stream, and the
    Adler-32 of the whole filtered stream."""
    height = hwc.shape[0]
    # PNG stores 16-bit samples big-endian; numpy's are the machine's.
    samples = hwc.astype(">u2", copy=False) if hwc.dtype == np.uint16 else hwc
    rows = samples.view(np.uint8).reshape(height, -1)
    stride = 1 + rows.shape[1]
    parts = math.ceil(height * stride / chunk_bytes)
    # Enough rows before a chunk to fill deflate's window.
    window_rows = math.ceil(_WINDOW / stride)
    chunks = bands(height, parts)

    def deflate(index: int) -> tuple[bytes, int, int]:
        band = chunks[index]
        # Flat memoryviews (no copies): the buffers zlib's functions are typed to take.
        scanlines = _up_filtered(rows, band.start, band.stop)
        filtered = scanlines.reshape(-1).data
        if strategy == "huffman":
            # Neither coding looks back into the chunk before: no window to prime it with.
            flat = np.count_nonzero(scanlines) < (1 - _FLAT_SHARE) * scanlines.size
            chosen = zlib.Z_RLE if flat else zlib.Z_HUFFMAN_ONLY
            compressor = DEFLATE.compressobj(level, zlib.DEFLATED, -15, 9, chosen)
        elif band.start > 0:
            before = _up_filtered(rows, max(0, band.start - window_rows), band.start)
            window = before.reshape(-1)[-_WINDOW:].data
            compressor = DEFLATE.compressobj(level, zlib.DEFLATED, -15, zdict=window)
        else:
            compressor = DEFLATE.compressobj(level, zlib.DEFLATED, -15)
        last = index == len(chunks) - 1
        data = compressor.compress(filtered) + compressor.flush(
            zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
        )
        return data, DEFLATE.adler32(filtered), filtered.nbytes

    results = thread_map(deflate, range(len(chunks)), size=rows.size)
    adler = 1
    for _, part_adler, length in results:
        adler = _adler32_combine(adler, part_adler, length)
    return [data for data, _, _ in results], adler


def _up_filtered(rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the image's bytes as PNG scanlines: the filter type, then each
    byte minus the one above it (modulo 256; the first row's "above" is zeros)."""
    out = np.empty((stop - start, 1 + rows.shape[1]), np.uint8)
    out[:, 0] = _UP
    first = start
    if start == 0:
        out[0, 1:] = rows[0]
        first = 1
    np.subtract(rows[first:stop], rows[first - 1 : stop - 1], out=out[first - start :, 1:])
    return out


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings joined, from each one's and the second's length (what
    zlib's ``adler32_combine`` does; Python's zlib does not offer it).

    Adler-32 is ``b << 16 | a``: ``a`` is 1 plus the sum of the bytes, ``b`` the sum of every
    prefix's ``a``. Behind the first string, each of the second's ``a`` values grows by the
    first's sum (``a1 - 1``).
    """
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % _ADLER_BASE
    b = (b1 + b2 + second_length * (a1 - 1)) % _ADLER_BASE
    return b << 16 | a


def _zlib_header(level: int) -> bytes:
    """The two bytes zlib writes before a deflate stream of a 32 KiB window at ``level``."""
    # FLEVEL as zlib sets it: 0 fastest, 1 fast, 2 default, 3 maximum compression.
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    header = 0x78 << 8 | flevel << 6
    return struct.pack(">H", header + 31 - header % 31)


def _chunk(out: BinaryIO, kind: bytes, *parts: bytes | memoryview) -> None:
    """One PNG chunk: length, type, data (``parts`` joined), CRC-32 of type and data."""
    out.write(struct.pack(">I", sum(len(part) for part in parts)) + kind)
    crc = DEFLATE.crc32(kind)
    for part in parts:
        out.write(part)
        crc = DEFLATE.crc32(part, crc)
    out.write(struct.pack(">I", crc))


__all__ = ["CHUNK_BYTES", "DEFAULT_LEVEL", "DEFAULT_STRATEGY", "DEFLATE", "write_png"]
