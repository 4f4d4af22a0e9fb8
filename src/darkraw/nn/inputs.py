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
from dataclasses import dataclass

import numpy as np

from darkraw.classic.filters import box_mean
from darkraw.classic.pipeline import (
    WhiteBalance,
    choose_gains,
    color_correct_planes,
    pack,
    subtract_black_level,
    white_balance,
)
from darkraw.parallel import thread_map
from darkraw.raw.cfa import XTRANS_PLANE_COLORS
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.noiselevel import RawNoise


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


def denoiser_planes(mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float) -> np.ndarray:
    """A Bayer mosaic as the raw denoiser sees it: in the camera's own colours.

    Black level subtracted, scaled to white 1, packed (R, G1, B, G2), times ``ratio``, and
    clipped above at 1 (what is brighter is white in any rendering). Values below zero are kept:
    the noise around black is part of what the network removes, and clipping it would shift the
    mean of dark areas up. No white balance or colour matrix: noise is independent between raw
    samples and its level is known there, which a colour matrix would mix.

    Returns:
        ``(4, H/2, W/2)`` float32 (odd sizes lose their last row or column of samples).
    """
    h, w = meta.height, meta.width
    if meta.is_xtrans or h % 2 or w % 2 or mosaic_dn.shape != (h, w):
        return amplify(pack(subtract_black_level(mosaic_dn, meta), meta), ratio)
    _check_ratio(ratio)
    # The same float32 arithmetic as the general path, one plane per thread straight from the
    # mosaic's samples: five passes over the whole mosaic and a stack become one per plane.
    black = np.asarray(meta.black_tile, dtype=np.float32)
    white = np.float32(meta.white_level)
    out = np.empty((4, h // 2, w // 2), dtype=np.float32)

    def one(i: int) -> None:
        r, c = meta.bayer_pattern.offsets[i]
        plane, level = out[i], black[r % black.shape[0], c % black.shape[1]]
        np.subtract(mosaic_dn[r::2, c::2], level, out=plane, dtype=np.float32)
        plane /= white - level
        plane *= np.float32(ratio)
        np.minimum(plane, np.float32(1.0), out=plane)

    thread_map(one, range(4), size=mosaic_dn.size)
    return out


def amplify(planes: np.ndarray, ratio: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """Raw planes (white 1) times ``ratio``, clipped above at 1 and not below, float32: the
    raw denoiser's amplification (:func:`denoiser_planes`), for inference and training alike.

    Args:
        out: a float32 array of the planes' shape to write into (it is returned).
    """
    _check_ratio(ratio)
    planes = np.asarray(planes, dtype=np.float32)
    if out is None:
        out = np.empty(planes.shape, dtype=np.float32)
    elif out.shape != planes.shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {planes.shape}, got {out.dtype} {out.shape}")
    scale, top = np.float32(ratio), np.float32(1.0)
    # One plane per thread: a 12-Mpixel frame's planes are 48 MB.
    flat_in = planes.reshape(-1, *planes.shape[-2:]) if planes.ndim >= 2 else planes[None]
    flat_out = out.reshape(flat_in.shape)

    def one(i: int) -> None:
        np.multiply(flat_in[i], scale, out=flat_out[i])
        np.minimum(flat_out[i], top, out=flat_out[i])

    thread_map(one, range(flat_in.shape[0]), size=planes.size)
    return out


def _check_ratio(ratio: float) -> None:
    if not ratio > 0 or not math.isfinite(ratio):
        raise ValueError(f"ratio must be a positive number, got {ratio}")


#: For each packed X-Trans plane (R, R, G, G, G, G, G, B, B) the entry of a
#: :class:`~darkraw.synth.noiselevel.RawNoise` (R, G1, B, G2) that holds its noise: an X-Trans
#: frame's noise is measured per colour and stored with G1 and G2 equal.
XTRANS_NOISE_ENTRIES: tuple[int, ...] = tuple((0, 1, 2)[c] for c in XTRANS_PLANE_COLORS)


def noise_entries(num_planes: int) -> tuple[int, ...]:
    """Which entry of a :class:`~darkraw.synth.noiselevel.RawNoise` each packed plane takes:
    itself for the four Bayer planes, its colour's for the nine X-Trans planes.

    Raises:
        ValueError: neither 4 nor 9 planes.
    """
    if num_planes == 4:
        return (0, 1, 2, 3)
    if num_planes == 9:
        return XTRANS_NOISE_ENTRIES
    raise ValueError(f"expected 4 (Bayer) or 9 (X-Trans) packed planes, got {num_planes}")


def noise_map(planes: np.ndarray, noise: RawNoise) -> np.ndarray:
    """The standard deviation of each packed sample's noise: ``sqrt(shot * s + read)``.

    ``s`` is the signal, estimated as the 3x3 mean of the plane around the sample and at least
    zero: the noisy sample itself would make the map as noisy as the picture.

    Args:
        planes: ``(4, h, w)`` Bayer or ``(9, h, w)`` X-Trans planes as :func:`denoiser_planes`
            gives them (amplified).
        noise: the noise of those planes (already :meth:`~RawNoise.amplified` by the ratio).

    Returns:
        Float32 of the planes' shape, in the planes' units.
    """
    out = np.empty(planes.shape, dtype=np.float32)
    _fill_noise_map(planes, noise, out)
    return out


def _fill_noise_map(planes: np.ndarray, noise: RawNoise, out: np.ndarray) -> None:
    """:func:`noise_map` into ``out``, the planes spread over the CPU's cores."""
    if planes.ndim != 3 or planes.shape[0] not in (4, 9):
        raise ValueError(
            f"expected (4, h, w) Bayer or (9, h, w) X-Trans packed planes, got {planes.shape}"
        )
    entries = noise_entries(planes.shape[0])

    def one(i: int) -> None:
        _noise_std(box_mean(planes[i], 3), noise, entries[i], out[i])

    thread_map(one, range(planes.shape[0]), size=planes.size)


def _noise_std(mean: np.ndarray, noise: RawNoise, entry: int, out: np.ndarray) -> None:
    """``sqrt(shot * s + read)`` of a plane's 3x3 means ``s`` (taken as at least 0) into
    ``out``; ``mean`` is overwritten."""
    np.maximum(mean, 0.0, out=mean)
    mean *= np.float32(noise.shot[entry])
    mean += np.float32(noise.read[entry])
    np.maximum(mean, 0.0, out=mean)
    np.sqrt(mean, out=out)


def xtrans_block_kind(height: int, width: int) -> np.ndarray:
    """``(height, width)`` float32: 1 where a packed X-Trans pixel is a 3x3 block of the kind at
    the tile's top-left corner, -1 where it is of the other kind (red and blue swapped).

    Fujifilm's tile is two kinds of block in a checkerboard, and packing sorts each block's
    samples by colour, so a red or blue plane's sample sits at one place in the first kind and at
    another in the second. A convolution cannot tell the two apart by itself (it does the same
    everywhere); told, it can put each sample where it belongs. :func:`darkraw.classic.pipeline.
    pack` brings every file to the tile of :data:`darkraw.raw.cfa.XTRANS_TILE`, so the kinds mean
    the same in every file and in training.
    """
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    kind: np.ndarray = np.where((rows + cols) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return kind


@dataclass(frozen=True)
class FrameInput:
    """The network's input (:func:`denoiser_input`) made one window at a time, for a frame run
    in windows: only the planes are held for the whole frame, each window's noise map (and an
    X-Trans frame's block kinds) is made when the window is.

    A 12-Mpixel frame's whole input is 97 MB, and making its noise map took 48 MB more: made by
    window, a 61-Mpixel frame's command took 0.15-0.3 GB less and 0.7-1.1 s less, a 12-Mpixel
    one's 25-50 MB less (``docs/speed-log.md``). A window's noise map is the whole frame's at the
    same samples, bit for bit: its 3x3 means take the row and column beyond the window from the
    frame, and the frame's own borders as :func:`noise_map` does (tests).

    Attributes:
        planes: ``(P, h, w)`` float32, the (amplified) planes: the input's first ``P`` channels.
        noise: the noise of the planes, for their map; ``None`` for a blind network's input.
        kinds: whether an X-Trans frame's block kinds (:func:`xtrans_block_kind`) come last.
    """

    planes: np.ndarray
    noise: RawNoise | None
    kinds: bool = False

    @classmethod
    def amplified_in_place(
        cls, planes: np.ndarray, noise: RawNoise, *, with_map: bool = True, ratio: float
    ) -> FrameInput:
        """The input of ``planes`` amplified by ``ratio`` (:func:`amplify`), which are
        overwritten with it: ``denoiser_input(planes, noise, with_map=with_map, ratio=ratio)``
        made window by window, for a caller done with the unamplified planes."""
        if planes.dtype != np.float32 or planes.ndim != 3 or planes.shape[0] not in (4, 9):
            raise ValueError(
                f"expected float32 (4, h, w) Bayer or (9, h, w) X-Trans planes, got "
                f"{planes.dtype} {planes.shape}"
            )
        amplify(planes, ratio, out=planes)
        return cls(planes, noise if with_map else None, kinds=planes.shape[0] == 9)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, h, w)``, the shape of the whole input :func:`denoiser_input` would make."""
        count, h, w = self.planes.shape
        return count * (2 if self.noise is not None else 1) + int(self.kinds), h, w

    def fill(self, rows: slice, cols: slice, out: np.ndarray) -> None:
        """Write the input's window ``[:, rows, cols]`` (slices with steps of 1) into ``out``, a
        float32 ``(C, len(rows), len(cols))`` array: one plane and its map per thread."""
        count, h, w = self.planes.shape
        r0, r1, _ = rows.indices(h)
        c0, c1, _ = cols.indices(w)
        if out.shape != (self.shape[0], r1 - r0, c1 - c0) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {(self.shape[0], r1 - r0, c1 - c0)}")
        noise = self.noise
        entries = noise_entries(count)
        # The 3x3 means of the window's edge samples take one more row and column of the frame.
        a0, a1, b0, b1 = max(r0 - 1, 0), min(r1 + 1, h), max(c0 - 1, 0), min(c1 + 1, w)

        def one(i: int) -> None:
            np.copyto(out[i], self.planes[i, r0:r1, c0:c1])
            if noise is not None:
                mean = box_mean(self.planes[i, a0:a1, b0:b1], 3)
                inside = mean[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
                _noise_std(inside, noise, entries[i], out[count + i])

        thread_map(one, range(count), size=out.size)
        if self.kinds:
            kind = xtrans_block_kind(r1 - r0, c1 - c0)
            out[-1] = kind if (r0 + c0) % 2 == 0 else -kind

    def whole(self) -> np.ndarray:
        """The whole input as one array, as :func:`denoiser_input` makes it."""
        out = np.empty(self.shape, dtype=np.float32)
        self.fill(slice(None), slice(None), out)
        return out


def denoiser_input(
    planes: np.ndarray, noise: RawNoise, *, with_map: bool = True, ratio: float | None = None
) -> np.ndarray:
    """The network's input: the planes, then (``with_map``) their :func:`noise_map`.

    Args:
        planes: ``(4, h, w)`` Bayer or ``(9, h, w)`` X-Trans planes.
        noise: the noise of the planes the network sees (amplified by ``ratio``, if any).
        ratio: amplify the planes first (:func:`amplify`), straight into the input: the
            same values as ``denoiser_input(amplify(planes, ratio), ...)`` without a copy.

    Returns:
        ``(2P, h, w)`` float32 for ``P`` planes (the planes alone for a blind network), and for
        X-Trans one more channel, :func:`xtrans_block_kind`; its first ``P`` channels are the
        (amplified) planes.
    """
    planes = np.asarray(planes, dtype=np.float32)
    count = planes.shape[0]
    kinds = int(count == 9)
    channels = count * (2 if with_map else 1) + kinds
    out = np.empty((channels, *planes.shape[1:]), dtype=np.float32)
    if ratio is None:
        out[:count] = planes
    else:
        amplify(planes, ratio, out=out[:count])
    if with_map:
        _fill_noise_map(out[:count], noise, out[count : 2 * count])
    if kinds:
        out[-1] = xtrans_block_kind(*planes.shape[1:])
    return out
