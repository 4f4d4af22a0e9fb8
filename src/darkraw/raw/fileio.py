"""Writing output files whole or not at all, the image formats darkraw writes, and the checks of a
batch's inputs and outputs made before anything is computed."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darkraw.errors import OutputError
from darkraw.parallel import bands, cpu_threads, thread_map
from darkraw.raw.exif import (
    EXIF_IFD,
    GPS_IFD,
    SOFTWARE,
    OutputTags,
    exif_block,
    insert_sub_ifds,
)
from darkraw.raw.png import DEFAULT_LEVEL, write_png

#: Output extensions and their bit depth.
IMAGE_FORMATS = {".png": 8, ".jpg": 8, ".jpeg": 8, ".tif": 16, ".tiff": 16}

#: Extensions of image and array formats darkraw does not write (raw formats aside): an output
#: named so is a mistake, never a folder to create.
_OTHER_IMAGE_EXTENSIONS_TEXT = (
    ".heic .heif .webp .avif .jxl .gif .bmp .exr .hdr .jp2 .j2k .pbm .pgm .ppm .pnm .tga .ico "
    ".psd .svg .npy"
)
OTHER_IMAGE_EXTENSIONS = frozenset(_OTHER_IMAGE_EXTENSIONS_TEXT.split())


#: The extension of DNG outputs, and what a DNG darkraw names gets before it
#: (``IMG_1234-darkraw.dng``): a folder scan leaves such files out.
DNG_EXTENSION = ".dng"
DNG_OUTPUT_SUFFIX = "-darkraw"


def image_formats_text() -> str:
    """The extensions darkraw writes, for messages: ``.png, .jpg, .jpeg, .tif, .tiff or .dng``."""
    names = list(IMAGE_FORMATS)
    return f"{', '.join(names)} or {DNG_EXTENSION}"


def is_darkraw_dng(path: str | Path) -> bool:
    """Whether ``path`` is named as darkraw names the DNGs it writes in a folder."""
    name = Path(path).name.lower()
    return name.endswith(DNG_OUTPUT_SUFFIX + DNG_EXTENSION)


#: When this process started, near enough (when it first needed this module): a temporary file
#: whose name has no process id (written before names carried one) and older than this belongs
#: to no writer.
_STARTED = time.time()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A reader never sees a half-written file, and a failure (or Ctrl-C, or SIGTERM at the command
    line) leaves no output behind. The temporary name, ``.STEM.PID.XXXXXXXX.partSUFFIX``, keeps
    the real suffix, so writers that look at it pick the right format, and the writer's process
    id, so that a later write of ``path`` can delete what a killed writer left
    (:func:`remove_stale_parts`).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        is_dir = parent.is_dir()
    except OSError as err:  # a name too long for the file system, a loop of links
        raise OutputError(path, f"cannot write here ({err.strerror or err})") from None
    if not is_dir:
        raise OutputError(path, f"output folder {parent} does not exist")
    remove_stale_parts(path)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.stem}.{os.getpid()}.", suffix=f".part{path.suffix}", dir=parent
        )
    except OSError as err:
        raise OutputError(path, f"cannot write here ({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def part_pattern(path: str | Path) -> re.Pattern[str]:
    """The names of :func:`atomic_output`'s temporary files for ``path``; group ``pid`` is the
    writer's process id (absent in names written before it was put there)."""
    path = Path(path)
    # mkstemp's random part: 8 of [a-z0-9_], never a dot, so no other output's names match
    # (but an unnamed one of an output called STEM.DIGITS.SUFFIX, as stale as this one's).
    return re.compile(
        rf"\.{re.escape(path.stem)}\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{{8}}"
        rf"\.part{re.escape(path.suffix)}"
    )


def remove_stale_parts(path: str | Path) -> list[Path]:
    """Delete the temporary files of writes of ``path`` that no running process owns: those
    whose writer's process is gone (killed by SIGKILL, a crash, a power cut), and unnamed ones
    older than this process. A live writer's file is left alone, whoever runs it.

    Returns:
        The files deleted (none where the folder cannot be read).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    pattern = part_pattern(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            pid = found.group("pid")
            if pid is not None:
                stale = not _process_alive(int(pid))
            else:
                stale = entry.stat(follow_symlinks=False).st_mtime < _STARTED
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to delete: the write goes on regardless
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process counts)."""
    if pid == os.getpid() or os.name != "posix":
        # On Windows os.kill ends the process it asks about: assume every writer lives.
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    except (OverflowError, OSError):
        return False  # a number no process can have
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_hwc(image: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` to ``(H, W, 3)``, contiguous."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {image.shape}")
    return np.ascontiguousarray(np.moveaxis(image, 0, -1))


def quantize(image: np.ndarray, bits: int) -> np.ndarray:
    """Float image in [0, 1] to unsigned integers of ``bits`` (8 or 16), rounded and clipped."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    top = (1 << bits) - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    # In place in one float32 buffer: a 12-megapixel picture is 36 M values.
    scaled = np.multiply(np.asarray(image, dtype=np.float32), np.float32(top))
    np.clip(scaled, 0, top, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(dtype)


#: Float32 bytes of the image that :func:`quantized_hwc` hands one thread at a time: its
#: temporary stays in the CPU's cache between the multiply, clip, rint and the transposing copy.
_QUANTIZE_BAND_BYTES = 1 << 21


def quantized_hwc(image: np.ndarray, bits: int) -> np.ndarray:
    """``to_hwc(quantize(image, bits))``, bit for bit, in row bands spread over the CPU's cores.

    Each band goes through :func:`quantize`, then is copied, transposed, into its rows of one
    ``(H, W, 3)`` output: the whole-image float32 temporary and the separate transpose pass
    are gone. On a 12-megapixel 8-bit image
    (AMD EPYC, 2 cores) it took 0.05 s against 0.10-0.26 s for the two calls (the range is
    the 144 MB temporary's page faults).
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {image.shape}")
    _, height, width = image.shape
    out = np.empty((height, width, 3), dtype=np.uint8 if bits == 8 else np.uint16)

    def quantize_band(rows: slice) -> None:
        out[rows] = quantize(image[:, rows], bits).transpose(1, 2, 0)

    parts = -(-image.size * 4 // _QUANTIZE_BAND_BYTES)
    thread_map(quantize_band, bands(height, parts), size=image.size)
    return out


def quantized_rgb16(rgb: np.ndarray, bits: int) -> np.ndarray:
    """:func:`quantized_hwc` of the float planes of LibRaw's ``(H, W, 3)`` uint16 pixels
    (:func:`darkraw.raw.rawio.planar_float`), bit for bit, without making those planes.

    Each row band is divided by 65535 in float32, as the planes would be, then quantised: a
    12-megapixel picture's 144 MB of float planes, and the passes that fill and read them, are
    not needed to write it.
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint16:
        raise ValueError(f"expected uint16 pixels of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    out = np.empty(rgb.shape, dtype=np.uint8 if bits == 8 else np.uint16)
    scale = np.float32(65535.0)

    def quantize_band(rows: slice) -> None:
        out[rows] = quantize(np.divide(rgb[rows], scale, dtype=np.float32), bits)

    parts = -(-rgb.size * 4 // _QUANTIZE_BAND_BYTES)
    thread_map(quantize_band, bands(rgb.shape[0], parts), size=rgb.size)
    return out


#: zlib level of PNG outputs (0-9). PIL's default 6 took 3.8 s for a 12-megapixel result, as
#: long as the network; on a denoised 12-megapixel result level 1 took 0.88 s against level 3's
#: 1.35 s, for 8.6 % more bytes (11.2 against 10.3 MB; level 0: 0.48 s, 36 MB), in Pillow on
#: one core. Written by :func:`darkraw.raw.png.write_png` (Up filter, deflate over every core;
#: AMD EPYC, 2 cores), another denoised 12-megapixel result took 0.20-0.22 s at level 1 against
#: Pillow's 0.75 s, for 0.75 % more bytes (9.46 against 9.39 MB); level 2 0.24 s and 8.97 MB,
#: level 3 0.43 s and 8.53 MB, level 6 1.4 s and 7.23 MB, level 0 0.09 s and 36 MB. Through
#: zlib-ng (:data:`darkraw.raw.png.DEFLATE`) a third result took 0.12 s and 8.99 MB at its level
#: 2 against zlib's 0.18 s and 9.65 MB at level 1 (zlib-ng's level 1 is faster still, 0.11 s on
#: one core against 0.21 s for level 2, but 56 % larger; its level 3 took 0.16 s and 8.09 MB).
#: Since the fifteenth session the chunks are Huffman-coded without string matching
#: (:data:`darkraw.raw.png.DEFAULT_STRATEGY`): that result in 0.074 against 0.132 s, 7.64
#: against 9.49 MB (medians of 7, in-process, both cores).
PNG_COMPRESS_LEVEL = DEFAULT_LEVEL


#: JPEG quality (1-95 useful; 100 turns some of libjpeg's compression off) when none is given.
DEFAULT_JPEG_QUALITY = 95

#: From this JPEG quality up the colour is kept at full resolution (4:4:4), as Photoshop and
#: Lightroom export at high qualities; below it at half each way (4:2:0, libjpeg's default). On
#: 1000x1500 crops of darkraw's results at quality 95, 4:4:4 gave 44.1 against 41.8 dB and a mean
#: CIEDE2000 of 0.97 against 1.23 (the HERO7), 45.4 against 42.4 dB and 0.90 against 1.12 (the
#: demo), for files a third larger.
JPEG_FULL_CHROMA_QUALITY = 90

#: The most bytes of EXIF a JPEG holds (one APP1 segment); a larger block is left out.
_MAX_JPEG_EXIF = 65_000


def write_image(
    path: str | Path,
    image: np.ndarray,
    tags: OutputTags | None = None,
    *,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> Path:
    """Write a ``(3, H, W)`` float image in [0, 1], already gamma-encoded, atomically; or the
    same picture as LibRaw's ``(H, W, 3)`` uint16 pixels (the planes are
    :func:`darkraw.raw.rawio.planar_float` of them; the file is the same, bit for bit).

    ``.png`` and ``.jpg`` are written with 8 bits per channel, ``.tif``/``.tiff`` with 16. Every
    file embeds an sRGB ICC profile and, given ``tags`` (:func:`darkraw.raw.exif.output_tags`),
    the source's EXIF: make, model, date, exposure, lens, GPS, with orientation 1.

    Args:
        jpeg_quality: 1 to 100, for JPEG files.

    Raises:
        ValueError: a JPEG quality outside 1..100.
        OutputError: unknown extension, or the file cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise OutputError(
            path, f"unknown image format {suffix!r}; use one of {', '.join(IMAGE_FORMATS)}"
        )
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"JPEG quality must be 1 to 100, got {jpeg_quality}")
    if image.dtype == np.uint16:
        hwc = quantized_rgb16(image, IMAGE_FORMATS[suffix])
    elif image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {image.shape}")
    else:
        hwc = quantized_hwc(image, IMAGE_FORMATS[suffix])
    tags = tags or OutputTags()
    try:
        with atomic_output(path) as tmp:
            if suffix in (".tif", ".tiff"):
                _write_tiff(tmp, hwc, tags)
            elif suffix == ".png":
                # Pillow's encoder left a core idle for 0.7 s of a 12-megapixel result.
                exif_tiff = exif_block(tags.image, tags.exif, tags.gps)
                write_png(tmp, hwc, icc=tags.icc, exif=exif_tiff, level=PNG_COMPRESS_LEVEL)
            else:
                from PIL import Image

                pil = Image.fromarray(hwc, mode="RGB")
                exif = b"Exif\0\0" + exif_block(tags.image, tags.exif, tags.gps)
                if len(exif) > _MAX_JPEG_EXIF:
                    exif = b"Exif\0\0" + exif_block(tags.image, tags.exif, ())
                pil.save(
                    tmp,
                    format="JPEG",
                    quality=jpeg_quality,
                    # Pillow's 0 is 4:4:4, 2 is 4:2:0.
                    subsampling=0 if jpeg_quality >= JPEG_FULL_CHROMA_QUALITY else 2,
                    icc_profile=tags.icc,
                    exif=exif if len(exif) <= _MAX_JPEG_EXIF else b"",
                )
    except OSError as err:
        raise OutputError(path, f"cannot write image ({err.strerror or err})") from None
    return path


#: zlib level of TIFF outputs' strips, and rows a strip: the strips are deflated on every core
#: after the horizontal predictor (TIFF's predictor 2, each sample less the one to its left),
#: which every reader of deflated TIFFs decodes. A 12-megapixel 16-bit rendering of the
#: benchmark frame took 0.66 s and 47.0 MB (rows 128, 2 threads) against 3.09 s and 50.2 MB at
#: zlib's default level in one strip without the predictor; the HERO7's 0.88 s and 61.9 MB
#: against 1.84 s and 67.3 MB. Level 2 was 0.04-0.08 s slower for 0-0.3 MB less, level 6
#: 2.8 s and 46.0 MB.
TIFF_ZLIB_LEVEL = 1
TIFF_ROWS_PER_STRIP = 128


def _write_tiff(path: Path, hwc: np.ndarray, tags: OutputTags) -> None:
    """A 16-bit RGB TIFF with the ICC profile (tag 34675), IFD0's tags and the EXIF and GPS IFDs:
    deflated strips after the horizontal predictor (:data:`TIFF_ZLIB_LEVEL`)."""
    import tifffile

    extratags: list[tuple[int, int | str, int, object, bool]] = [
        (e.tag, *e.tifffile_value(), True) for e in tags.image if e.tag != SOFTWARE
    ]
    subs = [(EXIF_IFD - 1, EXIF_IFD, tags.exif), (GPS_IFD - 1, GPS_IFD, tags.gps)]
    for placeholder, _, entries in subs:
        if entries:
            # tifffile refuses the EXIF and GPS pointer tags; see insert_sub_ifds.
            extratags.append((placeholder, "I", 1, 0, True))
    tifffile.imwrite(
        path,
        hwc,
        photometric="rgb",
        compression="zlib",
        compressionargs={"level": TIFF_ZLIB_LEVEL},
        predictor=True,
        rowsperstrip=TIFF_ROWS_PER_STRIP,
        maxworkers=cpu_threads(),
        iccprofile=tags.icc,
        software="darkraw",
        metadata=None,
        extratags=sorted(extratags, key=lambda t: t[0]),
    )
    insert_sub_ifds(path, subs)


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8- or 16-bit RGB image as a ``(3, H, W)`` float32 array in [0, 1].

    Raises:
        OSError: the file cannot be read.
        ValueError: not an RGB image, or one of more pixels than Pillow's decompression-bomb
            limit (``PIL.Image.MAX_IMAGE_PIXELS`` times 2, 179 Mpixel by default).
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    else:
        from PIL import Image

        try:
            with Image.open(path) as pil:
                arr = np.asarray(pil.convert("RGB"))
        except Image.DecompressionBombError as err:
            # Neither OSError nor ValueError, so it stopped a whole batch; it is one bad file.
            raise ValueError(f"too many pixels to read safely ({err})") from None
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise ValueError(f"{path}: expected an RGB image, got shape {arr.shape}")
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    return np.ascontiguousarray(np.moveaxis(arr[..., :3], -1, 0), dtype=np.float32) / scale


@dataclass
class BatchReport:
    """What happened to each input of a batch."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    #: Files of input folders left out: hidden ones, and those in the output folder.
    hidden: list[Path] = field(default_factory=list)
    in_output: list[Path] = field(default_factory=list)
    #: ... and DNGs darkraw wrote (``*-darkraw.dng``), wherever they are.
    ours: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """``2 written, 0 skipped, 1 failed``, then what folder scans left out, if anything."""
        counts = (len(self.written), len(self.skipped), len(self.failed))
        text = "{} written, {} skipped, {} failed".format(*counts)
        left_out = []
        if self.hidden:
            left_out.append(_files(len(self.hidden), "hidden "))
        if self.in_output:
            left_out.append(_files(len(self.in_output)) + " in the output folder")
        if self.ours:
            plural = "" if len(self.ours) == 1 else "s"
            left_out.append(f"{len(self.ours)} DNG{plural} darkraw wrote")
        return f"{text} (folder scans left out {', '.join(left_out)})" if left_out else text


def _files(count: int, kind: str = "") -> str:
    return f"{count} {kind}file{'' if count == 1 else 's'}"


@dataclass
class InputScan:
    """The inputs of a batch, folders expanded (:func:`scan_inputs`)."""

    files: list[Path] = field(default_factory=list)
    #: Where each file found below a scanned folder lies under it (``2026-12-01`` for
    #: ``shoot/2026-12-01/DSC1.ARW`` when ``shoot`` was scanned), so that a batch writes its
    #: output in the same place under the output folder (a file already in the output folder:
    #: where it lies in it); files given as themselves, and those at a scanned folder's top,
    #: are not here.
    subfolders: dict[Path, Path] = field(default_factory=dict)
    #: Files with an input's extension that a folder scan left out: hidden ones (a name, or a
    #: folder's name below the scanned folder, starting with ``.``, like macOS's ``._x.ARW``)...
    hidden: list[Path] = field(default_factory=list)
    #: ... and images darkraw may have written, in the output folder inside a scanned folder.
    in_output: list[Path] = field(default_factory=list)
    #: ... and DNGs darkraw wrote (``*-darkraw.dng``): a second run would enhance them again.
    ours: list[Path] = field(default_factory=list)


def scan_inputs(
    inputs: Iterable[str | Path], extensions: Iterable[str], output: str | Path | None = None
) -> InputScan:
    """Expand folders into the files they hold with one of ``extensions`` (recursively, sorted);
    keep files as given, hidden or not.

    A folder's hidden files are left out, and so are the images (``.png``, ``.jpg``, ``.tif``:
    what darkraw writes) in ``output`` when that folder lies inside a scanned folder: a batch's
    outputs are never read back as its inputs (bare mosaics are ``.png`` and ``.tif`` files too).
    Raw files there are still read, except the DNGs darkraw wrote (``*-darkraw.dng``), which a
    folder scan leaves out wherever they are. A file reached twice is kept once.
    """
    exts = {ext.lower() for ext in extensions}
    out_dir = Path(output).resolve() if output is not None else None
    scan = InputScan()
    # Each file found, with where it lies below its scanned folder (a file given by name: at
    # the top, as one at a scanned folder's top).
    reached: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            reached.append((path, Path()))
            continue
        root = path.resolve()
        # The output folder itself may be scanned (``in/ -o in/``); only one inside it is left out.
        skip = out_dir if out_dir is not None and root in out_dir.parents else None
        found: list[tuple[Path, Path]] = []
        for file in path.rglob("*"):
            if file.suffix.lower() not in exts or not file.is_file():
                continue
            inside = file.relative_to(path)
            # Where the file lies in the output folder, if it lies there.
            in_output = None
            if skip is not None and skip in (root / inside).parents:
                in_output = (root / inside).parent.relative_to(skip)
            if any(part.startswith(".") for part in inside.parts):
                scan.hidden.append(file)
            elif is_darkraw_dng(file):
                scan.ours.append(file)
            elif in_output is not None and file.suffix.lower() in IMAGE_FORMATS:
                scan.in_output.append(file)
            elif in_output is not None:
                # A raw file already in the output folder: its output goes beside it, not to a
                # copy of the output folder's path made inside the output folder.
                found.append((file, in_output))
            else:
                found.append((file, inside.parent))
        reached.extend(sorted(found))
    # A file reached twice (named twice by overlapping shell patterns, or named and inside a
    # folder also given) is one input, placed where it was first reached.
    seen: set[Path] = set()
    for path, below in reached:
        # realpath, not Path.resolve: a loop of links is an input that fails later, by name.
        key = Path(os.path.realpath(path))
        if key in seen:
            continue
        seen.add(key)
        scan.files.append(path)
        if below != Path():
            scan.subfolders[path] = below
    scan.hidden.sort()
    scan.in_output.sort()
    scan.ours.sort()
    return scan


def check_distinct_outputs(inputs: Sequence[Path], targets: Sequence[Path]) -> None:
    """Refuse two inputs that would be written to one output (``a/x.dng`` and ``b/x.dng``).

    Raises:
        OutputError: naming the output and both inputs.
    """
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, targets, strict=True):
        if dst in seen:
            raise OutputError(dst, f"both {seen[dst]} and {src} would be written here")
        seen[dst] = src


def check_outputs_are_not_inputs(inputs: Sequence[Path], targets: Sequence[Path]) -> None:
    """Refuse an output that is one of the inputs: the same file by any path (``..``, a symbolic
    or hard link), compared by device and inode, whatever ``--overwrite`` says.

    Raises:
        OutputError: naming the output (and the input, where its path differs).
    """
    files: dict[tuple[int, int], Path] = {}
    for src in inputs:
        try:
            info = src.stat()
        except OSError:
            continue  # a missing input is reported when it is read
        files.setdefault((info.st_dev, info.st_ino), src)
    for dst in targets:
        try:
            info = dst.stat()
        except OSError:
            continue  # nothing there yet, so no input either
        same = files.get((info.st_dev, info.st_ino))
        if same is not None:
            which = "an input" if same == dst else f"the input {same}"
            raise OutputError(
                dst, f"is {which}; darkraw never writes over an input (choose another output)"
            )


def prepare_output_folder(folder: Path, output: Path | None = None, *, write: bool = True) -> None:
    """Make sure ``folder`` exists (creating it and its parents) and, if ``write``, that it can be
    written in: checked before any frame is computed, so a typo fails at once.

    Args:
        folder: the folder outputs go to.
        output: the single output file in ``folder``, named by the messages; ``None`` when
            ``folder`` itself was given as the output.
        write: something will be written there (not every output exists already).

    Raises:
        OutputError: ``folder`` is a file or cannot be created, or it is not writable.
    """
    # Named: the folder given as the output, or the single output file and then its folder.
    name, where = (folder, "") if output is None else (output, f" {folder}")
    try:
        is_dir, exists = folder.is_dir(), folder.exists()
    except OSError as err:  # a name too long for the file system, a loop of links
        raise OutputError(name, f"cannot use this output path ({err.strerror or err})") from None
    if is_dir:
        # os.access asks the kernel (permission bits, ACLs, read-only mounts); root passes.
        if write and not os.access(folder, os.W_OK | os.X_OK):
            here = "here" if output is None else f"in {folder}"
            raise OutputError(name, f"cannot write {here} (permission denied)")
        return
    if exists:
        raise OutputError(name, f"cannot create output folder{where} (it is a file)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        problem = f"cannot create output folder{where} ({err.strerror or err})"
        raise OutputError(name, problem) from None
