"""Unprocessing ordinary sRGB photos into linear raw mosaics.

After Brooks et al., "Unprocessing Images for Learned Raw Denoising" (CVPR 2019): undo the
camera pipeline step by step so that plentiful clean photos become clean raw data. Each step
mirrors one forward step of :mod:`darkraw.classic.pipeline`, so the classic pipeline run on an
unprocessed photo (ratio ``1 / brightness``, the sampled white balance and colour matrix) gives
the photo back up to demosaicing error and highlights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from darkraw.classic.pipeline import GammaCurve, gamma_decode
from darkraw.raw.cfa import BayerPattern, color_index_map
from darkraw.raw.metadata import Matrix3, RawMetadata, as_matrix3, rgb_cam_from_cam_xyz

#: Camera-to-sRGB matrix of the GoPro HERO7 Black, as LibRaw reads it from the development
#: data's DNG (and from the bundled sample).
GOPRO_HERO7_RGB_CAM: Matrix3 = (
    (1.53305, -0.178851, -0.354197),
    (-0.284812, 1.67913, -0.39432),
    (-0.0289078, -0.442044, 1.47095),
)

#: No colour correction: what the pipeline applies to a file that states no colour matrix (bare
#: mosaics, some old cameras). A network that never saw it in training renders such files poorly.
IDENTITY_RGB_CAM: Matrix3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

#: XYZ-to-camera matrices (times 10,000) of real cameras, as dcraw's and LibRaw's ``adobe_coeff``
#: table lists them; :func:`~darkraw.raw.metadata.rgb_cam_from_cam_xyz` turns them into
#: camera-to-sRGB matrices the way LibRaw does for a file of that camera.
_CAM_XYZ_1E4: dict[str, tuple[int, ...]] = {
    "sony_a7s": (5838, -1430, -246, -3497, 11477, 2297, -748, 1885, 5778),
    "sony_a7m2": (5271, -712, -347, -6153, 13653, 2763, -1601, 2366, 7242),
    "sony_a7m3": (7374, -2389, -551, -5435, 13162, 2519, -1006, 1795, 6552),
    "sony_a6300": (5973, -1695, -419, -3826, 11797, 2293, -639, 1398, 5789),
    "canon_eos60d": (6719, -994, -925, -4408, 12426, 2211, -887, 2129, 6051),
    "canon_eos70d": (7034, -804, -1014, -4420, 12564, 2058, -851, 1994, 5758),
    "canon_eos600d": (6461, -907, -882, -4300, 12184, 2378, -819, 1944, 5931),
    "canon_eos650d": (6602, -841, -939, -4472, 12458, 2247, -975, 2039, 6148),
}


def _from_cam_xyz(coeffs: tuple[int, ...]) -> Matrix3:
    matrix = rgb_cam_from_cam_xyz(np.reshape(np.asarray(coeffs, dtype=float) / 10000.0, (3, 3)))
    assert matrix is not None, "the table's matrices are invertible"
    return matrix


#: Virtual cameras that configs may name in ``UnprocessConfig.matrices``.
CAMERA_MATRICES: dict[str, Matrix3] = {
    "gopro_hero7": GOPRO_HERO7_RGB_CAM,
    "identity": IDENTITY_RGB_CAM,
    **{name: _from_cam_xyz(coeffs) for name, coeffs in _CAM_XYZ_1E4.items()},
}


def camera_matrix(entry: Matrix3 | str) -> Matrix3:
    """A camera-to-sRGB matrix given as itself or by a name of :data:`CAMERA_MATRICES`.

    Raises:
        ValueError: an unknown name or a matrix that is not 3x3.
    """
    if isinstance(entry, str):
        if entry not in CAMERA_MATRICES:
            known = ", ".join(CAMERA_MATRICES)
            raise ValueError(f"unknown camera matrix {entry!r}; known: {known}")
        return CAMERA_MATRICES[entry]
    return as_matrix3(entry)


#: Above this mean level the inverse white balance fades towards 1, so that inverting it does not
#: push highlights past white (Brooks et al.'s highlight-preserving inversion).
_HIGHLIGHT_START = 0.9


@dataclass(frozen=True)
class UnprocessConfig:
    """Ranges for unprocessing parameters (the red and blue ranges are Brooks et al.'s).

    Attributes:
        red_gain, blue_gain: white-balance gains to invert, uniform.
        brightness_mean, brightness_std: global linear scale, normal, clipped to [0.3, 1.2].
        matrices: camera-to-sRGB matrices of virtual cameras, or names of
            :data:`CAMERA_MATRICES`; a random convex blend of them is used.
        matrix_concentration: how the blend's weights are drawn. ``None``: uniform weights,
            normalised (blends sit near the average matrix); a number: Dirichlet weights of that
            concentration (below 1, most blends sit near one camera, so each camera, the
            identity included, is seen nearly as it is).
        gamma: the transfer curve to invert.
    """

    red_gain: tuple[float, float] = (1.9, 2.4)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    brightness_mean: float = 0.8
    brightness_std: float = 0.1
    matrices: tuple[Matrix3 | str, ...] = (GOPRO_HERO7_RGB_CAM,)
    matrix_concentration: float | None = None
    gamma: GammaCurve = GammaCurve.SRGB

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("red_gain", self.red_gain), ("blue_gain", self.blue_gain)):
            if not 0 < lo <= hi or not math.isfinite(hi):
                raise ValueError(f"{name} must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")
        if not self.matrices:
            raise ValueError("matrices must hold at least one camera-to-sRGB matrix")
        object.__setattr__(self, "matrices", tuple(camera_matrix(m) for m in self.matrices))
        concentration = self.matrix_concentration
        if concentration is not None and not (concentration > 0 and math.isfinite(concentration)):
            raise ValueError(f"matrix_concentration must be > 0, got {concentration}")
        if not self.brightness_mean > 0 or not self.brightness_std >= 0:
            raise ValueError("brightness_mean must be > 0 and brightness_std >= 0")


@dataclass(frozen=True)
class UnprocessParams:
    """One draw of unprocessing parameters: the virtual camera a photo is turned into."""

    rgb_cam: Matrix3
    wb_gains: tuple[float, float, float]
    brightness: float
    gamma: GammaCurve = GammaCurve.SRGB

    def metadata(self, pattern: BayerPattern | str, height: int, width: int) -> RawMetadata:
        """Metadata of the unprocessed mosaic as a raw file in ``raw_lin`` units (white 1)."""
        return RawMetadata.for_bayer(
            pattern,
            height,
            width,
            black_level=0.0,
            white_level=1.0,
            wb_gains=self.wb_gains,
            rgb_cam=self.rgb_cam,
        )


def sample_unprocess_params(config: UnprocessConfig, rng: np.random.Generator) -> UnprocessParams:
    """Draw a virtual camera; the same generator state gives the same draw."""
    count = len(config.matrices)
    if config.matrix_concentration is None:
        weights = rng.uniform(0.0, 1.0, size=count)
        weights = weights / weights.sum()
    else:
        weights = rng.dirichlet(np.full(count, config.matrix_concentration))
    blend = np.tensordot(weights, np.asarray(config.matrices, dtype=float), axes=1)
    # Rows of a camera-to-sRGB matrix sum to one: white stays white after white balance.
    blend = blend / blend.sum(axis=1, keepdims=True)
    red = float(rng.uniform(*config.red_gain))
    blue = float(rng.uniform(*config.blue_gain))
    brightness = float(np.clip(rng.normal(config.brightness_mean, config.brightness_std), 0.3, 1.2))
    return UnprocessParams(
        rgb_cam=as_matrix3(blend),
        wb_gains=(red, 1.0, blue),
        brightness=brightness,
        gamma=config.gamma,
    )


def inverse_color_correct(rgb_lin: np.ndarray, rgb_cam: Matrix3) -> np.ndarray:
    """Linear sRGB ``(3, H, W)`` to white-balanced camera RGB (inverse of the colour matrix)."""
    if rgb_lin.ndim != 3 or rgb_lin.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {rgb_lin.shape}")
    cam_from_rgb = np.linalg.inv(np.asarray(rgb_cam, dtype=np.float64)).astype(np.float32)
    out = (cam_from_rgb @ rgb_lin.reshape(3, -1)).reshape(rgb_lin.shape)
    return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def inverse_white_balance(
    cam: np.ndarray, gains: tuple[float, float, float], brightness: float = 1.0
) -> np.ndarray:
    """Divide each channel by its white-balance gain and scale by ``brightness``.

    Near white, the division fades out (quadratically from mean level 0.9 up to 1), so highlights
    that the forward pipeline clips stay saturated instead of turning coloured.
    """
    if min(gains) <= 0 or brightness <= 0:
        raise ValueError(f"gains and brightness must be positive, got {gains}, {brightness}")
    inv = (brightness / np.asarray(gains, dtype=np.float32))[:, None, None]
    gray = cam.mean(axis=0, keepdims=True)
    mask = (np.clip(gray - _HIGHLIGHT_START, 0.0, None) / (1.0 - _HIGHLIGHT_START)) ** 2
    safe = np.maximum(mask + (1.0 - mask) * inv, inv)
    return np.asarray(cam * safe, dtype=np.float32)


def mosaic(cam: np.ndarray, pattern: BayerPattern | str) -> np.ndarray:
    """Sample a ``(3, H, W)`` camera-RGB image through a Bayer filter: ``(H, W)``."""
    if cam.ndim != 3 or cam.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {cam.shape}")
    idx = color_index_map(pattern, cam.shape[1], cam.shape[2])
    return np.asarray(np.take_along_axis(cam, idx[None].astype(np.intp), axis=0)[0])


def unprocess(
    rgb_srgb: np.ndarray, params: UnprocessParams, pattern: BayerPattern | str = BayerPattern.RGGB
) -> tuple[np.ndarray, RawMetadata]:
    """An sRGB photo to a clean linear raw mosaic and its metadata.

    Args:
        rgb_srgb: ``(3, H, W)`` float in [0, 1], display-encoded.
        params: the virtual camera (see :func:`sample_unprocess_params`).
        pattern: Bayer layout of the result.

    Returns:
        The ``raw_lin`` mosaic ``(H, W)`` float32 in [0, 1] and metadata (black 0, white 1).
    """
    rgb_lin = gamma_decode(rgb_srgb, params.gamma).astype(np.float32)
    cam = inverse_color_correct(rgb_lin, params.rgb_cam)
    cam = inverse_white_balance(cam, params.wb_gains, params.brightness)
    raw_lin = mosaic(cam, pattern)
    _, h, w = rgb_srgb.shape
    return raw_lin, params.metadata(pattern, h, w)
