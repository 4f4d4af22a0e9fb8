"""Writing Bayer (and X-Trans) mosaics, and linear pictures, as DNG files that LibRaw, dcraw,
darktable and RawTherapee read.

A DNG 1.4 (Adobe, "Digital Negative Specification" 1.4): one uncompressed 16-bit image in IFD0,
a CFA mosaic with its pattern, per-position black levels, white level, as-shot neutral, a
colour matrix (XYZ to camera, D65) and the exposure tags, or a LinearRaw picture in linear
sRGB. Given the source file's capture metadata (:mod:`darkraw.raw.exif`), a DNG also carries its
camera profile, date, EXIF, GPS and XMP, as Adobe's and darktable's enhanced DNGs do.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from darkraw.errors import OutputError
from darkraw.raw.exif import (
    MAKE,
    MODEL,
    XMP,
    SourceMetadata,
    TagEntry,
    capture_exif,
    insert_sub_ifds,
)
from darkraw.raw.fileio import atomic_output
from darkraw.raw.metadata import XYZ_FROM_SRGB, RawMetadata, cam_xyz_from_rgb_cam

# TIFF/EP and DNG tag numbers.
_CFA_REPEAT_PATTERN_DIM = 33421
_CFA_PATTERN = 33422
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
_GPS_IFD = 34853
_DEFAULT_CROP_ORIGIN = 50719
_DEFAULT_CROP_SIZE = 50720
_DEFAULT_USER_CROP = 51125
_MAKE = 271
_MODEL = 272
_PHOTOMETRIC_CFA = 32803
_PHOTOMETRIC_LINEAR_RAW = 34892
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


def write_dng(
    path: str | Path,
    mosaic: np.ndarray,
    meta: RawMetadata,
    source: SourceMetadata | None = None,
) -> Path:
    """Write a Bayer or X-Trans mosaic in DN and its metadata as an uncompressed DNG, atomically.

    Args:
        path: the output file; written under a temporary name, then renamed.
        mosaic: ``(H, W)`` integer DN in [0, 65535] (float is rounded).
        meta: its metadata; a missing colour matrix is written as identity, missing white
            balance as neutral.
        source: the capture metadata of the file the mosaic came from
            (:func:`darkraw.raw.exif.read_source_metadata`): its date, EXIF, GPS and XMP are
            carried over, and a DNG source's camera profile (colour and forward matrices,
            illuminants, as-shot neutral, baseline exposure, crop, opcode lists 2 and 3)
            replaces the one derived from ``meta``. The layout, black and white levels and
            orientation are always ``meta``'s: the mosaic's as it now is.

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
    source = source or SourceMetadata()

    rgb_cam = np.asarray(meta.rgb_cam if meta.rgb_cam is not None else np.eye(3))
    cam_xyz = cam_xyz_from_rgb_cam(rgb_cam)
    cfa = bytes(int(c) for row in meta.cfa_tile for c in row)
    black = np.asarray(meta.black_tile, dtype=float).ravel()
    tags: dict[int, tuple[int, int | str, int, object, bool]] = {
        tag[0]: tag
        for tag in [
            (_CFA_REPEAT_PATTERN_DIM, "H", 2, (meta.period, meta.period), True),
            (_CFA_PATTERN, "B", len(cfa), tuple(cfa), True),
            (_CFA_PLANE_COLOR, "B", 3, (0, 1, 2), True),
            (_CFA_LAYOUT, "H", 1, 1, True),
            (_BLACK_LEVEL_REPEAT_DIM, "H", 2, (meta.period, meta.period), True),
            (_BLACK_LEVEL, "2I", len(black), _rationals(black), True),
            (_WHITE_LEVEL, "I", 1, round(meta.white_level), True),
            (_COLOR_MATRIX_1, "2i", 9, _rationals(cam_xyz), True),
            (_CALIBRATION_ILLUMINANT_1, "H", 1, _D65, True),
            (_ORIENTATION, "H", 1, _ORIENTATION_FROM_FLIP[meta.flip], True),
        ]
    }
    if meta.wb_gains is not None:
        # Without the tag a reader balances the frame itself (gray world); a neutral of 1, 1, 1
        # would instead claim the camera asked for no white balance at all.
        wb = np.asarray(meta.wb_gains, dtype=float)
        tags[_AS_SHOT_NEUTRAL] = (_AS_SHOT_NEUTRAL, "2I", 3, _rationals(1.0 / wb), True)
    if any(e.tag == _COLOR_MATRIX_1 for e in source.dng):
        # The source's own profile replaces the matrix LibRaw derived: its second matrix and
        # illuminant, forward matrices and calibration belong with its first.
        del tags[_CALIBRATION_ILLUMINANT_1]
    for entry in _profile_entries(source, meta.height, meta.width):
        tags[entry.tag] = (entry.tag, *entry.tifffile_value(), True)
    exif = capture_exif(source, meta)
    _write_tiff_dng(path, mosaic, _PHOTOMETRIC_CFA, tags, meta.make, meta.model, source, exif)
    return path


def write_linear_dng(
    path: str | Path,
    rgb_lin: np.ndarray,
    meta: RawMetadata | None = None,
    source: SourceMetadata | None = None,
) -> Path:
    """Write a demosaiced picture in linear sRGB as a linear DNG (LinearRaw), atomically.

    The output for what has no mosaic to give back (an X-Trans frame, the classic pipeline's
    or the SID network's picture): its colour matrix is sRGB's (the pixels are already white
    balanced and colour corrected, so the as-shot neutral is 1, 1, 1), its pixels already turned
    (orientation 1). The source's make, model, date, EXIF and GPS are carried; its XMP and
    camera profile are not, since they describe the camera's raw data and orientation.

    Args:
        path: the output file.
        rgb_lin: ``(3, H, W)`` linear sRGB in [0, 1] (clipped), oriented.
        meta: the source's metadata (make, model, exposure and ISO where ``source`` lacks them).
        source: the source's capture metadata.

    Raises:
        ValueError: not a ``(3, H, W)`` image of finite values.
        OutputError: the file cannot be written.
    """
    path = Path(path)
    rgb_lin = np.asarray(rgb_lin)
    if rgb_lin.ndim != 3 or rgb_lin.shape[0] != 3:
        raise ValueError(f"expected a linear image of shape (3, H, W), got {rgb_lin.shape}")
    if not np.all(np.isfinite(rgb_lin)):
        raise ValueError("image contains NaN or infinite values")
    pixels = np.clip(np.rint(np.moveaxis(rgb_lin, 0, -1) * 65535.0), 0, 65535).astype(np.uint16)
    srgb_from_xyz = np.linalg.inv(XYZ_FROM_SRGB)
    tags: dict[int, tuple[int, int | str, int, object, bool]] = {
        tag[0]: tag
        for tag in [
            (_BLACK_LEVEL, "I", 1, 0, True),
            (_WHITE_LEVEL, "I", 1, 65535, True),
            (_COLOR_MATRIX_1, "2i", 9, _rationals(srgb_from_xyz), True),
            (_CALIBRATION_ILLUMINANT_1, "H", 1, _D65, True),
            (_AS_SHOT_NEUTRAL, "2I", 3, _rationals(np.ones(3)), True),
            (_ORIENTATION, "H", 1, 1, True),
        ]
    }
    source = source or SourceMetadata()
    exif = capture_exif(source, meta)
    linear_source = SourceMetadata(image=source.image, exif=source.exif, gps=source.gps)
    make = meta.make if meta is not None else None
    model = meta.model if meta is not None else None
    _write_tiff_dng(path, pixels, _PHOTOMETRIC_LINEAR_RAW, tags, make, model, linear_source, exif)
    return path


def _profile_entries(source: SourceMetadata, height: int, width: int) -> list[TagEntry]:
    """A DNG source's profile tags, less a default crop that no longer lies inside the written
    image (the source's margins outside its active area are not written; the crop is relative to
    that area)."""
    size = next((e.numbers() for e in source.dng if e.tag == _DEFAULT_CROP_SIZE), None)
    origin = next((e.numbers() for e in source.dng if e.tag == _DEFAULT_CROP_ORIGIN), [0, 0])
    crop_fits = size is None or (
        len(size) == 2
        and len(origin) == 2
        and 0 < origin[0] + size[0] <= width
        and 0 < origin[1] + size[1] <= height
    )
    crop = (_DEFAULT_CROP_ORIGIN, _DEFAULT_CROP_SIZE)
    return [e for e in source.dng if crop_fits or e.tag not in crop]


def _write_tiff_dng(
    path: Path,
    pixels: np.ndarray,
    photometric: int,
    tags: dict[int, tuple[int, int | str, int, object, bool]],
    make: str | None,
    model: str | None,
    source: SourceMetadata,
    exif: tuple[TagEntry, ...],
) -> None:
    """Write the DNG: IFD0 with ``tags``, the source's IFD0 tags and XMP, then the EXIF and GPS
    IFDs; atomically."""
    source_make = source.find(MAKE)
    source_model = source.find(MODEL)
    make = _ascii(source_make.text() if source_make else make)
    model = _ascii(source_model.text() if source_model else model)
    unique = " ".join(p for p in (make, model) if p) or "darkraw synthetic"
    tags.setdefault(_UNIQUE_CAMERA_MODEL, (_UNIQUE_CAMERA_MODEL, "s", 0, unique, True))
    tags[_DNG_VERSION] = (_DNG_VERSION, "B", 4, (1, 4, 0, 0), True)
    tags[_DNG_BACKWARD_VERSION] = (_DNG_BACKWARD_VERSION, "B", 4, (1, 1, 0, 0), True)
    tags[_MAKE] = (_MAKE, "s", 0, make or "darkraw", True)
    tags[_MODEL] = (_MODEL, "s", 0, model or "synthetic", True)
    for entry in source.image:
        if entry.tag not in (MAKE, MODEL):
            tags[entry.tag] = (entry.tag, *entry.tifffile_value(), True)
    if source.xmp:
        tags[XMP] = (XMP, "B", len(source.xmp), source.xmp, True)
    subs = [(_EXIF_IFD - 1, _EXIF_IFD, exif), (_GPS_IFD - 1, _GPS_IFD, source.gps)]
    for placeholder, _, entries in subs:
        if entries:
            # tifffile refuses to write the EXIF and GPS pointers themselves: a placeholder tag
            # sorts into the same place and becomes the pointer once the IFD is written.
            tags[placeholder] = (placeholder, "I", 1, 0, True)
    extratags = [tags[k] for k in sorted(tags)]
    try:
        with atomic_output(path) as tmp:
            tifffile.imwrite(
                tmp,
                pixels,
                photometric=photometric,
                planarconfig="contig",
                compression=None,
                metadata=None,
                software="darkraw",
                rowsperstrip=pixels.shape[0],
                extratags=extratags,
            )
            insert_sub_ifds(tmp, subs)
    except OSError as err:
        raise OutputError(path, f"cannot write DNG ({err.strerror or err})") from None
