"""A raw file's capture metadata (EXIF, GPS, XMP, DNG colour tags), read so outputs can carry it.

Most raw formats (DNG, NEF, ARW, CR2, KDC, ...) are TIFF-based (TIFF 6.0, TIFF/EP, Adobe DNG
1.4): their IFD0 holds the camera's make and model and, in DNGs, the colour tags; the EXIF IFD
(JEITA CP-3451 "Exif 2.3") the capture facts; the GPS IFD the position; tag 700 the XMP packet.
tifffile reads all of them, so no metadata library is needed. Values are kept as the file's
bytes (turned little-endian), so a tag darkraw knows nothing about is copied exactly.

Also here: the small TIFF writing the outputs need and tifffile lacks: an EXIF block for PNG and
JPEG files, and EXIF and GPS IFDs put into a TIFF or DNG that tifffile wrote.
"""

from __future__ import annotations

import importlib.resources
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from darkraw.raw.metadata import RawMetadata

# TIFF field types: numpy element type (little-endian) and how many elements one value takes.
_TYPES: dict[int, tuple[str, int]] = {
    1: ("u1", 1),  # BYTE
    2: ("u1", 1),  # ASCII
    3: ("u2", 1),  # SHORT
    4: ("u4", 1),  # LONG
    5: ("u4", 2),  # RATIONAL
    6: ("i1", 1),  # SBYTE
    7: ("u1", 1),  # UNDEFINED
    8: ("i2", 1),  # SSHORT
    9: ("i4", 1),  # SLONG
    10: ("i4", 2),  # SRATIONAL
    11: ("f4", 1),  # FLOAT
    12: ("f8", 1),  # DOUBLE
}

ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL = 2, 3, 4, 5, 7, 10

EXIF_IFD = 34665
GPS_IFD = 34853
XMP = 700
ORIENTATION = 274
MAKE, MODEL, SOFTWARE, DATE_TIME = 271, 272, 305, 306
EXPOSURE_TIME, F_NUMBER, ISO_SPEED = 33434, 33437, 34855
DATE_TIME_ORIGINAL = 36867

#: IFD0 tags copied into every output: who made the picture and when.
IMAGE_TAGS = frozenset({MAKE, MODEL, DATE_TIME, 270, 315, 33432})  # + description, artist, (c)

#: IFD0 tags a DNG output takes from a DNG source (Adobe DNG 1.4, chapter 4 and 6): the camera
#: profile, white balance, exposure and crop. Left out, because the denoised data make them
#: untrue: the raw digests, NoiseProfile and BaselineNoise, the linearisation table and black
#: level deltas (the mosaic is linear, its black level is written from the metadata),
#: OpcodeList1 (it works on the stored values before linearisation), DNGPrivateData (offsets
#: into the maker note, which is not copied) and the layout tags darkraw writes itself.
DNG_PROFILE_TAGS = frozenset(
    {
        50708,  # UniqueCameraModel
        50709,  # LocalizedCameraModel
        50718,  # DefaultScale
        50719,  # DefaultCropOrigin
        50720,  # DefaultCropSize
        50721,  # ColorMatrix1
        50722,  # ColorMatrix2
        50723,  # CameraCalibration1
        50724,  # CameraCalibration2
        50727,  # AnalogBalance
        50728,  # AsShotNeutral
        50729,  # AsShotWhiteXY
        50730,  # BaselineExposure
        50732,  # BaselineSharpness
        50733,  # BayerGreenSplit
        50734,  # LinearResponseLimit
        50735,  # CameraSerialNumber
        50736,  # LensInfo
        50738,  # AntiAliasStrength
        50739,  # ShadowScale
        50778,  # CalibrationIlluminant1
        50779,  # CalibrationIlluminant2
        50780,  # BestQualityScale
        50827,  # OriginalRawFileName
        50931,  # CameraCalibrationSignature
        50932,  # ProfileCalibrationSignature
        50934,  # AsShotProfileName
        50936,  # ProfileName
        50937,  # ProfileHueSatMapDims
        50938,  # ProfileHueSatMapData1
        50939,  # ProfileHueSatMapData2
        50940,  # ProfileToneCurve
        50941,  # ProfileEmbedPolicy
        50942,  # ProfileCopyright
        50964,  # ForwardMatrix1
        50965,  # ForwardMatrix2
        50981,  # ProfileLookTableDims
        50982,  # ProfileLookTableData
        51009,  # OpcodeList2
        51022,  # OpcodeList3
        51107,  # ProfileLookTableEncoding
        51108,  # BaselineExposureOffset
        51109,  # DefaultBlackRender
        51125,  # DefaultUserCrop
    }
)

#: DNG tags that describe the raw image IFD (which may be a SubIFD) rather than the file.
_RAW_IFD_TAGS = frozenset({50718, 50719, 50720, 50733, 50738, 50780, 51009, 51022, 51125})

#: EXIF tags a TIFF/EP file (Kodak's KDC, early NEF) keeps in IFD0; outputs put them in the
#: EXIF IFD, where readers look. TIFF/EP's own tags in 37387..37399 have other EXIF numbers.
_EXIF_NUMBERS = frozenset(
    {EXPOSURE_TIME, F_NUMBER, 34850, 34852, ISO_SPEED, 34856, 34864, 34865, 34866, 34867}
    | set(range(36864, 37387))
    | set(range(37500, 37523))
    | set(range(40960, 42241))
)

#: EXIF tags never copied: the maker note (vendor offsets into the source file), the pointer to
#: the interoperability IFD, and the pixel size (an output has its own).
_EXIF_LEFT_OUT = frozenset({37500, 40965, 40962, 40963})

#: Values longer than this are not copied (no capture fact is; a maker's blob may be).
_MAX_VALUE_BYTES = 1 << 20


@dataclass(frozen=True)
class TagEntry:
    """One TIFF field: tag number, TIFF type, value count and the value's little-endian bytes."""

    tag: int
    dtype: int
    count: int
    value: bytes

    def numbers(self) -> list[float]:
        """The value as numbers (a rational as its quotient)."""
        kind, per = _TYPES[self.dtype]
        arr = np.frombuffer(self.value, dtype="<" + kind).astype(float)
        if per == 2:
            num, den = arr[0::2], arr[1::2]
            return [float(n / d) if d else 0.0 for n, d in zip(num, den, strict=True)]
        return [float(v) for v in arr]

    def text(self) -> str:
        """An ASCII value without its NUL."""
        return self.value.split(b"\0", 1)[0].decode("ascii", "replace").strip()

    def tifffile_value(self) -> tuple[int, int, Any]:
        """``(dtype, count, value)`` as tifffile's ``extratags`` take them."""
        if self.dtype == ASCII:
            return self.dtype, 0, self.text()
        if self.dtype in (1, 6, 7):
            return self.dtype, self.count, self.value
        kind, _ = _TYPES[self.dtype]
        return self.dtype, self.count, tuple(np.frombuffer(self.value, "<" + kind).tolist())


@dataclass(frozen=True)
class SourceMetadata:
    """What a raw file says about its capture beyond :class:`RawMetadata`: empty for a file
    that is not TIFF-based or has no such tags.

    Attributes:
        image: IFD0 tags carried to every output (make, model, date and time, artist,
            copyright, description).
        dng: a DNG source's profile tags (colour and forward matrices, illuminants, as-shot
            white balance, baseline exposure, crop, opcode lists 2 and 3).
        exif: the EXIF IFD's tags (and EXIF tags a TIFF/EP file keeps in IFD0).
        gps: the GPS IFD's tags.
        xmp: the XMP packet (tag 700), if any.
    """

    image: tuple[TagEntry, ...] = ()
    dng: tuple[TagEntry, ...] = ()
    exif: tuple[TagEntry, ...] = ()
    gps: tuple[TagEntry, ...] = ()
    xmp: bytes | None = None

    def find(self, tag: int) -> TagEntry | None:
        """The entry of ``tag`` in any of the groups, or ``None``."""
        for entry in (*self.image, *self.dng, *self.exif, *self.gps):
            if entry.tag == tag:
                return entry
        return None

    @property
    def empty(self) -> bool:
        return not (self.image or self.dng or self.exif or self.gps or self.xmp)


def read_source_metadata(path: str | Path) -> SourceMetadata:
    """Read the capture metadata of a TIFF-based raw file.

    Never raises: a file that is not a TIFF (RAF, CR3, a bare ``.npy``) or whose tags cannot be
    read gives what could be read, or an empty :class:`SourceMetadata`; metadata is a courtesy,
    the pixels are what matters.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return _read(tif)
    except Exception:
        return SourceMetadata()


def _read(tif: Any) -> SourceMetadata:
    fh, order = tif.filehandle, tif.byteorder
    first = tif.pages.first
    raw_ifd = _raw_ifd(tif)
    image: list[TagEntry] = []
    dng: list[TagEntry] = []
    exif: dict[int, TagEntry] = {}
    for tag in first.tags.values():
        if tag.code in IMAGE_TAGS:
            _append(image, tag, fh, order)
        elif tag.code in DNG_PROFILE_TAGS and tag.code not in _RAW_IFD_TAGS:
            _append(dng, tag, fh, order)
        elif tag.code in _EXIF_NUMBERS and tag.code not in _EXIF_LEFT_OUT:
            found = _entry(tag, fh, order)
            if found is not None:
                exif[tag.code] = found
    if raw_ifd is not None:
        for tag in raw_ifd.tags.values():
            if tag.code in _RAW_IFD_TAGS:
                _append(dng, tag, fh, order)
    exif.update({e.tag: e for e in _sub_ifd(first, EXIF_IFD, fh, order, _EXIF_LEFT_OUT)})
    gps = _sub_ifd(first, GPS_IFD, fh, order, frozenset())
    xmp_tag = first.tags.get(XMP)
    xmp = None
    if xmp_tag is not None and isinstance(xmp_tag.value, bytes | str):
        xmp = xmp_tag.value.encode() if isinstance(xmp_tag.value, str) else xmp_tag.value
    return SourceMetadata(
        image=tuple(image),
        dng=tuple(dng),
        exif=tuple(sorted(exif.values(), key=lambda e: e.tag)),
        gps=tuple(gps),
        xmp=xmp or None,
    )


def _raw_ifd(tif: Any) -> Any:
    """The IFD of the CFA image (IFD0 or a SubIFD), or ``None``."""
    for page in [tif.pages.first, *(tif.pages.first.pages or ())]:
        if int(page.photometric) == 32803:
            return page
    return None


def _sub_ifd(
    page: Any, pointer: int, fh: Any, order: str, left_out: frozenset[int]
) -> list[TagEntry]:
    """The entries of the sub-IFD ``page``'s tag ``pointer`` points at (EXIF or GPS)."""
    tag = page.tags.get(pointer)
    if tag is None:
        return []
    # tifffile parses the sub-IFD into a dictionary of decoded values (and points valueoffset
    # at it); read the pointer from the entry, and the entries again, as stored.
    fh.seek(tag.offset + 8)
    (offset,) = struct.unpack(order + "I", fh.read(4))
    return _ifd_entries(fh, order, int(offset), left_out)


def _ifd_entries(fh: Any, order: str, offset: int, left_out: frozenset[int]) -> list[TagEntry]:
    """Read the classic-TIFF IFD at ``offset`` entry by entry, values as little-endian bytes."""
    size = fh.size
    if not 8 <= offset < size - 2:
        return []
    fh.seek(offset)
    (count,) = struct.unpack(order + "H", fh.read(2))
    if count > 1000 or offset + 2 + 12 * count > size:
        return []
    table = fh.read(12 * count)
    entries: list[TagEntry] = []
    for i in range(count):
        tag, dtype, n = struct.unpack(order + "HHI", table[12 * i : 12 * i + 8])
        if tag in left_out or dtype not in _TYPES:
            continue
        kind, per = _TYPES[dtype]
        nbytes = n * per * np.dtype(kind).itemsize
        if nbytes > _MAX_VALUE_BYTES:
            continue
        inline = table[12 * i + 8 : 12 * i + 12]
        if nbytes <= 4:
            data = inline[:nbytes]
        else:
            (at,) = struct.unpack(order + "I", inline)
            if at + nbytes > size:
                continue
            fh.seek(at)
            data = fh.read(nbytes)
        entries.append(TagEntry(tag, dtype, n, _little_endian(data, dtype, order)))
    return entries


def _entry(tag: Any, fh: Any, order: str) -> TagEntry | None:
    """A tifffile tag as a :class:`TagEntry`, its value read from the file as stored."""
    dtype = int(tag.dtype)
    if dtype not in _TYPES:
        return None
    kind, per = _TYPES[dtype]
    nbytes = int(tag.count) * per * np.dtype(kind).itemsize
    if nbytes > _MAX_VALUE_BYTES:
        return None
    fh.seek(tag.valueoffset)
    data = fh.read(nbytes)
    if len(data) != nbytes:
        return None
    return TagEntry(int(tag.code), dtype, int(tag.count), _little_endian(data, dtype, order))


def _append(entries: list[TagEntry], tag: Any, fh: Any, order: str) -> None:
    found = _entry(tag, fh, order)
    if found is not None:
        entries.append(found)


def _little_endian(data: bytes, dtype: int, order: str) -> bytes:
    kind, _ = _TYPES[dtype]
    if order == "<" or np.dtype(kind).itemsize == 1:
        return bytes(data)
    return np.frombuffer(data, dtype=">" + kind).astype("<" + kind).tobytes()


# --- making entries ----------------------------------------------------------------------------


def ascii_entry(tag: int, text: str) -> TagEntry:
    """An ASCII entry (7-bit, NUL-terminated)."""
    data = text.encode("ascii", "replace").replace(b"\0", b"") + b"\0"
    return TagEntry(tag, ASCII, len(data), data)


def short_entry(tag: int, *values: int) -> TagEntry:
    return TagEntry(tag, SHORT, len(values), struct.pack(f"<{len(values)}H", *values))


def rational_entry(tag: int, value: float) -> TagEntry:
    frac = Fraction(float(value)).limit_denominator(1_000_000)
    return TagEntry(tag, RATIONAL, 1, struct.pack("<II", frac.numerator, frac.denominator))


def capture_exif(source: SourceMetadata, meta: RawMetadata | None) -> tuple[TagEntry, ...]:
    """The source's EXIF entries, with exposure time and ISO from ``meta`` (LibRaw's reading)
    where the source has none: a raw format that is not TIFF-based still gives them."""
    entries = {e.tag: e for e in source.exif}
    if meta is not None:
        if EXPOSURE_TIME not in entries and meta.exposure_time is not None:
            entries[EXPOSURE_TIME] = rational_entry(EXPOSURE_TIME, meta.exposure_time)
        if ISO_SPEED not in entries and meta.iso is not None:
            entries[ISO_SPEED] = short_entry(ISO_SPEED, int(min(round(meta.iso), 65535)))
    return tuple(sorted(entries.values(), key=lambda e: e.tag))


def image_entries(source: SourceMetadata, meta: RawMetadata | None) -> tuple[TagEntry, ...]:
    """IFD0 entries of an output picture: the source's make, model, date and the like (from
    ``meta`` where the source has none), ``Software`` darkraw, and orientation 1: an output's
    pixels are already turned as the camera recorded."""
    entries = {e.tag: e for e in source.image}
    if meta is not None:
        for tag, text in ((MAKE, meta.make), (MODEL, meta.model)):
            if tag not in entries and text:
                entries[tag] = ascii_entry(tag, text)
    entries[SOFTWARE] = ascii_entry(SOFTWARE, "darkraw")
    entries[ORIENTATION] = short_entry(ORIENTATION, 1)
    return tuple(sorted(entries.values(), key=lambda e: e.tag))


# --- writing -----------------------------------------------------------------------------------


def ifd_block(entries: Sequence[TagEntry], at: int) -> bytes:
    """A little-endian IFD of ``entries`` (sorted by tag), placed at offset ``at`` of its file,
    followed by the values that do not fit in an entry; no next IFD. Word-aligned throughout."""
    ordered = sorted(entries, key=lambda e: e.tag)
    table = bytearray(struct.pack("<H", len(ordered)))
    data = bytearray()
    data_at = at + 2 + 12 * len(ordered) + 4
    for entry in ordered:
        if len(entry.value) <= 4:
            inline = entry.value.ljust(4, b"\0")
            table += struct.pack("<HHI", entry.tag, entry.dtype, entry.count) + inline
        else:
            table += struct.pack("<HHII", entry.tag, entry.dtype, entry.count, data_at + len(data))
            data += entry.value + bytes(len(entry.value) % 2)
    table += struct.pack("<I", 0)
    return bytes(table + data)


def exif_block(
    image: Sequence[TagEntry], exif: Sequence[TagEntry], gps: Sequence[TagEntry]
) -> bytes:
    """A little-endian TIFF structure of IFD0 ``image`` pointing to an EXIF and a GPS IFD (when
    not empty): the EXIF segment of a JPEG (after ``Exif\\0\\0``) or PNG ``eXIf`` chunk."""
    pointers = [e for e, sub in ((EXIF_IFD, exif), (GPS_IFD, gps)) if sub]
    ifd0_entries = list(image) + [TagEntry(p, LONG, 1, bytes(4)) for p in pointers]
    ifd0 = ifd_block(ifd0_entries, 8)
    out = bytearray(b"II*\0" + struct.pack("<I", 8) + ifd0)
    places: dict[int, int] = {}
    for pointer, sub in ((EXIF_IFD, exif), (GPS_IFD, gps)):
        if sub:
            places[pointer] = len(out)
            out += ifd_block(sub, len(out))
    final = [
        TagEntry(e.tag, e.dtype, e.count, struct.pack("<I", places[e.tag]))
        if e.tag in places
        else e
        for e in ifd0_entries
    ]
    out[8 : 8 + len(ifd0)] = ifd_block(final, 8)
    return bytes(out)


def insert_sub_ifds(path: Path, subs: Iterable[tuple[int, int, Sequence[TagEntry]]]) -> None:
    """Write sub-IFDs into a little-endian TIFF that tifffile wrote and point IFD0 at them.

    tifffile refuses to write the EXIF and GPS pointer tags; the caller writes a placeholder
    LONG tag numbered one below each (so it sorts into the same place), and here each
    ``(placeholder, pointer, entries)`` becomes that pointer. A file of one strip that ends the
    file (a DNG) gets the IFDs just before its pixel data, so a file cut short anywhere loses
    pixels, which readers report; in other files (compressed strips) they are appended.

    Raises:
        ValueError: the file is not such a TIFF, or lacks a placeholder.
    """
    import tifffile

    subs = [s for s in subs if s[2]]
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        if tif.byteorder != "<" or tif.is_bigtiff:
            raise ValueError("expected a little-endian classic TIFF")
        strips = page.tags["StripOffsets"]
        pointer_at = {p: page.tags[p].valueoffset for p, _, _ in subs}
        single = len(page.dataoffsets) == 1 and strips.dtype == 4
        strip_at, strip_len = page.dataoffsets[0], page.databytecounts[0]
        size = tif.filehandle.size
    before = single and strip_at + strip_len == size
    start = strip_at if before else size
    block = bytearray(bytes(start % 2))
    places: list[tuple[int, int, int]] = []
    for placeholder, pointer, entries in subs:
        ifd_at = start + len(block)
        places.append((placeholder, pointer, ifd_at))
        block += ifd_block(entries, ifd_at)
    with open(path, "r+b") as fh:
        if before:
            block += bytes(-(strip_at + len(block)) % 16)
            fh.seek(strip_at)
            pixels = fh.read(strip_len)
            fh.seek(strip_at)
            fh.write(bytes(block) + pixels)
            fh.seek(strips.valueoffset)
            fh.write(struct.pack("<I", strip_at + len(block)))
        else:
            fh.seek(size)
            fh.write(bytes(block))
        for placeholder, pointer, ifd_at in places:
            fh.seek(pointer_at[placeholder] - 8)
            fh.write(struct.pack("<HHII", pointer, LONG, 1, ifd_at))


@lru_cache(maxsize=1)
def srgb_icc_profile() -> bytes:
    """The sRGB ICC profile embedded in every picture darkraw writes: LittleCMS's built-in
    sRGB as Pillow makes it, bundled (``darkraw/data/SRGB.md``) so that a command neither
    imports Pillow's colour management nor makes it (0.02 s), and so that the same input gives
    the same bytes out (a profile made at run time carries the second it was made)."""
    return (importlib.resources.files("darkraw") / "data" / "srgb.icc").read_bytes()


@dataclass(frozen=True)
class OutputTags:
    """The metadata an output picture carries: IFD0, EXIF and GPS entries and the ICC profile."""

    image: tuple[TagEntry, ...] = ()
    exif: tuple[TagEntry, ...] = ()
    gps: tuple[TagEntry, ...] = ()
    icc: bytes = field(default_factory=srgb_icc_profile)


def output_tags(source: SourceMetadata | None, meta: RawMetadata | None) -> OutputTags:
    """What a PNG, JPEG or TIFF made from a raw file carries (orientation reset to 1)."""
    source = source or SourceMetadata()
    return OutputTags(
        image=image_entries(source, meta), exif=capture_exif(source, meta), gps=source.gps
    )
