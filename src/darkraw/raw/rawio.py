"""Reading raw photos and bare mosaics: the only module that imports rawpy (LibRaw).

Any file LibRaw opens (ARW, DNG, NEF, CR2, RAF, ...) gives its visible mosaic in sensor digital
numbers (DN) and a :class:`~darkraw.raw.metadata.RawMetadata`. Bare mosaics (``.npy``, 16-bit PNG or
TIFF) carry no metadata, so the caller supplies the CFA pattern and levels.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import struct
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import rawpy

from darkraw.choices import parse_choice
from darkraw.errors import DarkrawError, RawReadError, UnsupportedSensorError
from darkraw.parallel import bands, thread_map
from darkraw.raw.cfa import BayerPattern, unpack_bayer
from darkraw.raw.metadata import RawMetadata, as_matrix3, rgb_cam_from_cam_xyz

#: Extensions read as bare mosaics rather than through LibRaw.
BARE_EXTENSIONS = (".npy", ".png", ".tif", ".tiff")

_COLOR_LETTERS = {"R": 0, "G": 1, "B": 2}

#: LibRaw (like dcraw) refuses raw images narrower or shorter than this, in pixels.
LIBRAW_MIN_SIDE = 22

#: LibRaw renders an X-Trans mosaic only where both sides are at least this (its X-Trans
#: demosaicking works in tiles of 512 pixels and calls a smaller frame corrupt: 511x600 failed,
#: 512x600 rendered, LibRaw 0.21).
LIBRAW_MIN_XTRANS_SIDE = 512


def libraw_renders(meta: RawMetadata) -> bool:
    """Whether LibRaw renders a mosaic of ``meta``'s size and layout
    (:data:`LIBRAW_MIN_SIDE`, :data:`LIBRAW_MIN_XTRANS_SIDE`)."""
    least = LIBRAW_MIN_XTRANS_SIDE if meta.is_xtrans else LIBRAW_MIN_SIDE
    return min(meta.height, meta.width) >= least


def libraw_version() -> str:
    """The version of the LibRaw that reads and renders files here (rawpy's build of it)."""
    return ".".join(str(part) for part in rawpy.libraw_version)


#: TIFF PhotometricInterpretation values of raw image data: CFA and LinearRaw.
_RAW_PHOTOMETRIC = (32803, 34892)

#: File extensions LibRaw reads that a folder given as input is searched for.
_RAW_EXTENSIONS_TEXT = (
    ".3fr .ari .arw .bay .cr2 .cr3 .crw .dcr .dng .erf .fff .iiq .k25 .kdc .mef .mos .mrw .nef "
    ".nrw .orf .pef .raf .raw .rw2 .rwl .sr2 .srf .srw .x3f"
)
RAW_EXTENSIONS = frozenset(_RAW_EXTENSIONS_TEXT.split())

#: Frames of more pixels than this are refused before they are read (a 45 Mpixel camera's raw
#: is 45e6): a header can declare any size, and reading it would take memory in proportion.
DEFAULT_MAX_PIXELS = 200_000_000

#: The environment variable that sets another pixel limit (a whole number, e.g. ``400e6``).
MAX_PIXELS_VARIABLE = "DARKRAW_MAX_PIXELS"

#: The lowest white level a raw file may state, in DN: a 4-bit sensor's saturation.
MIN_WHITE_LEVEL = 16

#: IFDs and SubIFDs of a TIFF looked at for a message's facts: a header may list millions.
_MAX_IFDS = 64

#: What an ordinary photo given as raw data is told, after what photo it is.
_NOT_RAW = (
    "not raw data: darkraw enhances raw files (or 16-bit single-channel bare mosaics, given "
    "their CFA pattern and white level)"
)

#: PNG colour types (IHDR) and Pillow's modes of a JPEG, in words.
_PNG_COLOURS = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_JPEG_COLOURS = {"L": "greyscale", "RGB": "RGB", "YCbCr": "RGB", "CMYK": "CMYK"}

#: TIFF PhotometricInterpretation values of ordinary pictures, in words (with 1 to 4 samples).
_TIFF_COLOURS = {0: "greyscale", 1: "greyscale", 2: "RGB", 3: "palette", 5: "CMYK", 6: "RGB"}

#: No raw format stores more pixels per byte, however compressed (a lossless one stores a pixel
#: in a bit at best); a header that declares more than this per byte of its file lies.
_MAX_PIXELS_PER_BYTE = 256


@dataclass(frozen=True)
class RawImage:
    """A mosaic in DN, ``(H, W)``, with its metadata and where it came from."""

    mosaic: np.ndarray
    meta: RawMetadata
    path: Path | None = None


@dataclass(frozen=True)
class BareMosaicSpec:
    """What a bare mosaic file does not say about itself.

    Attributes:
        pattern: Bayer layout of the mosaic (for a packed ``(h, w, 4)`` array: the layout whose
            2x2 tile, in raster order, gives the order of the four channels).
        white_level: saturation level in DN.
        black_level: black level in DN (one value, or four in the tile's raster order).
    """

    pattern: BayerPattern | str
    white_level: float
    black_level: float | tuple[float, float, float, float] = 0.0


def is_bare_mosaic(path: str | Path) -> bool:
    """True if ``path`` is read as a bare mosaic (array or image file), not via LibRaw."""
    return Path(path).suffix.lower() in BARE_EXTENSIONS


def read_raw(
    path: str | Path, bare: BareMosaicSpec | None = None, *, keep_decoded: bool = False
) -> RawImage:
    """Read a raw photo (through LibRaw) or a bare mosaic (with ``bare`` metadata).

    A frame of more pixels than :func:`max_pixels` is refused before it is read.

    Args:
        keep_decoded: keep LibRaw's handle of the file (the last three files' are kept) for a
            :func:`render_mosaic_with_libraw` of it that follows, which then need not decode it
            again; ``False`` closes it at once.

    Raises:
        RawReadError: the file is missing, not a regular file (a FIFO or a device would block
            or never end), unreadable, over the pixel limit, not a raw photo, or its header
            makes no physical sense (a white level under 16 or far below the data, a
            linearisation table that maps every value to one, strips or tiles that start in
            the file's header), or it is an ordinary photo (an 8-bit PNG, JPEG or TIFF).
        UnsupportedSensorError: the sensor is monochrome, Foveon, or has an unknown CFA.
    """
    path = Path(path)
    if not path.exists():
        raise RawReadError(path, "no such file")
    if path.is_dir():
        raise RawReadError(path, "is a directory, not a raw file")
    if not path.is_file():
        raise RawReadError(path, "not a regular file (a FIFO, device or socket); not read")
    if is_bare_mosaic(path):
        photo = _ordinary_photo(path)
        if photo is not None:
            raise RawReadError(path, f"an ordinary photo ({photo}), {_NOT_RAW}")
        if bare is None:
            raise RawReadError(
                path,
                "a bare mosaic carries no metadata: give its CFA pattern and white level "
                "(--pattern, --white-level)",
            )
        return _read_bare(path, bare)
    return _read_libraw(path, keep_decoded)


def max_pixels() -> int:
    """The most pixels a frame may have: ``DARKRAW_MAX_PIXELS`` if set, else 200 million.

    Raises:
        ValueError: the variable is set to something other than a whole number >= 1.
    """
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise ValueError(
            f"{MAX_PIXELS_VARIABLE} must be a whole number of pixels >= 1, got {text[:40]!r}"
        )
    return int(value)


def _pixel_count(n: int) -> str:
    return f"{n / 1e6:.4g} Mpixel" if n >= 1_000_000 else f"{n} pixels"


def _pixel_limit(path: Path) -> int:
    try:
        return max_pixels()
    except ValueError as err:
        raise RawReadError(path, str(err)) from None


def _over_the_limit(path: Path, what: str, shape: tuple[int, ...], limit: int) -> RawReadError:
    return RawReadError(
        path,
        f"{what} of {'x'.join(map(str, shape))} pixels ({_pixel_count(math.prod(shape))}) is "
        f"over the limit of {_pixel_count(limit)} (set {MAX_PIXELS_VARIABLE} to raise it)",
    )


def _checked_header(raw: rawpy.RawPy, path: Path, file_size: int) -> _TiffFacts:
    """The pixel limit and where the pixels lie, checked before LibRaw unpacks the frame.

    LibRaw allocates the frame its header declares, and reads the pixels from any offset given.
    Returns the TIFF header's facts (empty for a raw format that is no TIFF).
    """
    _check_libraw_size(raw, path, file_size)
    facts = _tiff_facts(path)
    if facts.data_in_header is not None:
        raise RawReadError(path, facts.data_in_header)
    return facts


def _check_libraw_size(raw: rawpy.RawPy, path: Path, file_size: int) -> None:
    """The pixel limit, checked before LibRaw unpacks (allocates) the frame its header declares."""
    sizes = raw.sizes
    shape = (int(sizes.raw_height), int(sizes.raw_width))
    limit = _pixel_limit(path)
    if math.prod(shape) <= limit:
        return
    if math.prod(shape) > _MAX_PIXELS_PER_BYTE * file_size:
        # Not a large photo but a header that lies (LibRaw would say so too, once its read ran
        # past the end of the file; given tile offsets that all point at one tile it would
        # instead fill the whole frame from it).
        raise RawReadError(
            path,
            f"corrupt or truncated raw data (the header declares {shape[0]}x{shape[1]} pixels, "
            f"more than {file_size} bytes can hold)",
        )
    raise _over_the_limit(path, "image", shape, limit)


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_libraw(path: Path, keep_decoded: bool) -> RawImage:
    size = path.stat().st_size
    if size == 0:
        raise RawReadError(path, "empty file")
    try:
        with _libraw_stderr_captured():
            raw = rawpy.imread(str(path))
            try:
                facts = _checked_header(raw, path, size)
                image = _from_rawpy(raw, path, facts)
            except BaseException:
                raw.close()
                raise
        if keep_decoded:
            _DECODED.keep(path, raw)
        else:
            raw.close()
        return image
    except DarkrawError:
        raise
    except rawpy.LibRawFileUnsupportedError:
        problem = "not a raw photo LibRaw can read (unknown or corrupt format)"
        photo = _ordinary_photo(path)
        tiny = None if photo is not None else _small_tiff_raw_size(path)
        if photo is not None:
            problem = f"not a raw photo LibRaw can read: an ordinary photo ({photo}), {_NOT_RAW}"
        elif tiny is not None:
            problem = (
                f"image of {tiny[0]}x{tiny[1]} pixels is too small "
                f"(LibRaw reads {LIBRAW_MIN_SIDE}x{LIBRAW_MIN_SIDE} and larger)"
            )
        raise RawReadError(path, problem) from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as err:
        raise RawReadError(path, f"corrupt or truncated raw data ({type(err).__name__})") from None
    except rawpy.LibRawError as err:
        problem = f"LibRaw could not read it ({type(err).__name__}: {err})"
        raise RawReadError(path, problem) from None
    except MemoryError:
        raise RawReadError(path, "image size in the header is too large to read") from None
    except Exception as err:
        # rawpy's own checks of what LibRaw read: a damaged DNG can give a colour filter code it
        # does not know (``NotImplementedError: filters: 148``, found by fuzzing).
        problem = f"unreadable raw data ({type(err).__name__}: {_one_line(err)})"
        raise RawReadError(path, problem) from None


class _DecodedFiles:
    """The LibRaw handles of the files :func:`read_raw` read last, for
    :func:`render_mosaic_with_libraw` to render a mosaic in place of theirs without decoding
    the file again (0.035-0.075 s for a 12-Mpixel DNG, on the path of every denoised picture).

    A handle is taken once (rendering overwrites its mosaic) and only for the same file: its
    path, inode, size and modification time. At most :attr:`MOST` are kept, the oldest closed
    first (each holds its file open and its raw data, about 2 bytes a pixel): a batch holds
    three at once, the file whose rendering was queued but may not have taken its handle yet,
    the file in the network and the one read ahead (with two, a small file read ahead quickly
    could close the first one's before its rendering took it, and that file was decoded again).
    """

    MOST = 3

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: OrderedDict[tuple[str, int, int, int], rawpy.RawPy] = OrderedDict()

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int, int] | None:
        try:
            st = path.stat()
            return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            return None

    def keep(self, path: Path, raw: rawpy.RawPy) -> None:
        key = self._key(path)
        closing = [raw] if key is None else []
        with self._lock:
            if key is not None:
                if key in self._handles:
                    closing.append(self._handles.pop(key))
                self._handles[key] = raw
                while len(self._handles) > self.MOST:
                    closing.append(self._handles.popitem(last=False)[1])
        for old in closing:
            old.close()

    def take(self, path: Path) -> rawpy.RawPy | None:
        """The kept handle of ``path`` as it is now, handed over (the caller closes it)."""
        key = self._key(path)
        with self._lock:
            return None if key is None else self._handles.pop(key, None)


_DECODED = _DecodedFiles()


class _MutedStderr:
    """Descriptor 2 pointed at ``/dev/null`` while any thread is inside LibRaw.

    Threads read and render at once (a batch reads the next file while it renders this one), so
    the first to enter saves the real descriptor and the last to leave puts it back: each
    saving and restoring its own would let a thread save the other's ``/dev/null`` and restore
    that for good (every later message of the process lost).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._saved = self._mute()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._saved is not None:
                    os.dup2(self._saved, 2)
                    os.close(self._saved)
                    self._saved = None

    @staticmethod
    def _mute() -> int | None:
        """The real descriptor 2, saved, with ``/dev/null`` in its place; ``None`` where it
        cannot be done (no descriptor 2)."""
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            return None
        try:
            sink = os.open(os.devnull, os.O_WRONLY)
        except OSError:
            os.close(saved)
            return None
        os.dup2(sink, 2)
        os.close(sink)
        return saved


_MUTED_STDERR = _MutedStderr()


def _libraw_stderr_captured() -> contextlib.AbstractContextManager[None]:
    """Keep LibRaw's own C-level messages ("Unexpected end of file") off the terminal.

    darkraw reports every problem in one line of its own; LibRaw's duplicates would break that.
    What Python prints goes to descriptor 2 too: darkraw's command line writes its messages
    through a duplicate of it (:func:`darkraw.cli.main`), so another thread's are not lost.
    """
    return _MUTED_STDERR.held()


def _from_rawpy(raw: rawpy.RawPy, path: Path, facts: _TiffFacts) -> RawImage:
    if raw.raw_type != rawpy.RawType.Flat:
        raise UnsupportedSensorError(
            path, "not a mosaic sensor (Foveon, linear DNG or already demosaiced); unsupported"
        )
    desc = raw.color_desc.decode("ascii", "replace")
    pattern = raw.raw_pattern
    if pattern is None or raw.num_colors < 3:
        problem = "monochrome sensor (no colour filter array); unsupported"
        raise UnsupportedSensorError(path, problem)
    if set(desc) - set("RGB"):
        raise UnsupportedSensorError(path, f"colour filters {desc!r} are not RGB; unsupported")
    colors_visible = raw.raw_colors_visible
    period = pattern.shape[0]
    if pattern.shape not in ((2, 2), (6, 6)):
        raise UnsupportedSensorError(
            path, f"CFA pattern of shape {pattern.shape} is neither Bayer nor X-Trans; unsupported"
        )
    mosaic = np.array(raw.raw_image_visible, dtype=np.uint16, copy=True)
    h, w = mosaic.shape
    if h < period or w < period:
        raise RawReadError(path, f"image of {h}x{w} pixels is too small")
    tile_idx = np.asarray(colors_visible[:period, :period])
    cfa_tile = np.vectorize(lambda i: _COLOR_LETTERS[desc[i]])(tile_idx)
    black_per_index = np.asarray(raw.black_level_per_channel, dtype=float)
    black_tile = black_per_index[tile_idx]
    white = float(raw.white_level)

    cam_wb = np.asarray(raw.camera_whitebalance, dtype=float)
    wb: tuple[float, float, float] | None = None
    if np.all(np.isfinite(cam_wb[:3])) and cam_wb[1] > 0 and cam_wb[0] > 0 and cam_wb[2] > 0:
        wb = (float(cam_wb[0] / cam_wb[1]), 1.0, float(cam_wb[2] / cam_wb[1]))

    rgb_cam = None
    color_matrix = np.asarray(raw.color_matrix, dtype=float)[:3, :3]
    if np.any(color_matrix) and np.all(np.isfinite(color_matrix)):
        rgb_cam = as_matrix3(color_matrix)
    else:
        rgb_cam = rgb_cam_from_cam_xyz(np.asarray(raw.rgb_xyz_matrix, dtype=float))

    other = raw.other
    exposure = float(other.shutter_speed) if other.shutter_speed > 0 else None
    iso = float(other.iso_speed) if other.iso_speed > 0 else None
    try:
        meta = RawMetadata(
            cfa_tile=tuple(tuple(int(v) for v in row) for row in cfa_tile),
            black_tile=tuple(tuple(float(v) for v in row) for row in black_tile),
            white_level=white,
            height=h,
            width=w,
            wb_gains=wb,
            rgb_cam=rgb_cam,
            exposure_time=exposure,
            iso=iso,
            make=facts.make,
            model=facts.model,
            flip=int(raw.sizes.flip) & 7,
            source="LibRaw",
        )
    except ValueError as err:
        if period == 6:
            raise UnsupportedSensorError(path, f"6x6 CFA that is not X-Trans: {err}") from None
        raise RawReadError(path, f"inconsistent metadata: {err}") from None
    implausible = _implausible_levels(mosaic, white, facts.white_tag, np.asarray(raw.tone_curve))
    if implausible is not None:
        raise RawReadError(path, implausible)
    return RawImage(mosaic=mosaic, meta=meta, path=path)


def _implausible_levels(
    mosaic: np.ndarray, white: float, white_tag: float | None, curve: np.ndarray
) -> str | None:
    """What makes no physical sense in a header LibRaw accepted, or ``None``.

    Args:
        mosaic: ``(H, W)`` DN as LibRaw read them (after its linearisation).
        white: LibRaw's white level, DN.
        white_tag: the smallest value of the file's own WhiteLevel tag (DNG), if it has one:
            LibRaw reads a 0 there as 65535.
        curve: LibRaw's linearisation table (tone curve), 65536 entries.
    """
    if curve.size and int(curve.min()) == int(curve.max()):
        return f"linearisation table maps every value to {int(curve[0])}: the file holds no picture"
    for level in (white_tag, white):
        if level is not None and level < MIN_WHITE_LEVEL:
            return (
                f"white level {level:g} is no sensor's saturation level "
                f"(at least {MIN_WHITE_LEVEL} expected)"
            )
    # No pixel exceeds saturation by 2x. Many that do, at more than one value, mean the white
    # level is not the sensor's; a frame clipped at its ADC's maximum (one value) is kept.
    above = mosaic[mosaic > 2 * white]
    if above.size > 0.01 * mosaic.size and above.min() != above.max():
        return (
            f"white level {white:g} is far below the data ({above.size / mosaic.size:.0%} of "
            f"the pixels exceed twice it, up to {int(above.max())})"
        )
    return None


@dataclass(frozen=True)
class _TiffFacts:
    """What the TIFF header of a TIFF-based raw file says that rawpy does not pass on."""

    make: str | None = None
    model: str | None = None
    #: The smallest value of the raw image's WhiteLevel tag (DNG), if it has one.
    white_tag: float | None = None
    #: Where the raw image's strips or tiles start inside the file's header, worded, if they do.
    data_in_header: str | None = None


def _tiff_facts(path: Path) -> _TiffFacts:
    """Camera make and model, and the raw image's WhiteLevel tag, for TIFF-based raw formats."""
    import tifffile

    try:
        with _tifffile_quiet(), tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            make = tags.get("Make")
            model = tags.get("Model")
            return _TiffFacts(
                make=str(make.value).strip() if make is not None else None,
                model=str(model.value).strip() if model is not None else None,
                white_tag=_white_level_tag(tif),
                data_in_header=_data_in_header(tif),
            )
    except Exception:
        # Not every raw format is TIFF-based (RAF, CRW, ...); these facts are optional.
        return _TiffFacts()


def _white_level_tag(tif: Any) -> float | None:
    """The smallest value of the raw image's DNG WhiteLevel tag (50717), if it has one."""
    try:
        for ifd in _tiff_ifds(tif):
            if int(ifd.photometric) in _RAW_PHOTOMETRIC:
                white = ifd.tags.get(50717)
                return None if white is None else float(np.min(np.asarray(white.value, float)))
    except Exception:
        # A damaged later IFD or a tag that is no number: LibRaw's level is checked anyway.
        return None
    return None


def _data_in_header(tif: Any) -> str | None:
    """A raw image's strip or tile that starts inside the file's header, worded, or ``None``.

    The header is the TIFF header, the entries of each IFD :func:`_tiff_ifds` walks and the
    values their tags store out of line. LibRaw reads the pixels from any offset it is given:
    from byte 8 it renders the IFD's entries as a picture. ``None`` if no such strip or tile, or
    no TIFF tifffile can read (LibRaw judges those).
    """
    try:
        ifds = list(_tiff_ifds(tif))
        layout, handle = tif.tiff, tif.filehandle
        regions = [(0, 16 if tif.is_bigtiff else 8, "the TIFF header")]
        for ifd in ifds:
            handle.seek(ifd.offset)
            (entries,) = struct.unpack(layout.tagnoformat, handle.read(layout.tagnosize))
            size = layout.tagnosize + entries * layout.tagsize + layout.offsetsize
            regions.append((ifd.offset, ifd.offset + size, f"the IFD at byte {ifd.offset}"))
            for tag in ifd.tags:
                if tag.valuebytecount > layout.tagoffsetthreshold:
                    end = tag.valueoffset + tag.valuebytecount
                    regions.append((tag.valueoffset, end, f"the value of tag {tag.name}"))
        regions.sort()
        starts = np.array([start for start, _, _ in regions], dtype=np.int64)
        # The furthest end of the regions starting at or before each start: an offset lies in
        # some region if it lies before that end of the last region starting at or before it.
        reach = np.maximum.accumulate(np.array([end for _, end, _ in regions], dtype=np.int64))
        for ifd in ifds:
            if int(ifd.photometric) not in _RAW_PHOTOMETRIC:
                continue
            offsets = np.asarray(ifd.dataoffsets, dtype=np.int64)
            last = np.searchsorted(starts, offsets, side="right") - 1
            inside = (last >= 0) & (reach[np.maximum(last, 0)] > offsets)
            if not inside.any():
                continue
            offset = int(offsets[np.argmax(inside)])
            where = next(what for start, end, what in regions if start <= offset < end)
            kind = "tile" if ifd.is_tiled else "strip"
            return f"{kind} offset {offset} points into {where}, not at image data"
    except Exception:
        # A header tifffile cannot walk: LibRaw's own reading decides.
        return None
    return None


def _tiff_ifds(tif: Any) -> Iterator[Any]:
    """A TIFF's IFDs, each followed by its SubIFDs: the first :data:`_MAX_IFDS` in all.

    A header may list a million SubIFDs; walking them all took minutes and a gigabyte.
    """

    def every() -> Iterator[Any]:
        for page in tif.pages:
            yield page
            yield from page.pages or ()

    return itertools.islice(every(), _MAX_IFDS)


def _small_tiff_raw_size(path: Path) -> tuple[int, int] | None:
    """``(H, W)`` of a DNG/TIFF raw image too small for LibRaw, or ``None``.

    Explains why LibRaw refuses an otherwise well-formed small file, instead of calling it an
    unknown format.
    """
    import tifffile

    try:
        with _tifffile_quiet(), tifffile.TiffFile(path) as tif:
            for ifd in _tiff_ifds(tif):
                if int(ifd.photometric) in _RAW_PHOTOMETRIC:
                    h, w = int(ifd.imagelength), int(ifd.imagewidth)
                    return (h, w) if min(h, w) < LIBRAW_MIN_SIDE else None
    except Exception:
        # Not a TIFF at all (or not one tifffile can read): nothing more to say.
        return None
    return None


@contextlib.contextmanager
def _tifffile_quiet() -> Iterator[None]:
    """Keep tifffile's log messages about a damaged header off the terminal (one-line errors)."""
    log = logging.getLogger("tifffile")
    was_disabled, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = was_disabled


def _ordinary_photo(path: Path) -> str | None:
    """What ordinary photo ``path`` is (``"8-bit RGB PNG"``), or ``None`` if it is none.

    An ordinary photo here is a PNG, JPEG or TIFF of 8 bits or fewer per sample: no raw data
    (a 16-bit single-channel PNG or TIFF may be a bare mosaic, and a TIFF with a CFA or
    LinearRaw image is a raw file). Judged from the header alone.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) == 26:
            depth, colour = head[24], head[25]
            return f"{depth}-bit {_PNG_COLOURS[colour]} PNG" if depth <= 8 else None
        if head.startswith(b"\xff\xd8\xff"):
            from PIL import Image

            # Pillow reads the header only (its size check warns of a large one; no matter).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as image:
                    colours = _JPEG_COLOURS.get(image.mode)
            return None if colours is None else f"8-bit {colours} JPEG"
        if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return _ordinary_tiff(path)
    except Exception:
        # A header no reader understands (a 12-bit JPEG, a PNG of an unknown colour type): not
        # called a photo, so the reader's own message stands.
        return None
    return None


def _ordinary_tiff(path: Path) -> str | None:
    """:func:`_ordinary_photo` of a TIFF: 8 bits or fewer, and no CFA or LinearRaw image."""
    import tifffile

    with _tifffile_quiet(), tifffile.TiffFile(path) as tif:
        first = tif.pages.first
        if any(int(ifd.photometric) in _RAW_PHOTOMETRIC for ifd in _tiff_ifds(tif)):
            return None
        bits, samples = int(first.bitspersample), int(first.samplesperpixel)
        colours = _TIFF_COLOURS.get(int(first.photometric))
        if bits > 8 or colours is None or not 1 <= samples <= 4:
            return None
        if colours == "RGB" and samples == 4:
            colours = "RGBA"
        elif colours == "greyscale" and samples == 2:
            colours = "greyscale+alpha"
        return f"{bits}-bit {colours} TIFF"


def _declared_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape a bare mosaic's header declares, read without reading the pixels.

    ``None`` where the header cannot be read: the reader then says what is wrong.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape = np.lib.format.read_array_header_1_0(fh)[0]
                elif version == (2, 0):
                    shape = np.lib.format.read_array_header_2_0(fh)[0]
                else:
                    return None
            return tuple(int(v) for v in shape)
        if suffix == ".png":
            with open(path, "rb") as fh:
                head = fh.read(24)
            if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return (int(height), int(width))
            return None
        import tifffile

        with _tifffile_quiet(), tifffile.TiffFile(path) as tif:
            return tuple(int(v) for v in tif.pages.first.shape)
    except Exception:
        return None


def _read_bare(path: Path, spec: BareMosaicSpec) -> RawImage:
    suffix = path.suffix.lower()
    shape = _declared_shape(path)
    limit = _pixel_limit(path)
    if shape is not None and math.prod(shape) > limit:
        raise _over_the_limit(path, "mosaic", shape, limit)
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".png":
            import cv2

            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise RawReadError(path, "not a readable PNG image")
        else:
            import tifffile

            arr = tifffile.imread(path)
    except RawReadError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise RawReadError(path, f"cannot read the mosaic ({err})") from None
    except Exception as err:
        raise RawReadError(path, f"cannot read the mosaic ({type(err).__name__}: {err})") from None
    pattern = BayerPattern.parse(spec.pattern)
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        # A packed (h, w, 4) array holds the tile's positions in raster order.
        raster = np.moveaxis(arr, -1, 0)
        canonical = np.empty_like(raster)
        raster_pos = [(0, 0), (0, 1), (1, 0), (1, 1)]
        for plane, offset in enumerate(pattern.offsets):
            canonical[plane] = raster[raster_pos.index(offset)]
        arr = unpack_bayer(canonical, pattern)
    if arr.ndim != 2:
        raise RawReadError(
            path, f"expected a single-channel mosaic (H, W) or packed (h, w, 4), got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.floating):
        raise RawReadError(path, f"mosaic has non-numeric dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise RawReadError(path, "mosaic contains NaN or infinite values")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise RawReadError(path, f"mosaic of {arr.shape[0]}x{arr.shape[1]} is too small")
    try:
        meta = RawMetadata.for_bayer(
            pattern,
            height=arr.shape[0],
            width=arr.shape[1],
            black_level=spec.black_level,
            white_level=spec.white_level,
            source=suffix.lstrip("."),
        )
    except ValueError as err:
        raise RawReadError(path, str(err)) from None
    mosaic = arr.astype(np.float32) if np.issubdtype(arr.dtype, np.floating) else arr.copy()
    return RawImage(mosaic=mosaic, meta=meta, path=path)


def render_with_libraw(
    path: str | Path, *, half_size: bool = False, adjust_maximum: bool = True
) -> np.ndarray:
    """LibRaw's own rendering (camera WB, no auto-brightening, 16-bit), as SID's ground truth.

    Args:
        adjust_maximum: keep LibRaw's ``adjust_maximum_thr`` of 0.75, which SID's ground truth
            has: LibRaw lowers its white point to the frame's own peak where that peak lies
            between 0.75 and 1 times white, so such a frame renders brighter; ``False``
            renders every frame with the file's white level.

    Returns:
        ``(3, H, W)`` float32 in [0, 1], gamma-encoded (LibRaw's BT.709 curve), oriented.
    """
    path = Path(path)
    try:
        with _libraw_stderr_captured(), rawpy.imread(str(path)) as raw:
            _checked_header(raw, path, path.stat().st_size)
            # LibRaw's defaults spelt out: its BT.709 curve and AHD (Markesteijn's 3 passes).
            settings = _libraw_render_settings(LIBRAW_BT709_GAMMA, half_size, adjust_maximum)
            rgb = raw.postprocess(settings)
    except rawpy.LibRawError as err:
        raise RawReadError(path, f"LibRaw could not render it ({type(err).__name__})") from None
    return planar_float(rgb)


#: LibRaw's default tone curve, as rawpy names it: ITU-R BT.709 (power 2.222, toe slope 4.5).
LIBRAW_BT709_GAMMA: tuple[float, float] = (2.222, 4.5)


class Demosaic(Enum):
    """LibRaw's demosaicking in :func:`render_mosaic_with_libraw`.

    Measured on a 2-core AMD EPYC (Zen 4), LibRaw 0.22 (``docs/inference.md``, "Demosaicking"):
    a 24-Mpixel X-Trans frame took 6.2-7.1 s with Markesteijn's 3 passes and 3.8-4.1 s with 1,
    on the X-Trans benchmark's photos 0.00-0.10 dB apart (denoised) and alike at 1:1; a
    12-Mpixel Bayer frame 0.50-0.55 s with AHD, 0.26 s with PPG (0.01-0.49 dB worse).
    """

    #: ``best`` on Bayer mosaics and ``fast`` on X-Trans ones, as darktable chooses for X-Trans:
    #: Markesteijn's 3 passes cost a 24-Mpixel frame 2.5 s more for nothing seen at 1:1.
    AUTO = "auto"
    #: LibRaw's own default: AHD on Bayer mosaics, Markesteijn's 3 passes on X-Trans ones.
    BEST = "best"
    #: LibRaw's quicker ones: PPG on Bayer mosaics, Markesteijn's single pass on X-Trans ones.
    FAST = "fast"

    @classmethod
    def parse(cls, value: Demosaic | str) -> Demosaic:
        return parse_choice(cls, value, "demosaicking")

    def describe(self) -> str:
        """What it runs on each layout, for people."""
        bayer, xtrans = (_LIBRAW_NAMES[self.resolved(x)][x] for x in (False, True))
        return f"{bayer} on Bayer files, {xtrans} on X-Trans ones"

    def resolved(self, xtrans: bool) -> Demosaic:
        """:attr:`BEST` or :attr:`FAST`: what :attr:`AUTO` means for the layout."""
        if self is not Demosaic.AUTO:
            return self
        return Demosaic.FAST if xtrans else Demosaic.BEST


#: LibRaw's quality setting (``user_qual``) for each demosaicking: LibRaw reads 3 (AHD) as
#: Markesteijn's 3 passes on an X-Trans mosaic, and 2 (PPG) as its single pass.
_LIBRAW_QUALITY = {
    Demosaic.BEST: rawpy.DemosaicAlgorithm.AHD,
    Demosaic.FAST: rawpy.DemosaicAlgorithm.PPG,
}

#: What LibRaw runs for each, on (Bayer, X-Trans) mosaics.
_LIBRAW_NAMES = {
    Demosaic.BEST: ("AHD", "Markesteijn 3-pass"),
    Demosaic.FAST: ("PPG", "Markesteijn 1-pass"),
}


def render_mosaic_with_libraw(
    source: str | Path | None,
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    *,
    gamma: tuple[float, float] = LIBRAW_BT709_GAMMA,
    half_size: bool = False,
    adjust_maximum: bool = False,
    planar: bool = True,
    demosaic: Demosaic | str = Demosaic.AUTO,
) -> np.ndarray:
    """LibRaw's rendering of a mosaic that replaces the one in ``source``.

    The settings are :func:`render_with_libraw`'s (camera white balance, no auto-brightening,
    16-bit output, BT.709 gamma by default), so an unchanged mosaic renders exactly as
    ``render_with_libraw(source, adjust_maximum=False)`` does, and a denoised one can be
    compared with it directly. Unlike SID's ground truth it turns off LibRaw's
    ``adjust_maximum_thr`` by default: LibRaw would lower its white point to the mosaic's own
    peak when that peak lies between 0.75 and 1 times white, so the brightness of a picture
    would depend on its brightest pixel (+17 % linear mean for a Kodak DC50 frame capped at
    14000 of 16383 DN; the HERO7 crop of the demo, whose peak is 0.79 of white, 1.3 dB).

    Args:
        source: the raw file the mosaic was read from; LibRaw opens it, the new mosaic replaces
            its visible raw area (margins kept) and LibRaw takes all metadata from the file.
            ``None``, or a bare mosaic file (``.npy``, ``.png``, ``.tif``), renders a temporary
            DNG written from ``meta`` instead.
        mosaic_dn: ``(H, W)`` mosaic in the file's DN, black level included (as
            ``read_raw(source).mosaic``); any real dtype, rounded and clipped to
            ``[0, meta.white_level]`` (an amplified frame may exceed white).
        meta: the mosaic's metadata as :func:`read_raw` gives it. For a file ``source`` only
            its size and white level are used.
        gamma: ``(power, toe slope)`` of the output curve; ``(1, 1)`` gives linear output.
        half_size: LibRaw's half-size rendering (one pixel per 2x2 tile, no demosaicking).
        adjust_maximum: LibRaw's white-point adjustment, as :func:`render_with_libraw` has it.
        planar: return the picture as float planes; ``False`` returns LibRaw's own ``(H', W',
            3)`` uint16 pixels, of which the planes are :func:`planar_float` (half the memory,
            and no conversion for a caller that writes 8 or 16 bits).
        demosaic: LibRaw's demosaicking (:class:`Demosaic`); ``auto`` is AHD on Bayer mosaics
            (LibRaw's default, as :func:`render_with_libraw` renders) and Markesteijn's single
            pass on X-Trans ones.

    Returns:
        ``(3, H', W')`` float32 sRGB in [0, 1], gamma-encoded, oriented as LibRaw orients the
        file (``meta.flip`` for a DNG): ``H', W'`` are ``H, W`` or ``W, H``, halved with
        ``half_size``; or, with ``planar=False``, the same picture as ``(H', W', 3)`` uint16.

    Raises:
        ValueError: ``mosaic_dn`` is not ``(meta.height, meta.width)``, nor the visible raw
            area of ``source``, or holds NaN or infinite values.
        RawReadError: ``source`` is missing, LibRaw cannot open it, or it holds no flat mosaic.
        DarkrawError: LibRaw cannot render the temporary DNG (e.g. smaller than 22x22 pixels).
    """
    mosaic = np.asarray(mosaic_dn)
    if mosaic.shape != (meta.height, meta.width):
        raise ValueError(
            f"mosaic shape {mosaic.shape} differs from its metadata's {(meta.height, meta.width)}"
        )
    if not (np.issubdtype(mosaic.dtype, np.integer) or np.issubdtype(mosaic.dtype, np.floating)):
        raise ValueError(f"expected a real-valued mosaic, got dtype {mosaic.dtype}")
    dn = _mosaic_as_libraw_dn(mosaic, meta.white_level)
    chosen = Demosaic.parse(demosaic).resolved(meta.is_xtrans)
    settings = _libraw_render_settings(gamma, half_size, adjust_maximum, chosen)
    if source is None or is_bare_mosaic(source):
        rgb = _render_mosaic_via_dng(dn, meta, settings)
    else:
        rgb = _render_mosaic_in_place(Path(source), dn, settings)
    return planar_float(rgb) if planar else rgb


def _mosaic_as_libraw_dn(mosaic: np.ndarray, white_level: float) -> np.ndarray:
    """``(H, W)`` uint16 DN in [0, white], as LibRaw holds a mosaic.

    Clipped, not wrapped: a casting of 70000 to uint16 would turn a saturated pixel dark.

    Raises:
        ValueError: NaN or infinite values.
    """
    top = min(int(np.floor(white_level)), 65535)
    out = np.empty(mosaic.shape, dtype=np.uint16)
    floating = np.issubdtype(mosaic.dtype, np.floating)

    def band(rows: slice) -> bool:
        values = mosaic[rows]
        if floating:
            if not np.isfinite(values).all():
                return False
            values = np.rint(values)
        out[rows] = np.clip(values, 0, top)
        return True

    # Row bands over the cores: a 12-Mpixel float mosaic is a few passes of 50 MB.
    if not all(thread_map(band, bands(mosaic.shape[0]), size=mosaic.size)):
        raise ValueError("mosaic contains NaN or infinite values")
    return out


def _libraw_render_settings(
    gamma: tuple[float, float],
    half_size: bool,
    adjust_maximum: bool,
    demosaic: Demosaic = Demosaic.BEST,
) -> rawpy.Params:
    """rawpy's ``postprocess`` settings of :func:`render_with_libraw`, with a chosen gamma and
    demosaicking (:attr:`Demosaic.BEST` is LibRaw's default; :attr:`Demosaic.AUTO` resolved
    by the caller, who knows the layout)."""
    power, slope = (float(v) for v in gamma)
    if not (np.isfinite(power) and np.isfinite(slope) and power > 0 and slope >= 0):
        raise ValueError(f"gamma must be (power > 0, slope >= 0), got {gamma}")
    return rawpy.Params(
        use_camera_wb=True,
        no_auto_bright=True,
        output_bps=16,
        half_size=half_size,
        gamma=(power, slope),
        adjust_maximum_thr=0.75 if adjust_maximum else 0.0,
        demosaic_algorithm=_LIBRAW_QUALITY[demosaic],
    )


def _render_mosaic_in_place(path: Path, dn: np.ndarray, settings: rawpy.Params) -> np.ndarray:
    """LibRaw's ``(H, W, 3)`` uint16 rendering of ``dn`` put in place of ``path``'s mosaic."""
    if not path.is_file():
        problem = "is a directory, not a raw file" if path.is_dir() else "no such file"
        raise RawReadError(path, problem)
    try:
        with _libraw_stderr_captured(), _opened(path) as raw:
            if raw.raw_type != rawpy.RawType.Flat:
                # LibRaw decoded it to colour planes (sRAW, linear DNG, Foveon): no mosaic to
                # replace; read_raw refuses such files too.
                raise RawReadError(
                    path, "holds no single-plane mosaic to replace; render with source=None"
                )
            # raw_image_visible is a writable view of LibRaw's own buffer without its margins,
            # the very area read_raw copies out; postprocess starts from that buffer, and LibRaw
            # subtracts the file's black level (kept in dn) and reads the masked margins itself.
            visible = raw.raw_image_visible
            if visible.shape != dn.shape:
                raise ValueError(
                    f"mosaic shape {dn.shape} differs from the visible raw area "
                    f"{visible.shape} of {path}"
                )
            visible[...] = dn
            rgb = raw.postprocess(settings)
    except rawpy.LibRawFileUnsupportedError:
        problem = "not a raw photo LibRaw can read; render the mosaic with source=None"
        raise RawReadError(path, problem) from None
    except rawpy.LibRawError as err:
        raise RawReadError(path, f"LibRaw could not render it ({type(err).__name__})") from None
    return rgb


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[rawpy.RawPy]:
    """``path`` in LibRaw, decoded: the handle :func:`read_raw` kept for it, or the file read
    again (its header checked); closed on leaving."""
    kept = _DECODED.take(path)
    with kept if kept is not None else rawpy.imread(str(path)) as raw:
        if kept is None:
            _checked_header(raw, path, path.stat().st_size)
        yield raw


def planar_float(rgb: np.ndarray) -> np.ndarray:
    """LibRaw's ``(H, W, 3)`` 16-bit rendering as ``(3, H, W)`` float32 in [0, 1]: each value
    divided by 65535 in float32 (:func:`darkraw.raw.fileio.quantized_hwc` writes the same bits
    from either form).

    Row bands over the CPU's cores: the strided reads of a 12-Mpixel picture took 0.4 s on one
    core. Each value is the float32 quotient of the plain ``astype / 65535`` (the same values).
    """
    h, w, _ = rgb.shape
    out = np.empty((3, h, w), dtype=np.float32)
    scale = np.float32(65535.0)

    def band(rows: slice) -> None:
        for c in range(3):
            np.divide(rgb[rows, :, c], scale, out=out[c, rows], dtype=np.float32)

    thread_map(band, bands(h), size=rgb.size)
    return out


def pixels_float(rgb: np.ndarray) -> np.ndarray:
    """LibRaw's ``(H, W, 3)`` 16-bit rendering as ``(H, W, 3)`` float32 in [0, 1]: the values
    of :func:`planar_float` in pixel order, made in one pass (row bands over the CPU's cores)
    instead of planes and a transposed copy of them."""
    out = np.empty(rgb.shape, dtype=np.float32)
    scale = np.float32(65535.0)

    def band(rows: slice) -> None:
        np.divide(rgb[rows], scale, out=out[rows], dtype=np.float32)

    thread_map(band, bands(rgb.shape[0]), size=rgb.size)
    return out


def _render_mosaic_via_dng(dn: np.ndarray, meta: RawMetadata, settings: rawpy.Params) -> np.ndarray:
    """LibRaw's ``(H, W, 3)`` uint16 rendering of ``dn`` through a temporary DNG."""
    import tempfile

    # Imported here, like tifffile elsewhere in this module, so reading a raw file does not pay
    # for the DNG writer; dng does not import rawio, so there is no cycle either way.
    from darkraw.raw.dng import write_dng

    if min(dn.shape) < LIBRAW_MIN_SIDE:
        raise DarkrawError(
            None,
            f"LibRaw renders mosaics of {LIBRAW_MIN_SIDE}x{LIBRAW_MIN_SIDE} pixels and larger, "
            f"got {dn.shape[0]}x{dn.shape[1]}",
        )
    with tempfile.TemporaryDirectory(prefix="darkraw-render-") as folder:
        path = write_dng(Path(folder) / "mosaic.dng", dn, meta)
        try:
            with _libraw_stderr_captured(), rawpy.imread(str(path)) as raw:
                rgb = raw.postprocess(settings)
        except rawpy.LibRawError as err:
            problem = f"LibRaw could not render the mosaic as a DNG ({type(err).__name__})"
            raise DarkrawError(None, problem) from None
    return rgb
