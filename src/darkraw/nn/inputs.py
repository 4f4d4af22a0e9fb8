"""A raw mosaic as a network sees it: SID's recipe (Chen et al., CVPR 2018), then the file's colour.

Black level subtracted, scaled to white 1, packed, times the exposure ratio (SID); then the
file's white balance and colour matrix, as the classic pipeline does. SID trains one network per
camera, which learns that camera's colour rendering; one network for every camera cannot guess a
file's white balance from the pixels (a network fed raw colours tinted GoPro and phone files
red), while the file states it. Training and inference both prepare input here, so the two never
disagree.
"""

from __future__ import annotations

import math

import numpy as np

from darkraw.classic.pipeline import (
    WhiteBalance,
    choose_gains,
    color_correct_planes,
    pack,
    subtract_black_level,
    white_balance,
)
from darkraw.raw.metadata import RawMetadata


def network_input(mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float) -> np.ndarray:
    """A raw mosaic as the network sees it: SID's recipe, then the file's colour.

    Black level subtracted, scaled to white 1, packed, times ``ratio``; then the as-shot white
    balance (gray world when the file has none), clipped to [0, 1] as the classic pipeline does,
    and the colour matrix (:func:`~darkraw.classic.pipeline.color_correct_planes`), so the
    network sees linear sRGB primaries sampled on the CFA whatever the camera.

    Args:
        mosaic_dn: ``(H, W)`` in DN.
        meta: its metadata.
        ratio: amplification (exposure ratio).

    Returns:
        ``(4, h, w)`` (Bayer, R G1 B G2) or ``(9, h, w)`` (X-Trans) float32 in [0, 1].
    """
    return network_input_and_gains(mosaic_dn, meta, ratio)[0]


def network_input_and_gains(
    mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """:func:`network_input`, and the white-balance gains it applied (which a raw-output
    network's planes need to be taken back to camera raw)."""
    if not ratio > 0 or not math.isfinite(ratio):
        raise ValueError(f"ratio must be a positive number, got {ratio}")
    raw_lin = subtract_black_level(mosaic_dn, meta) * np.float32(ratio)
    planes = pack(raw_lin, meta)
    gains = choose_gains(planes, meta, WhiteBalance.CAMERA)
    planes = white_balance(planes, gains)
    matrix = None if meta.rgb_cam is None else np.asarray(meta.rgb_cam)
    return np.asarray(color_correct_planes(planes, matrix), dtype=np.float32), gains
