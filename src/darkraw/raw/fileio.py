"""Writing output files whole or not at all, and the image formats darkraw writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darkraw.errors import OutputError

#: Output extensions and their bit depth.
IMAGE_FORMATS = {".png": 8, ".jpg": 8, ".jpeg": 8, ".tif": 16, ".tiff": 16}


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A reader never sees a half-written file, and a failure (or Ctrl-C) leaves no output behind.
    The temporary name keeps the real suffix, so writers that look at it pick the right format.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(path, f"output folder {parent} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=parent
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
    return np.clip(np.rint(np.asarray(image, dtype=np.float32) * top), 0, top).astype(dtype)


#: zlib level of PNG outputs (0-9). PIL's default 6 took 3.8 s for a 12-megapixel result, as
#: long as the network; 3 takes 1.2 s for 11 % more bytes (level 1: 0.8 s, 18 % more).
PNG_COMPRESS_LEVEL = 3


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write a ``(3, H, W)`` float image in [0, 1], already gamma-encoded, atomically.

    ``.png`` and ``.jpg`` are written with 8 bits per channel, ``.tif``/``.tiff`` with 16.

    Raises:
        OutputError: unknown extension, or the file cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise OutputError(
            path, f"unknown image format {suffix!r}; use one of {', '.join(IMAGE_FORMATS)}"
        )
    hwc = quantize(to_hwc(image), IMAGE_FORMATS[suffix])
    try:
        with atomic_output(path) as tmp:
            if suffix in (".tif", ".tiff"):
                import tifffile

                tifffile.imwrite(tmp, hwc, photometric="rgb", compression="zlib")
            else:
                from PIL import Image

                pil = Image.fromarray(hwc, mode="RGB")
                if suffix == ".png":
                    pil.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
                else:
                    pil.save(tmp, format="JPEG", quality=95)
    except OSError as err:
        raise OutputError(path, f"cannot write image ({err.strerror or err})") from None
    return path


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8- or 16-bit RGB image as a ``(3, H, W)`` float32 array in [0, 1]."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    else:
        from PIL import Image

        with Image.open(path) as pil:
            arr = np.asarray(pil.convert("RGB"))
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

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        counts = (len(self.written), len(self.skipped), len(self.failed))
        return "{} written, {} skipped, {} failed".format(*counts)


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
