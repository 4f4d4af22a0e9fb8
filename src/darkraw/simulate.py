"""Simulating dark exposures of a clean raw mosaic.

The exposure model of See-in-the-Dark (Chen et al., CVPR 2018): a short exposure at ratio ``r``
collects ``1/r`` of the light of the long one. Photon arrival is Poisson; the sensor adds
Gaussian read noise and a black-level offset, and the result is quantized to whole DN.
"""

from __future__ import annotations

import numpy as np

from darkraw.metadata import RawMetadata
from darkraw.pipeline import subtract_black_level


def darken_mosaic(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    ratio: float,
    rng: np.random.Generator,
    *,
    gain: float = 1.0,
    read_noise_dn: float = 2.0,
    black_level: float | None = None,
) -> tuple[np.ndarray, RawMetadata]:
    """A dark, noisy exposure of a clean mosaic with ``1/ratio`` of its light.

    Args:
        mosaic_dn: ``(H, W)`` clean mosaic in DN.
        meta: its metadata.
        ratio: exposure ratio (SID uses 100, 250, 300).
        rng: the only source of randomness.
        gain: system gain K in DN per photo-electron; shot noise is ``K * Poisson(signal / K)``.
        read_noise_dn: std of the Gaussian read noise in DN.
        black_level: black level of the dark frame in DN; the clean file's when ``None``.

    Returns:
        The dark mosaic (uint16 DN) and its metadata (new black level, exposure time / ratio).
    """
    if ratio < 1 or not np.isfinite(ratio):
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    if gain <= 0 or read_noise_dn < 0:
        raise ValueError(f"gain must be > 0 and read noise >= 0, got {gain}, {read_noise_dn}")
    raw_lin = np.clip(subtract_black_level(mosaic_dn, meta), 0.0, 1.0)
    black = float(np.mean(meta.black_tile)) if black_level is None else float(black_level)
    span = meta.white_level - black
    electrons = rng.poisson(raw_lin.astype(np.float64) * span / (gain * ratio))
    signal = electrons * gain + rng.normal(0.0, read_noise_dn, size=raw_lin.shape) + black
    dark = np.clip(np.rint(signal), 0, meta.white_level).astype(np.uint16)
    exposure = None if meta.exposure_time is None else meta.exposure_time / ratio
    dark_meta = meta.replace(
        black_tile=tuple(tuple(black for _ in row) for row in meta.black_tile),
        exposure_time=exposure,
    )
    return dark, dark_meta
