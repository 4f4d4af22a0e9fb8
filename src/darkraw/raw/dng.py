"""Writing Bayer (and X-Trans) mosaics as DNG files that LibRaw and dcraw read back.

A minimal DNG 1.4 (Adobe, "Digital Negative Specification" 1.4): one uncompressed 16-bit CFA
image in IFD0 with the CFA pattern, per-position black levels, white level, as-shot neutral,
a colour matrix (XYZ to camera, D65) and the exposure tags.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from darkraw.errors import OutputError
from darkraw.raw.fileio import atomic_output
from darkraw.raw.metadata import RawMetadata, cam_xyz_from_rgb_cam

# TIFF/EP and DNG tag numbers.
_CFA_REPEAT_PATTERN_DIM = 33421
_CFA_PATTERN = 33422
_EXPOSURE_TIME = 33434
_ISO_SPEED = 34855
_DNG_VERSION = 50706
_DNG_BACKWARD_VERSION = 50707
_UNIQUE_CAMERA_MODEL = 50708
_CFA_PLANE_COLOR = 50710
_CFA_LAYOUT = 50711
_BLACK_LEVEL_REPEAT_DIM = 50713
_BLACK_LEVEL = 50714
_WHITE_LEVEL = 50717
_COLOR_MATRIX_1 = 50721
_AS_SHOT_NEUTRAL = 50728
_CALIBRATION_ILLUMINANT_1 = 50778
_ORIENTATION = 274
_EXIF_IFD = 34665
_MAKE = 271
_MODEL = 272
_PHOTOMETRIC_CFA = 32803
_D65 = 21

# LibRaw's flip code to the TIFF Orientation tag (inverse of dcraw's "50132467" table).
_ORIENTATION_FROM_FLIP = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}


def _rational(value: float, denominator_limit: int = 1_000_000) -> tuple[int, int]:
    frac = Fraction(float(value)).limit_denominator(denominator_limit)
    return frac.numerator, frac.denominator


def _rationals(values: np.ndarray) -> tuple[int, ...]:
    flat: list[int] = []
    for v in np.asarray(values, dtype=float).ravel():
        flat.extend(_rational(v, 10_000))
    return tuple(flat)


def _ascii(text: str | None) -> str:
    """``text`` as a TIFF ASCII value: 7-bit, no NUL (it ends the string), no outer spaces.

    A camera name read from another file may hold any character; tifffile refuses those.
    """
    if not text:
        return ""
    cleaned = text.encode("ascii", "replace").decode("ascii").replace("\0", "")
    return cleaned.strip()


def _exif_entries(meta: RawMetadata) -> list[tuple[int, int, bytes]]:
    """EXIF (tag, TIFF type, little-endian value bytes) for exposure time and ISO."""
    entries: list[tuple[int, int, bytes]] = []
    if meta.exposure_time is not None:
        num, den = _rational(meta.exposure_time)
        entries.append((_EXPOSURE_TIME, 5, struct.pack("<II", num, den)))
    if meta.iso is not None:
        entries.append((_ISO_SPEED, 3, struct.pack("<H", int(min(round(meta.iso), 65535)))))
    return entries


def _insert_exif_ifd(path: Path, entries: list[tuple[int, int, bytes]]) -> None:
    """Put an EXIF IFD just before the pixel data of a one-strip little-endian TIFF and point
    IFD0's ExifIFD tag at it.

    LibRaw and dcraw read the ISO speed only from the EXIF IFD, which tifffile does not write.
    The pixel data stays last in the file, so a file cut short anywhere loses pixels, which
    LibRaw reports; a cut in metadata at the end would go unnoticed and read as a wrong exposure.
    """
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        strip_tag = page.tags["StripOffsets"]
        if tif.byteorder != "<" or len(page.dataoffsets) != 1 or strip_tag.dtype != 4:
            raise ValueError("expected a little-endian TIFF with one strip")
        pointer_at = page.tags[_EXIF_IFD - 1].valueoffset
        strip_at, strip_len = page.dataoffsets[0], page.databytecounts[0]
        size = tif.filehandle.size
    if strip_at + strip_len != size:
        raise ValueError("expected the pixel data at the end of the TIFF")
    ifd_at = strip_at + strip_at % 2
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = bytearray(struct.pack("<H", len(entries)))
    data = bytearray()
    for tag, dtype, value in sorted(entries):
        count = 1
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, dtype, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, dtype, count, data_at + len(data))
            data += value
    ifd += struct.pack("<I", 0)
    block = bytes(ifd_at - strip_at) + ifd + data
    block += bytes(-(strip_at + len(block)) % 16)
    with open(path, "r+b") as fh:
        fh.seek(strip_at)
        pixels = fh.read(strip_len)
        fh.seek(strip_at)
        fh.write(block + pixels)
        fh.seek(strip_tag.valueoffset)
        fh.write(struct.pack("<I", strip_at + len(block)))
        fh.seek(pointer_at - 8)
        fh.write(struct.pack("<HHII", _EXIF_IFD, 4, 1, ifd_at))


def write_dng(path: str | Path, mosaic: np.ndarray, meta: RawMetadata) -> Path:
    """Write a Bayer or X-Trans mosaic in DN and its metadata as an uncompressed DNG, atomically.

    Args:
        path: the output file; written under a temporary name, then renamed.
        mosaic: ``(H, W)`` integer DN in [0, 65535] (float is rounded).
        meta: its metadata; a missing colour matrix is written as identity, missing white
            balance as neutral.

    Raises:
        ValueError: a mosaic that does not match ``meta``.
        OutputError: the file cannot be written.
    """
    path = Path(path)
    mosaic = np.asarray(mosaic)
    if mosaic.shape != (meta.height, meta.width):
        raise ValueError(
            f"mosaic shape {mosaic.shape} differs from metadata {meta.height}x{meta.width}"
        )
    if not np.all(np.isfinite(mosaic)):
        raise ValueError("mosaic contains NaN or infinite values")
    if mosaic.dtype != np.uint16:
        mosaic = np.clip(np.rint(mosaic), 0, 65535).astype(np.uint16)

    rgb_cam = np.asarray(meta.rgb_cam if meta.rgb_cam is not None else np.eye(3))
    cam_xyz = cam_xyz_from_rgb_cam(rgb_cam)
    cfa = bytes(int(c) for row in meta.cfa_tile for c in row)
    black = np.asarray(meta.black_tile, dtype=float).ravel()
    make, model = _ascii(meta.make), _ascii(meta.model)
    unique_model = " ".join(p for p in (make, model) if p) or "darkraw synthetic"
    extratags: list[tuple[int, int | str, int, object, bool]] = [
        (_CFA_REPEAT_PATTERN_DIM, "H", 2, (meta.period, meta.period), True),
        (_CFA_PATTERN, "B", len(cfa), tuple(cfa), True),
        (_DNG_VERSION, "B", 4, (1, 4, 0, 0), True),
        (_DNG_BACKWARD_VERSION, "B", 4, (1, 1, 0, 0), True),
        (_UNIQUE_CAMERA_MODEL, "s", 0, unique_model, True),
        (_CFA_PLANE_COLOR, "B", 3, (0, 1, 2), True),
        (_CFA_LAYOUT, "H", 1, 1, True),
        (_BLACK_LEVEL_REPEAT_DIM, "H", 2, (meta.period, meta.period), True),
        (_BLACK_LEVEL, "2I", len(black), _rationals(black), True),
        (_WHITE_LEVEL, "I", 1, round(meta.white_level), True),
        (_COLOR_MATRIX_1, "2i", 9, _rationals(cam_xyz), True),
        (_CALIBRATION_ILLUMINANT_1, "H", 1, _D65, True),
        (_ORIENTATION, "H", 1, _ORIENTATION_FROM_FLIP[meta.flip], True),
        (_MAKE, "s", 0, make or "darkraw", True),
        (_MODEL, "s", 0, model or "synthetic", True),
    ]
    if meta.wb_gains is not None:
        # Without the tag a reader balances the frame itself (gray world); a neutral of 1, 1, 1
        # would instead claim the camera asked for no white balance at all.
        wb = np.asarray(meta.wb_gains, dtype=float)
        extratags.append((_AS_SHOT_NEUTRAL, "2I", 3, _rationals(1.0 / wb), True))
    exif = _exif_entries(meta)
    if exif:
        # tifffile refuses to write the ExifIFD tag itself: write a placeholder tag that sorts
        # into the same place, and turn it into ExifIFD once the EXIF IFD is appended.
        extratags.append((_EXIF_IFD - 1, "I", 1, 0, True))
    try:
        with atomic_output(path) as tmp:
            tifffile.imwrite(
                tmp,
                mosaic,
                photometric=_PHOTOMETRIC_CFA,
                planarconfig="contig",
                compression=None,
                metadata=None,
                software="darkraw",
                rowsperstrip=mosaic.shape[0],
                extratags=extratags,
            )
            if exif:
                _insert_exif_ifd(tmp, exif)
    except OSError as err:
        raise OutputError(path, f"cannot write DNG ({err.strerror or err})") from None
    return path
