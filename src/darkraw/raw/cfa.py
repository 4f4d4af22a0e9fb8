"""Colour-filter-array layouts and packing: the one module that owns channel order.

Bayer mosaics are packed 2x2 into four half-resolution planes in the order of See-in-the-Dark
(Chen et al., CVPR 2018): **R, G1, B, G2**, where G1 is the green sharing a row with red and G2
the green sharing a row with blue. Every Bayer layout (RGGB, BGGR, GRBG, GBRG) packs to this same
order, so nothing downstream of :func:`pack_bayer` needs to know which layout the camera had.

X-Trans (Fuji) 6x6 mosaics are packed into nine third-resolution planes as SID does for Fuji:
each 3x3 block of an X-Trans tile holds 2 red, 5 green and 2 blue pixels, so the nine planes are
R, R, G, G, G, G, G, B, B, each plane taking one same-colour pixel from every 3x3 block.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from darkraw.choices import parse_choice
from darkraw.parallel import thread_map

#: Names of the packed Bayer planes, in order.
BAYER_CHANNELS: tuple[str, ...] = ("R", "G1", "B", "G2")

#: Colour index of each packed Bayer plane (0 red, 1 green, 2 blue).
BAYER_PLANE_COLORS: tuple[int, ...] = (0, 1, 2, 1)

#: Which packed Bayer planes share sensor rows: R and G1 lie on one row, B and G2 on the other.
BAYER_PLANE_ROWS: tuple[int, ...] = (0, 0, 1, 1)

#: Colour index of each packed X-Trans plane.
XTRANS_PLANE_COLORS: tuple[int, ...] = (0, 0, 1, 1, 1, 1, 1, 2, 2)

#: Fujifilm's X-Trans tile (colour indices, 0 R, 1 G, 2 B): the phase of the pattern every
#: X-Trans mosaic is packed from (:func:`xtrans_phase`) and training mosaics are laid out on.
XTRANS_TILE: tuple[tuple[int, ...], ...] = (
    (1, 1, 0, 1, 1, 2),
    (1, 1, 2, 1, 1, 0),
    (2, 0, 1, 0, 2, 1),
    (1, 1, 2, 1, 1, 0),
    (1, 1, 0, 1, 1, 2),
    (0, 2, 1, 2, 0, 1),
)


class BayerPattern(enum.Enum):
    """The four Bayer layouts, named by the colours of the top-left 2x2 tile in raster order."""

    RGGB = "RGGB"
    BGGR = "BGGR"
    GRBG = "GRBG"
    GBRG = "GBRG"

    @property
    def tile(self) -> npt.NDArray[np.int8]:
        """The 2x2 tile as colour indices (0 red, 1 green, 2 blue)."""
        lut = {"R": 0, "G": 1, "B": 2}
        return np.array([lut[c] for c in self.value], dtype=np.int8).reshape(2, 2)

    @property
    def offsets(self) -> tuple[tuple[int, int], ...]:
        """(row, col) inside the 2x2 tile of the packed planes R, G1, B, G2."""
        tile = self.tile
        ((r_row, r_col),) = np.argwhere(tile == 0)
        ((b_row, b_col),) = np.argwhere(tile == 2)
        return (
            (int(r_row), int(r_col)),
            (int(r_row), int(1 - r_col)),
            (int(b_row), int(b_col)),
            (int(b_row), int(1 - b_col)),
        )

    @property
    def rggb_flips(self) -> tuple[bool, bool]:
        """(vertical, horizontal) mirrorings of an even-sized mosaic that make this layout RGGB.

        Every Bayer layout is RGGB seen in a mirror: GRBG left-right, GBRG upside down, BGGR
        both. A network that renders sub-pixels needs to know where in each 2x2 tile the red
        sample sits, and a packed input does not say; a mosaic mirrored to RGGB always puts it
        at the top left.
        """
        r_row, r_col = self.offsets[0]
        return bool(r_row), bool(r_col)

    @classmethod
    def from_tile(cls, tile: npt.ArrayLike) -> BayerPattern:
        """The layout whose 2x2 tile of colour indices (0 R, 1 G, 2 B) is ``tile``."""
        arr = np.asarray(tile)
        if arr.shape != (2, 2):
            raise ValueError(f"expected a 2x2 colour tile, got shape {arr.shape}")
        for pattern in cls:
            if np.array_equal(pattern.tile, arr):
                return pattern
        raise ValueError(f"not a Bayer tile (colour indices 0 R, 1 G, 2 B): {arr.tolist()}")

    @classmethod
    def parse(cls, name: str | BayerPattern) -> BayerPattern:
        """Parse a layout name such as ``"rggb"``; raise ``ValueError`` naming the choices."""
        return parse_choice(cls, name, "Bayer pattern")


def _check_mosaic(mosaic: np.ndarray, period: int) -> None:
    if mosaic.ndim < 2:
        raise ValueError(f"expected a mosaic of shape (*, H, W), got {mosaic.shape}")
    h, w = mosaic.shape[-2:]
    if h < period or w < period or h % period or w % period:
        raise ValueError(
            f"expected mosaic height and width to be positive multiples of {period}, "
            f"got {h}x{w}; pad it first with pad_to_multiple()"
        )


def pack_bayer(mosaic: np.ndarray, pattern: BayerPattern | str) -> np.ndarray:
    """Pack a Bayer mosaic into the canonical planes R, G1, B, G2.

    Args:
        mosaic: ``(*, H, W)`` with H and W even, any dtype.
        pattern: the layout of ``mosaic``.

    Returns:
        ``(*, 4, H/2, W/2)``, same dtype.
    """
    pattern = BayerPattern.parse(pattern)
    _check_mosaic(mosaic, 2)
    planes = [mosaic[..., r::2, c::2] for r, c in pattern.offsets]
    return np.stack(planes, axis=-3)


def unpack_bayer(packed: np.ndarray, pattern: BayerPattern | str) -> np.ndarray:
    """Inverse of :func:`pack_bayer`: ``(*, 4, h, w)`` planes to a ``(*, 2h, 2w)`` mosaic."""
    pattern = BayerPattern.parse(pattern)
    if packed.ndim < 3 or packed.shape[-3] != 4:
        raise ValueError(f"expected packed Bayer planes of shape (*, 4, h, w), got {packed.shape}")
    h, w = packed.shape[-2:]
    mosaic = np.empty((*packed.shape[:-3], 2 * h, 2 * w), dtype=packed.dtype)
    for i, (r, c) in enumerate(pattern.offsets):
        mosaic[..., r::2, c::2] = packed[..., i, :, :]
    return mosaic


#: Which packed plane of an RGGB mosaic each packed plane of its transpose is (the transpose of):
#: red and blue stay, the greens trade places (G1 shares a row with red; a transpose turns the
#: rows into columns). A transposed RGGB mosaic is RGGB, the one flip that keeps the layout.
BAYER_TRANSPOSED_PLANES: tuple[int, ...] = (0, 3, 2, 1)


def transpose_bayer_planes(planes: np.ndarray) -> np.ndarray:
    """The packed planes of the transposed mosaic: ``pack_bayer(mosaic.T, "RGGB")`` from
    ``pack_bayer(mosaic, "RGGB")``, its own inverse.

    Args:
        planes: ``(C, h, w)`` with ``C`` a multiple of 4: groups of packed planes R, G1, B, G2
            (a network's input may hold the planes, then a map of their noise, in that order).

    Returns:
        ``(C, w, h)``, a new contiguous array of the same dtype.
    """
    if planes.ndim != 3 or planes.shape[0] % 4:
        raise ValueError(f"expected (4k, h, w) packed Bayer planes, got {planes.shape}")
    c, h, w = planes.shape
    out = np.empty((c, w, h), dtype=planes.dtype)

    def one(i: int) -> None:
        group, plane = divmod(i, 4)
        out[i] = planes[4 * group + BAYER_TRANSPOSED_PLANES[plane]].T

    # A plane per thread: a transposing copy is strided reads, slow on one core.
    thread_map(one, range(c), size=planes.size)
    return out


def color_index_map(pattern: BayerPattern | str, height: int, width: int) -> np.ndarray:
    """Colour index (0 R, 1 G, 2 B) of every pixel of an ``height x width`` Bayer mosaic."""
    return cfa_colours(BayerPattern.parse(pattern).tile, height, width)


def cfa_colours(tile: npt.ArrayLike, height: int, width: int) -> np.ndarray:
    """Colour index (0 R, 1 G, 2 B) of every pixel of an ``height x width`` mosaic whose
    top-left corner is ``tile`` (a Bayer 2x2 or an X-Trans 6x6 tile of colour indices)."""
    arr = np.asarray(tile)
    reps = (-(-height // arr.shape[0]), -(-width // arr.shape[1]))
    return np.tile(arr, reps)[:height, :width]


def check_xtrans_tile(tile: npt.ArrayLike) -> np.ndarray:
    """Validate a 6x6 X-Trans tile of colour indices; return it as an int8 array.

    Each 3x3 block of an X-Trans tile has exactly 2 red, 5 green and 2 blue pixels: that is what
    lets it pack into nine single-colour planes.
    """
    arr = np.asarray(tile, dtype=np.int8)
    if arr.shape != (6, 6):
        raise ValueError(f"expected a 6x6 X-Trans tile, got shape {arr.shape}")
    for by in (0, 3):
        for bx in (0, 3):
            counts = np.bincount(arr[by : by + 3, bx : bx + 3].ravel(), minlength=3)
            if counts.tolist() != [2, 5, 2]:
                raise ValueError(
                    "not an X-Trans tile: each 3x3 block must hold 2 R, 5 G, 2 B, "
                    f"block at ({by}, {bx}) holds {counts.tolist()}"
                )
    return arr


def xtrans_phase(tile: npt.ArrayLike) -> tuple[int, int]:
    """Rows and columns to put before a mosaic whose top-left tile is ``tile`` so that each of
    its 3x3 blocks holds 2 R, 5 G and 2 B, as :func:`pack_xtrans` needs: for a shift of
    Fujifilm's pattern the one that makes it :data:`XTRANS_TILE` (``(0, 0)`` for that tile),
    otherwise the first that packs. A camera reports the tile at its visible area's corner,
    which may start anywhere in the pattern (16 of its 36 shifts split the blocks otherwise).

    Raises:
        ValueError: ``tile`` is not 6x6, or no shift of it is an X-Trans tile.
    """
    arr = np.asarray(tile, dtype=np.int8)
    if arr.shape != (6, 6):
        raise ValueError(f"expected a 6x6 X-Trans tile, got shape {arr.shape}")
    # Fujifilm's pattern, wherever the file's tile starts in it, is brought to XTRANS_TILE
    # itself, so that its blocks are of the same kinds in the same places in every file.
    for rows in range(6):
        for cols in range(6):
            if np.array_equal(np.roll(arr, (rows, cols), (0, 1)), XTRANS_TILE):
                return rows, cols
    for rows in range(6):
        for cols in range(6):
            try:
                check_xtrans_tile(np.roll(arr, (rows, cols), (0, 1)))
            except ValueError:
                continue
            return rows, cols
    raise ValueError("not an X-Trans tile: no shift of it holds 2 R, 5 G and 2 B in each 3x3 block")


def cfa_canvas(mosaic: np.ndarray, rows: int, cols: int, period: int = 6) -> np.ndarray:
    """``(*, H, W)`` with ``rows`` rows and ``cols`` columns put before it, each a copy of the
    row (column) one CFA period after it, so under the same colour filter (the mosaic then
    starts its tile ``(rows, cols)`` earlier: :func:`xtrans_phase` for X-Trans, the red sample's
    place for a Bayer mosaic made to start with red), and padded at the bottom and right to whole
    tiles as :func:`pad_to_multiple` pads. One new array, filled in place: a concatenation for
    each side made four copies of a frame (0.6 s each for 24 Mpixels of fresh memory).

    Args:
        period: the CFA tile's side: 6 for X-Trans, 2 for Bayer.

    Raises:
        ValueError: H or W below ``period``, or ``rows`` or ``cols`` not below it.
    """
    h, w = mosaic.shape[-2:]
    if h < period or w < period:
        raise ValueError(f"mosaic {h}x{w} is smaller than one {period}x{period} CFA tile")
    if not (0 <= rows < period and 0 <= cols < period):
        raise ValueError(f"rows and cols put before must be in 0..{period - 1}, got {rows}, {cols}")
    height, width = -(-(rows + h) // period) * period, -(-(cols + w) // period) * period
    out = np.empty((*mosaic.shape[:-2], height, width), dtype=mosaic.dtype)
    inside = slice(cols, cols + w)
    out[..., rows : rows + h, inside] = mosaic
    out[..., :rows, inside] = out[..., period : period + rows, inside]
    for row in range(rows + h, height):
        out[..., row, inside] = out[..., row - period, inside]
    out[..., :, :cols] = out[..., :, period : period + cols]
    for col in range(cols + w, width):
        out[..., :, col] = out[..., :, col - period]
    return out


def _xtrans_slots(tile: np.ndarray) -> list[list[tuple[int, int]]]:
    """For each of the four 3x3 blocks (raster order), its pixel offsets sorted into planes."""
    slots = []
    for by in (0, 3):
        for bx in (0, 3):
            cells = [(by + r, bx + c) for r in range(3) for c in range(3)]
            slots.append(sorted(cells, key=lambda rc: (tile[rc], rc)))
    return slots


def pack_xtrans(mosaic: np.ndarray, tile: npt.ArrayLike) -> np.ndarray:
    """Pack an X-Trans mosaic into nine planes R, R, G, G, G, G, G, B, B.

    Args:
        mosaic: ``(*, H, W)`` with H and W multiples of 6.
        tile: the 6x6 colour indices (0 R, 1 G, 2 B) at the mosaic's top-left corner.

    Returns:
        ``(*, 9, H/3, W/3)``; plane pixel ``(y, x)`` comes from the 3x3 block at ``(3y, 3x)``.
    """
    tile_arr = check_xtrans_tile(tile)
    _check_mosaic(mosaic, 6)
    h, w = mosaic.shape[-2:]
    packed = np.empty((*mosaic.shape[:-2], 9, h // 3, w // 3), dtype=mosaic.dtype)
    for block, cells in enumerate(_xtrans_slots(tile_arr)):
        qy, qx = divmod(block, 2)
        for plane, (r, c) in enumerate(cells):
            packed[..., plane, qy::2, qx::2] = mosaic[..., r::6, c::6]
    return packed


def unpack_xtrans(packed: np.ndarray, tile: npt.ArrayLike) -> np.ndarray:
    """Inverse of :func:`pack_xtrans`: ``(*, 9, h, w)`` to a ``(*, 3h, 3w)`` mosaic."""
    tile_arr = check_xtrans_tile(tile)
    if packed.ndim < 3 or packed.shape[-3] != 9 or packed.shape[-2] % 2 or packed.shape[-1] % 2:
        raise ValueError(
            f"expected packed X-Trans planes of shape (*, 9, h, w) with h, w even, "
            f"got {packed.shape}"
        )
    h, w = packed.shape[-2:]
    mosaic = np.empty((*packed.shape[:-3], 3 * h, 3 * w), dtype=packed.dtype)
    for block, cells in enumerate(_xtrans_slots(tile_arr)):
        qy, qx = divmod(block, 2)
        for plane, (r, c) in enumerate(cells):
            mosaic[..., r::6, c::6] = packed[..., plane, qy::2, qx::2]
    return mosaic


def pad_to_multiple(mosaic: np.ndarray, period: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the bottom and right of a ``(H, W)`` mosaic to multiples of ``period``.

    Each padded row (column) repeats the row (column) one period above (to the left), so every
    padded pixel copies a pixel under the same colour filter.

    Returns:
        The padded mosaic and the original ``(H, W)``, to crop the result back.
    """
    if mosaic.ndim != 2:
        raise ValueError(f"expected a mosaic of shape (H, W), got {mosaic.shape}")
    h, w = mosaic.shape
    if h < period or w < period:
        raise ValueError(f"mosaic {h}x{w} is smaller than one {period}x{period} CFA tile")
    pad_h, pad_w = (-h) % period, (-w) % period
    out = mosaic
    if pad_h:
        out = np.concatenate([out, out[h - period : h - period + pad_h]], axis=0)
    if pad_w:
        out = np.concatenate([out, out[:, w - period : w - period + pad_w]], axis=1)
    return out, (h, w)


def plane_colors(num_planes: int) -> Sequence[int]:
    """Colour index of each packed plane for a 4-plane (Bayer) or 9-plane (X-Trans) stack."""
    if num_planes == 4:
        return BAYER_PLANE_COLORS
    if num_planes == 9:
        return XTRANS_PLANE_COLORS
    raise ValueError(f"expected 4 (Bayer) or 9 (X-Trans) packed planes, got {num_planes}")
