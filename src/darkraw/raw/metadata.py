"""The metadata record of a raw mosaic: what a camera pipeline needs to render it.

Follows the fields of the DNG specification (Adobe, DNG 1.4): CFA pattern, black and white
levels, as-shot white balance, and a colour matrix, here held as LibRaw holds it
(``rgb_cam``: camera RGB to linear sRGB, rows summing to one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from darkraw.raw.cfa import BayerPattern, xtrans_phase

Matrix3 = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]

#: Linear sRGB (D65) to CIE XYZ, the constant LibRaw and dcraw use.
XYZ_FROM_SRGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)

_COLOR_NAMES = "RGB"


def tile_tuple(arr: Any, kind: type) -> tuple[tuple[Any, ...], ...]:
    """A 2-D array as the nested tuples a :class:`RawMetadata` tile is stored as."""
    return tuple(tuple(kind(v) for v in row) for row in np.asarray(arr))


@dataclass(frozen=True)
class RawMetadata:
    """Everything known about a raw mosaic besides its pixels.

    Attributes:
        cfa_tile: colour index (0 R, 1 G, 2 B) of each pixel of the repeating CFA tile at the
            mosaic's top-left corner: 2x2 for Bayer, 6x6 for X-Trans.
        black_tile: black level in DN at each position of the CFA tile (same shape).
        white_level: saturation level in DN.
        wb_gains: as-shot white-balance multipliers (R, G, B), green = 1; ``None`` if unknown.
        rgb_cam: 3x3 matrix from white-balanced camera RGB to linear sRGB; ``None`` if unknown.
        height, width: mosaic size in pixels.
        exposure_time: seconds, if recorded.
        iso: ISO speed, if recorded.
        make, model: camera maker and model, if recorded.
        flip: LibRaw orientation code (0 none, 3 rotate 180, 5 rotate 90 CCW, 6 rotate 90 CW;
            bit 1 mirror columns, bit 2 mirror rows, bit 4 transpose).
        source: how the file was read, e.g. ``"LibRaw"`` or ``"npy"``.
    """

    cfa_tile: tuple[tuple[int, ...], ...]
    black_tile: tuple[tuple[float, ...], ...]
    white_level: float
    height: int
    width: int
    wb_gains: tuple[float, float, float] | None = None
    rgb_cam: Matrix3 | None = None
    exposure_time: float | None = None
    iso: float | None = None
    make: str | None = None
    model: str | None = None
    flip: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        tile = np.asarray(self.cfa_tile)
        if tile.shape == (2, 2):
            BayerPattern.from_tile(tile)
        elif tile.shape == (6, 6):
            xtrans_phase(tile)
        else:
            raise ValueError(f"expected a 2x2 (Bayer) or 6x6 (X-Trans) CFA tile, got {tile.shape}")
        black = np.asarray(self.black_tile, dtype=float)
        if black.shape != tile.shape:
            raise ValueError(f"black_tile shape {black.shape} differs from cfa_tile {tile.shape}")
        if not np.all(np.isfinite(black)) or black.min() < 0:
            raise ValueError(f"black levels must be finite and >= 0, got {black.tolist()}")
        if not np.isfinite(self.white_level) or self.white_level <= black.max():
            raise ValueError(
                f"white level {self.white_level} must exceed the black level {black.max()}"
            )
        if self.height < 1 or self.width < 1:
            raise ValueError(f"mosaic size must be positive, got {self.height}x{self.width}")
        if self.wb_gains is not None:
            gains = np.asarray(self.wb_gains, dtype=float)
            if gains.shape != (3,) or not np.all(np.isfinite(gains)) or gains.min() <= 0:
                raise ValueError(f"white-balance gains must be 3 positive numbers, got {gains}")
        if self.rgb_cam is not None:
            mat = np.asarray(self.rgb_cam, dtype=float)
            if mat.shape != (3, 3) or not np.all(np.isfinite(mat)):
                raise ValueError(f"rgb_cam must be a finite 3x3 matrix, got {mat.tolist()}")
        if self.flip not in (0, 1, 2, 3, 4, 5, 6, 7):
            raise ValueError(f"flip must be a LibRaw orientation code 0..7, got {self.flip}")

    @classmethod
    def for_bayer(
        cls,
        pattern: BayerPattern | str,
        height: int,
        width: int,
        black_level: float | tuple[float, float, float, float] = 0.0,
        white_level: float = 16383.0,
        **fields: Any,
    ) -> RawMetadata:
        """Metadata for a Bayer mosaic; a scalar black level applies to all four positions.

        A 4-tuple black level is in the raster order of the 2x2 tile.
        """
        bayer = BayerPattern.parse(pattern)
        black = np.broadcast_to(np.asarray(black_level, dtype=float).reshape(-1), (4,))
        return cls(
            cfa_tile=tile_tuple(bayer.tile, int),
            black_tile=tile_tuple(black.reshape(2, 2), float),
            white_level=float(white_level),
            height=height,
            width=width,
            **fields,
        )

    @property
    def is_xtrans(self) -> bool:
        return len(self.cfa_tile) == 6

    @property
    def bayer_pattern(self) -> BayerPattern:
        """The Bayer layout; raises ``ValueError`` for X-Trans."""
        if self.is_xtrans:
            raise ValueError("this is an X-Trans mosaic, not Bayer")
        return BayerPattern.from_tile(self.cfa_tile)

    @property
    def cfa_name(self) -> str:
        """``"RGGB"``-style name for Bayer, ``"X-Trans"`` for X-Trans."""
        return "X-Trans" if self.is_xtrans else self.bayer_pattern.value

    @property
    def period(self) -> int:
        """Side of the repeating CFA tile in pixels (2 Bayer, 6 X-Trans)."""
        return len(self.cfa_tile)

    def black_levels_by_color(self) -> tuple[float, float, float]:
        """Mean black level of the red, green and blue positions of the tile."""
        tile = np.asarray(self.cfa_tile)
        black = np.asarray(self.black_tile, dtype=float)
        return (
            float(black[tile == 0].mean()),
            float(black[tile == 1].mean()),
            float(black[tile == 2].mean()),
        )

    def replace(self, **changes: Any) -> RawMetadata:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary, with the CFA named."""
        out = dataclasses.asdict(self)
        out["cfa"] = self.cfa_name
        out["cfa_tile"] = ["".join(_COLOR_NAMES[c] for c in row) for row in self.cfa_tile]
        out["black_tile"] = [list(row) for row in self.black_tile]
        out["rgb_cam"] = None if self.rgb_cam is None else [list(row) for row in self.rgb_cam]
        out["wb_gains"] = None if self.wb_gains is None else list(self.wb_gains)
        return out


def rgb_cam_from_cam_xyz(cam_xyz: np.ndarray) -> Matrix3 | None:
    """Camera-to-sRGB matrix from an XYZ-to-camera matrix (DNG ColorMatrix), as LibRaw does.

    The camera-from-sRGB product is normalised so that sRGB white maps to camera white (rows sum
    to one); its inverse is ``rgb_cam``. Returns ``None`` for an all-zero or singular matrix.
    """
    cam_xyz = np.asarray(cam_xyz, dtype=float)[:3, :3]
    if not np.any(cam_xyz):
        return None
    cam_rgb = cam_xyz @ XYZ_FROM_SRGB
    sums = cam_rgb.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums) < 1e-12):
        return None
    cam_rgb = cam_rgb / sums
    try:
        rgb_cam = np.linalg.inv(cam_rgb)
    except np.linalg.LinAlgError:
        return None
    return _matrix3(rgb_cam)


def cam_xyz_from_rgb_cam(rgb_cam: np.ndarray) -> np.ndarray:
    """XYZ-to-camera matrix (for a DNG ColorMatrix1) that LibRaw turns back into ``rgb_cam``."""
    cam_rgb = np.linalg.inv(np.asarray(rgb_cam, dtype=float))
    return np.asarray(cam_rgb @ np.linalg.inv(XYZ_FROM_SRGB))


def _matrix3(mat: np.ndarray) -> Matrix3:
    rows = [tuple(float(v) for v in row) for row in np.asarray(mat)[:3, :3]]
    return (rows[0], rows[1], rows[2])  # type: ignore[return-value]


def as_matrix3(mat: Any) -> Matrix3:
    """A 3x3 array-like as the nested tuple the frozen metadata holds."""
    arr = np.asarray(mat, dtype=float)
    if arr.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got shape {arr.shape}")
    return _matrix3(arr)
