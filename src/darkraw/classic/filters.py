"""The few image filters darkraw takes from OpenCV, with numpy equivalents where it is missing.

OpenCV (``opencv-python-headless``, 173 MB installed) comes with the ``darkraw[classic]`` extra,
so a plain ``pip install darkraw`` has to render, simulate and estimate noise without it. Each
function here calls OpenCV when it can be imported (it is faster) and otherwise computes the same
result with numpy, to float32 rounding: the same correlation, the same borders (OpenCV's
``BORDER_REFLECT_101``, ``gfedcb|abcdefgh|gfedcba``, reflected again on images smaller than the
kernel; ``BORDER_REPLICATE`` for the maximum filter), the same anchor (the kernel's centre,
``k // 2`` for an even size ``k``) and the same area weights as ``cv2.resize`` with
``INTER_AREA``.

Arrays are single planes ``(H, W)``; sizes given as pairs are ``(width, height)`` as OpenCV
takes them.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Literal

import numpy as np

#: Set to ``False`` to use the numpy implementations even where OpenCV is installed (tests).
USE_OPENCV = True

#: Largest window :func:`box_mean` sums by shifted slices rather than cumulative sums.
_SHIFTED_SUM_MAX = 7


@functools.cache
def _import_opencv() -> ModuleType | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def opencv() -> ModuleType | None:
    """OpenCV's ``cv2`` module, or ``None`` where it is not installed or :data:`USE_OPENCV` is
    off. Imported on first use, so ``import darkraw`` does not pay for it."""
    return _import_opencv() if USE_OPENCV else None


def _check_plane(image: np.ndarray, name: str = "image") -> None:
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected a non-empty (H, W) {name}, got shape {image.shape}")


def _check_size(size: int, name: str) -> None:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"{name} must be a positive integer, got {size!r}")


def _pad(image: np.ndarray, kh: int, kw: int, mode: Literal["reflect", "edge"]) -> np.ndarray:
    """``image`` padded for a ``(kh, kw)`` window anchored at its centre (``k // 2``)."""
    # numpy's "reflect" is OpenCV's BORDER_REFLECT_101, and reflects again as often as needed.
    widths = ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2))
    return np.pad(image, widths, mode=mode)


def filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate a plane with a small kernel, reflect-101 borders.

    Equals ``cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)``:
    ``out[y, x] = sum(kernel[i, j] * image[y + i - kh // 2, x + j - kw // 2])`` (correlation,
    not convolution). The numpy path adds shifted slices of the padded image, one per non-zero
    tap, taps of equal weight summed before they are scaled; it suits sparse kernels up to about
    7x7 (OpenCV switches to a DFT for large kernels, this does not).

    Args:
        image: ``(H, W)``, computed in float32.
        kernel: ``(kh, kw)``.

    Returns:
        ``(H, W)`` float32.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    kernel = np.asarray(kernel, dtype=np.float32)
    _check_plane(image)
    _check_plane(kernel, "kernel")
    cv2 = opencv()
    if cv2 is not None:
        return np.asarray(cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101))
    h, w = image.shape
    kh, kw = kernel.shape
    padded = _pad(image, kh, kw, "reflect")
    out = np.zeros((h, w), dtype=np.float32)
    group = np.empty((h, w), dtype=np.float32)
    for weight in np.unique(kernel[kernel != 0]):
        taps = np.argwhere(kernel == weight)
        (i, j), rest = taps[0], taps[1:]
        group[...] = padded[i : i + h, j : j + w]
        for i, j in rest:
            group += padded[i : i + h, j : j + w]
        group *= weight
        out += group
    return out


def box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size x size`` window, reflect-101 borders.

    Equals ``cv2.blur(image, (size, size))`` (whose default border is ``BORDER_REFLECT_101``).
    The numpy path sums one axis after the other: shifted slices in float32 for windows up to
    :data:`_SHIFTED_SUM_MAX` (five times faster than the alternative), differences of float64
    cumulative sums for larger ones (as exact as OpenCV's double sums, whatever the size).

    Args:
        image: ``(H, W)``, computed in float32.
        size: the window's side, at least 1.

    Returns:
        ``(H, W)`` float32.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    _check_plane(image)
    _check_size(size, "size")
    cv2 = opencv()
    if cv2 is not None:
        return np.asarray(cv2.blur(image, (size, size), borderType=cv2.BORDER_REFLECT_101))
    h, w = image.shape
    padded = _pad(image, size, size, "reflect")
    if size <= _SHIFTED_SUM_MAX:
        rows = padded[0:h].copy()
        for i in range(1, size):
            rows += padded[i : i + h]
        out = rows[:, 0:w].copy()
        for j in range(1, size):
            out += rows[:, j : j + w]
        out *= np.float32(1.0 / (size * size))
        return out
    sums = np.zeros((h + size, w + size - 1), dtype=np.float64)
    np.cumsum(padded, axis=0, dtype=np.float64, out=sums[1:])
    row_sums = sums[size:] - sums[:h]
    sums = np.zeros((h, w + size), dtype=np.float64)
    np.cumsum(row_sums, axis=1, out=sums[:, 1:])
    return ((sums[:, size:] - sums[:, :w]) / (size * size)).astype(np.float32)


def max_filter(image: np.ndarray, size: int) -> np.ndarray:
    """Maximum over a ``size x size`` window, the edge pixels repeated beyond the borders.

    Equals ``cv2.dilate(image, np.ones((size, size), np.uint8), borderType=cv2.BORDER_REPLICATE)``.

    Args:
        image: ``(H, W)`` of any dtype OpenCV dilates (``uint8``, ``uint16``, ``float32``, ...).
        size: the window's side, at least 1.

    Returns:
        ``(H, W)``, the dtype of ``image``.
    """
    image = np.ascontiguousarray(image)
    _check_plane(image)
    _check_size(size, "size")
    cv2 = opencv()
    if cv2 is not None and image.dtype != np.bool_:
        window = np.ones((size, size), dtype=np.uint8)
        return np.asarray(cv2.dilate(image, window, borderType=cv2.BORDER_REPLICATE))
    h, w = image.shape
    padded = _pad(image, size, size, "edge")
    rows = padded[0:h].copy()
    for i in range(1, size):
        np.maximum(rows, padded[i : i + h], out=rows)
    out = rows[:, 0:w].copy()
    for j in range(1, size):
        np.maximum(out, rows[:, j : j + w], out=out)
    return out


def _area_weights(src: int, dst: int) -> np.ndarray:
    """``(dst, src)`` weights of OpenCV's area resampling along one axis (``src >= dst``):
    each output pixel is the mean of the input pixels its cell covers, weighted by coverage.
    The arithmetic is OpenCV's ``computeResizeAreaTab``, thresholds included."""
    scale = src / dst
    weights = np.zeros((dst, src), dtype=np.float64)
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s2 = min(math.floor(f2), src - 1)
        s1 = min(math.ceil(f1), s2)
        if s1 - f1 > 1e-3:
            weights[d, s1 - 1] = (s1 - f1) / cell
        weights[d, s1:s2] = 1.0 / cell
        if f2 - s2 > 1e-3:
            weights[d, s2] = min(f2 - s2, 1.0, cell) / cell
    return weights


def resize_area(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink a plane by area averaging.

    Equals ``cv2.resize(plane, size, interpolation=cv2.INTER_AREA)`` for a shrink; the numpy
    path multiplies by OpenCV's per-axis coverage weights (``Wy @ plane @ Wx.T``).

    Args:
        plane: ``(H, W)``, computed in float32.
        size: ``(width, height)`` of the result, each at least 1 and at most the plane's.

    Returns:
        ``(height, width)`` float32.

    Raises:
        ValueError: an empty or non-2-D plane, or a size that would enlarge it (OpenCV's area
            interpolation is not area averaging there).
    """
    plane = np.ascontiguousarray(plane, dtype=np.float32)
    _check_plane(plane, "plane")
    new_w, new_h = size
    _check_size(new_w, "width")
    _check_size(new_h, "height")
    h, w = plane.shape
    if new_w > w or new_h > h:
        raise ValueError(f"resize_area only shrinks: ({w}, {h}) cannot become ({new_w}, {new_h})")
    cv2 = opencv()
    if cv2 is not None:
        return np.asarray(cv2.resize(plane, (new_w, new_h), interpolation=cv2.INTER_AREA))
    rows = _area_weights(h, new_h).astype(np.float32) @ plane
    return np.ascontiguousarray(rows @ _area_weights(w, new_w).astype(np.float32).T)
