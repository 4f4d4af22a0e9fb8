"""The traditional camera pipeline of the seed (Figure 1, top), one pure function per step.

Black level -> amplification by the exposure ratio -> denoising -> white balance -> demosaicing
-> colour correction to sRGB -> gamma. The forward steps mirror the "unprocessing" of Brooks et
al. (CVPR 2019). Demosaicing of Bayer mosaics is the gradient-corrected bilinear interpolation of
Malvar, He & Cutler (ICASSP 2004); X-Trans is interpolated by normalized convolution.

Arrays are channel-first: a mosaic is ``(H, W)``, packed planes ``(C, h, w)``, an image
``(3, H, W)``; ``raw_lin`` means black subtracted and scaled so that white is 1.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from darkraw import progress
from darkraw.choices import parse_choice
from darkraw.classic.denoise import Denoiser, denoise_planes, resolve_denoiser
from darkraw.classic.filters import filter2d
from darkraw.raw.cfa import (
    BayerPattern,
    cfa_canvas,
    pack_bayer,
    pack_xtrans,
    pad_to_multiple,
    plane_colors,
    unpack_bayer,
    unpack_xtrans,
    xtrans_phase,
)
from darkraw.raw.metadata import RawMetadata, tile_tuple


class GammaCurve(enum.Enum):
    """Transfer curves from linear light to display values."""

    #: IEC 61966-2-1 sRGB.
    SRGB = "srgb"
    #: ITU-R BT.709, LibRaw's default (gamma 2.222, toe slope 4.5): SID's ground truth uses it.
    BT709 = "bt709"

    @classmethod
    def parse(cls, name: str | GammaCurve) -> GammaCurve:
        return parse_choice(cls, name, "gamma curve")


class WhiteBalance(enum.Enum):
    """Where white-balance gains come from."""

    CAMERA = "camera"
    GRAY_WORLD = "gray"
    NONE = "none"

    @classmethod
    def parse(cls, name: str | WhiteBalance) -> WhiteBalance:
        return parse_choice(cls, name, "white balance")


#: ``--ratio auto`` brings the mean of the black-subtracted raw to this level (a typical
#: well-exposed raw photo, e.g. the GoPro files in the development data, sits near 0.09).
AUTO_TARGET_MEAN = 0.09
#: Bounds for the automatic ratio.
AUTO_RATIO_RANGE = (1.0, 1000.0)


def subtract_black_level(mosaic_dn: np.ndarray, meta: RawMetadata) -> np.ndarray:
    """Sensor DN to ``raw_lin``: subtract each CFA position's black level, scale white to 1.

    Args:
        mosaic_dn: ``(H, W)`` in DN.

    Returns:
        ``(H, W)`` float32; not clipped, so noise below black keeps its zero mean.
    """
    if mosaic_dn.shape != (meta.height, meta.width):
        raise ValueError(
            f"mosaic shape {mosaic_dn.shape} differs from metadata {meta.height}x{meta.width}"
        )
    black = black_level_map(meta)
    raw_lin: np.ndarray = (mosaic_dn.astype(np.float32) - black) / (
        np.float32(meta.white_level) - black
    )
    return raw_lin


def black_level_map(meta: RawMetadata) -> np.ndarray:
    """The black level of every pixel, ``(H, W)`` float32 DN: the CFA tile's levels repeated."""
    black_tile = np.asarray(meta.black_tile, dtype=np.float32)
    p = meta.period
    reps = (-(-meta.height // p), -(-meta.width // p))
    black: np.ndarray = np.tile(black_tile, reps)[: meta.height, : meta.width]
    return black


def pack(raw_lin: np.ndarray, meta: RawMetadata) -> np.ndarray:
    """Pad a ``(H, W)`` mosaic to whole CFA tiles and pack it: ``(4, h, w)`` or ``(9, h, w)``.

    An X-Trans mosaic whose tile starts where its 3x3 blocks are not packable gets the rows and
    columns it lacks put before it first (:func:`~darkraw.raw.cfa.xtrans_phase`);
    :func:`unpack` takes them off again."""
    if meta.is_xtrans:
        rows, cols = xtrans_phase(meta.cfa_tile)
        canvas = cfa_canvas(raw_lin, rows, cols)
        return pack_xtrans(canvas, np.roll(meta.cfa_tile, (rows, cols), (0, 1)))
    padded, _ = pad_to_multiple(raw_lin, meta.period)
    return pack_bayer(padded, meta.bayer_pattern)


def _mirrored(array: np.ndarray, flips: tuple[bool, bool]) -> np.ndarray:
    """``array`` mirrored over its last two axes: (vertical, horizontal)."""
    flip_v, flip_h = flips
    out = array[..., ::-1, :] if flip_v else array
    return np.ascontiguousarray(out[..., ::-1] if flip_h else out)


@dataclass(frozen=True)
class RGGBView:
    """A Bayer mosaic mirrored to the RGGB layout (:func:`rggb_view`), and how to go back.

    Attributes:
        mosaic: the mosaic, padded to an even size and mirrored.
        meta: its metadata: RGGB, the black levels mirrored alike, the padded size, no
            orientation (the caller orients what it renders from the original metadata).
        flips: (vertical, horizontal) mirrorings applied.
        shape: the original ``(H, W)``.
    """

    mosaic: np.ndarray
    meta: RawMetadata
    flips: tuple[bool, bool]
    shape: tuple[int, int]

    def mirror(self, image: np.ndarray) -> np.ndarray:
        """A ``(C, H, W)`` image of the original mosaic's size or of the padded size, padded
        as the mosaic was and mirrored as it was (or back: each mirroring is its own
        inverse)."""
        if image.shape[-2:] != self.mosaic.shape:
            period = self.meta.period
            image = np.stack([pad_to_multiple(np.asarray(c), period)[0] for c in image])
        if image.shape[-2:] != self.mosaic.shape:
            raise ValueError(f"image {image.shape} does not fit the mosaic {self.mosaic.shape}")
        return _mirrored(image, self.flips)

    def undo(self, image: np.ndarray) -> np.ndarray:
        """A ``(C, H', W')`` image rendered from :attr:`mosaic`, mirrored back and cropped to
        the original mosaic's size."""
        return self.mirror(image)[..., : self.shape[0], : self.shape[1]]


def rggb_view(mosaic: np.ndarray, meta: RawMetadata) -> RGGBView:
    """A Bayer mosaic mirrored so that its layout is RGGB (:attr:`BayerPattern.rggb_flips`).

    It is padded to an even size first (repeating the last tile's colours), so that mirroring
    moves each tile as a whole. X-Trans mosaics are only padded to whole tiles.
    """
    padded, shape = pad_to_multiple(np.asarray(mosaic), meta.period)
    size = {"height": padded.shape[0], "width": padded.shape[1], "flip": 0}
    if meta.is_xtrans:
        return RGGBView(padded, meta.replace(**size), (False, False), shape)
    flips = meta.bayer_pattern.rggb_flips
    view = meta.replace(
        cfa_tile=tile_tuple(BayerPattern.RGGB.tile, int),
        black_tile=tile_tuple(_mirrored(np.asarray(meta.black_tile), flips), float),
        **size,
    )
    return RGGBView(_mirrored(padded, flips), view, flips, shape)


def unpack(planes: np.ndarray, meta: RawMetadata) -> np.ndarray:
    """Inverse of :func:`pack`, cropped back to the metadata's ``(H, W)``."""
    if meta.is_xtrans:
        rows, cols = xtrans_phase(meta.cfa_tile)
        mosaic = unpack_xtrans(planes, np.roll(meta.cfa_tile, (rows, cols), (0, 1)))
        return mosaic[..., rows : rows + meta.height, cols : cols + meta.width]
    mosaic = unpack_bayer(planes, meta.bayer_pattern)
    return mosaic[: meta.height, : meta.width]


#: About how many values :func:`auto_ratio` looks at: every ``n // AUTO_RATIO_SAMPLES``-th.
AUTO_RATIO_SAMPLES = 1_000_000


def auto_ratio_step(size: int) -> int:
    """The stride :func:`auto_ratio` samples ``size`` flattened values at (1 up to about
    :data:`AUTO_RATIO_SAMPLES` values); a sample taken at it is not sampled again (its size
    is below twice the target, so its own stride is 1)."""
    return max(1, size // AUTO_RATIO_SAMPLES) if size > AUTO_RATIO_SAMPLES else 1


def sampled_raw_lin(
    mosaic_dn: np.ndarray, meta: RawMetadata, less: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """:func:`subtract_black_level` of only the values :func:`auto_ratio` looks at, and their
    stride: ``auto_ratio(sampled_raw_lin(m, meta)[0]) == auto_ratio(subtract_black_level(m,
    meta))`` at a twelfth of the work for a 12-Mpixel mosaic.

    Args:
        less: a tile repeated over the mosaic, in shares of white, taken from each value after
            the black level (a black-level offset per colour): ``tile[row % h, col % w]``.
    """
    if mosaic_dn.shape != (meta.height, meta.width):
        raise ValueError(
            f"mosaic shape {mosaic_dn.shape} differs from metadata {meta.height}x{meta.width}"
        )
    step = auto_ratio_step(mosaic_dn.size)
    index = np.arange(0, mosaic_dn.size, step)
    rows, cols = np.divmod(index, meta.width)
    tile = np.asarray(meta.black_tile, dtype=np.float32)
    black = tile[rows % tile.shape[0], cols % tile.shape[1]]
    dn = np.asarray(mosaic_dn).ravel()[::step].astype(np.float32)
    values: np.ndarray = (dn - black) / (np.float32(meta.white_level) - black)
    if less is not None:
        values -= less[rows % less.shape[0], cols % less.shape[1]]
    return values, step


def auto_ratio(raw_lin: np.ndarray, target_mean: float = AUTO_TARGET_MEAN) -> float:
    """An amplification ratio that brings the mean signal to ``target_mean``.

    The brightest 1 % of pixels (lamps, specular highlights) is left out of the mean, so that a
    light source in a dark scene does not keep the rest of it dark.
    """
    values = np.asarray(raw_lin, dtype=np.float32).ravel()
    values = values[:: auto_ratio_step(values.size)]
    top = np.quantile(values, 0.99)
    mean = float(np.mean(np.clip(values[values <= top], 0.0, None)))
    lo, hi = AUTO_RATIO_RANGE
    if mean <= 0:
        return hi
    return float(np.clip(target_mean / mean, lo, hi))


def amplify(raw_lin: np.ndarray, ratio: float) -> np.ndarray:
    """Multiply by the exposure ratio (the digital gain SID applies to its input)."""
    if not np.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"ratio must be a positive number, got {ratio}")
    return raw_lin * np.float32(ratio)


def gray_world_gains(planes: np.ndarray) -> tuple[float, float, float]:
    """White-balance gains (R, G, B), green = 1, that make the planes' channel means equal.

    Values below zero are kept: in a dark frame they are read noise around black, and clipping
    them would lift the mean of the weakest channel (often blue) and leave a colour cast. Values
    above 1 are clipped, as the sensor clips them.
    """
    colors = np.asarray(plane_colors(planes.shape[0]))
    means = [float(np.mean(np.minimum(planes[colors == c], 1.0))) for c in range(3)]
    if min(means) <= 0:
        return (1.0, 1.0, 1.0)
    return (means[1] / means[0], 1.0, means[1] / means[2])


def white_balance(planes: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    """Multiply each packed plane by its colour's gain and clip to [0, 1].

    The clip mirrors LibRaw: a channel saturated by the gain stays white, not pink.

    Args:
        planes: ``(C, h, w)`` with C 4 (Bayer) or 9 (X-Trans), ``raw_lin`` scale.
    """
    colors = plane_colors(planes.shape[0])
    g = np.asarray([gains[c] for c in colors], dtype=np.float32)[:, None, None]
    return np.clip(planes * g, 0.0, 1.0)


def color_correct_planes(planes: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """:func:`color_correct` on packed planes, without demosaicing, clipped to [0, 1].

    Each plane keeps its own samples for its colour and takes the other two colours from the
    mean of their planes in the same packed pixel (a 2x2 or 6x6 neighbourhood of the mosaic), so
    the result is the colour-corrected image sampled on the CFA.

    Args:
        planes: ``(C, h, w)`` white-balanced, C 4 (Bayer) or 9 (X-Trans).
        matrix: camera-to-sRGB, rows summing to 1; ``None`` means identity (planes only clipped).
    """
    if matrix is None:
        return np.asarray(np.clip(planes, 0.0, 1.0), dtype=np.float32)
    colors = np.asarray(plane_colors(planes.shape[0]))
    m = np.asarray(matrix, dtype=np.float32)
    means = [planes[colors == c].mean(axis=0) for c in range(3)]
    out = np.empty(planes.shape, dtype=np.float32)
    for i, c in enumerate(colors):
        others = sum(m[c, k] * means[k] for k in range(3) if k != c)
        out[i] = m[c, c] * planes[i] + others
    return np.clip(out, 0.0, 1.0)


def uncorrect_planes(
    planes: np.ndarray, matrix: np.ndarray | None, gains: tuple[float, float, float]
) -> np.ndarray:
    """Undo :func:`color_correct_planes` and :func:`white_balance`: camera raw planes again.

    Within each packed pixel the colour means go through the matrix (``means_out = M @
    means_in``), so they come back through its inverse, and each plane's own samples then
    follow; dividing by the gains undoes the white balance. Exact for values the two steps did
    not clip.

    Args:
        planes: ``(C, h, w)`` as :func:`color_correct_planes` returns them.
        matrix: the camera-to-sRGB matrix it was given (``None``: identity).
        gains: the white-balance gains (R, G, B) it was given.
    """
    colors = np.asarray(plane_colors(planes.shape[0]))
    out = np.asarray(planes, dtype=np.float32).copy()
    if matrix is not None:
        m = np.asarray(matrix, dtype=np.float64)
        means = np.stack([out[colors == c].mean(axis=0) for c in range(3)])
        original = np.tensordot(np.linalg.inv(m), means, axes=1).astype(np.float32)
        for i, c in enumerate(colors):
            others = sum(np.float32(m[c, k]) * original[k] for k in range(3) if k != c)
            out[i] = (out[i] - others) / np.float32(m[c, c])
    g = np.asarray([gains[c] for c in colors], dtype=np.float32)[:, None, None]
    return out / g


def _malvar_kernels() -> dict[str, np.ndarray]:
    """The four 5x5 filters of Malvar-He-Cutler demosaicing, normalized to unit sum."""
    g_at_rb = np.array(
        [
            [0, 0, -1, 0, 0],
            [0, 0, 2, 0, 0],
            [-1, 2, 4, 2, -1],
            [0, 0, 2, 0, 0],
            [0, 0, -1, 0, 0],
        ],
        dtype=np.float32,
    )
    # Red at a green pixel whose left and right neighbours are red.
    row = np.array(
        [
            [0, 0, 0.5, 0, 0],
            [0, -1, 0, -1, 0],
            [-1, 4, 5, 4, -1],
            [0, -1, 0, -1, 0],
            [0, 0, 0.5, 0, 0],
        ],
        dtype=np.float32,
    )
    diag = np.array(
        [
            [0, 0, -1.5, 0, 0],
            [0, 2, 0, 2, 0],
            [-1.5, 0, 6, 0, -1.5],
            [0, 2, 0, 2, 0],
            [0, 0, -1.5, 0, 0],
        ],
        dtype=np.float32,
    )
    return {"g": g_at_rb / 8, "row": row / 8, "col": row.T / 8, "diag": diag / 8}


_MALVAR = _malvar_kernels()


def demosaic_bayer(mosaic: np.ndarray, pattern: BayerPattern | str) -> np.ndarray:
    """Malvar-He-Cutler demosaicing of a Bayer mosaic.

    Args:
        mosaic: ``(H, W)`` float32, H and W even.

    Returns:
        ``(3, H, W)`` float32 camera RGB; the measured samples are kept exactly.
    """
    pattern = BayerPattern.parse(pattern)
    mosaic = np.ascontiguousarray(mosaic, dtype=np.float32)
    _check_even(mosaic)
    # Reflecting about the edge pixel (not repeating it) keeps the CFA phase at the border.
    filt = {name: filter2d(mosaic, k) for name, k in _MALVAR.items()}
    # Which image gives each channel at each CFA site (R, G1, B, G2), written straight into
    # the output: packing and unpacking whole planes cost more than the filters.
    sources = (
        (mosaic, filt["row"], filt["diag"], filt["col"]),
        (filt["g"], mosaic, filt["g"], mosaic),
        (filt["diag"], filt["col"], mosaic, filt["row"]),
    )
    out = np.empty((3, *mosaic.shape), dtype=np.float32)
    for channel, per_site in enumerate(sources):
        for (r, c), source in zip(pattern.offsets, per_site, strict=True):
            out[channel, r::2, c::2] = source[r::2, c::2]
    return out


def _check_even(mosaic: np.ndarray) -> None:
    if mosaic.ndim != 2 or min(mosaic.shape) < 2 or mosaic.shape[0] % 2 or mosaic.shape[1] % 2:
        raise ValueError(f"expected an (H, W) mosaic with H and W even, got {mosaic.shape}")


def demosaic_xtrans(mosaic: np.ndarray, tile: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """Demosaic an X-Trans mosaic by normalized convolution with a 5x5 tent kernel.

    Args:
        mosaic: ``(H, W)`` float32, H and W multiples of 6.

    Returns:
        ``(3, H, W)`` float32 camera RGB; the measured samples are kept exactly.
    """
    mosaic = np.ascontiguousarray(mosaic, dtype=np.float32)
    h, w = mosaic.shape
    colors = np.tile(np.asarray(tile), (h // 6, w // 6))
    tent = np.array([1, 2, 3, 2, 1], dtype=np.float32)
    kernel = np.outer(tent, tent)
    out = np.empty((3, h, w), dtype=np.float32)
    for c in range(3):
        mask = (colors == c).astype(np.float32)
        num = filter2d(mosaic * mask, kernel)
        den = filter2d(mask, kernel)
        out[c] = np.where(mask > 0, mosaic, num / np.maximum(den, 1e-6))
    return out


def demosaic(mosaic: np.ndarray, meta: RawMetadata) -> np.ndarray:
    """Demosaic a ``(H, W)`` ``raw_lin`` mosaic of any size into ``(3, H, W)`` camera RGB."""
    padded, (h, w) = pad_to_multiple(np.asarray(mosaic, dtype=np.float32), meta.period)
    if meta.is_xtrans:
        rgb = demosaic_xtrans(padded, meta.cfa_tile)
    else:
        rgb = demosaic_bayer(padded, meta.bayer_pattern)
    return rgb[:, :h, :w]


def color_correct(rgb_cam: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """Camera RGB to linear sRGB by a 3x3 matrix, clipped to [0, 1].

    Args:
        rgb_cam: ``(3, H, W)`` white-balanced camera RGB.
        matrix: camera-to-sRGB, rows summing to 1; ``None`` means identity.
    """
    if rgb_cam.ndim != 3 or rgb_cam.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {rgb_cam.shape}")
    out = rgb_cam
    if matrix is not None:
        m = np.asarray(matrix, dtype=np.float32)
        out = (m @ rgb_cam.reshape(3, -1)).reshape(rgb_cam.shape)
    return np.asarray(np.clip(out, 0.0, 1.0))


def gamma_encode(rgb_lin: np.ndarray, curve: GammaCurve | str = GammaCurve.BT709) -> np.ndarray:
    """Linear light in [0, 1] to display values in [0, 1]."""
    curve = GammaCurve.parse(curve)
    x = np.clip(rgb_lin, 0.0, 1.0)
    if curve is GammaCurve.SRGB:
        return np.asarray(np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055))
    # BT.709 constants that make the curve and its slope continuous at the toe.
    alpha, beta = 1.09929682680944, 0.018053968510807
    return np.asarray(np.where(x < beta, 4.5 * x, alpha * np.power(x, 0.45) - (alpha - 1)))


def gamma_decode(rgb: np.ndarray, curve: GammaCurve | str = GammaCurve.BT709) -> np.ndarray:
    """Inverse of :func:`gamma_encode`."""
    curve = GammaCurve.parse(curve)
    v = np.clip(rgb, 0.0, 1.0)
    if curve is GammaCurve.SRGB:
        return np.asarray(np.where(v <= 0.04045, v / 12.92, np.power((v + 0.055) / 1.055, 2.4)))
    alpha, beta = 1.09929682680944, 0.018053968510807
    return np.asarray(
        np.where(v < 4.5 * beta, v / 4.5, np.power((v + alpha - 1) / alpha, 1 / 0.45))
    )


def orient(image: np.ndarray, flip: int) -> np.ndarray:
    """Apply a LibRaw orientation code to a ``(C, H, W)`` image, as LibRaw does on output."""
    # LibRaw mirrors the sensor image first and transposes the result (dcraw's flip_index).
    out = image
    if flip & 2:
        out = out[..., ::-1, :]
    if flip & 1:
        out = out[..., :, ::-1]
    if flip & 4:
        out = np.swapaxes(out, -1, -2)
    return np.ascontiguousarray(out)


def unorient(image: np.ndarray, flip: int) -> np.ndarray:
    """Undo :func:`orient`: a rendered ``(C, H', W')`` image back to sensor orientation."""
    out = np.swapaxes(image, -1, -2) if flip & 4 else image
    if flip & 1:
        out = out[..., :, ::-1]
    if flip & 2:
        out = out[..., ::-1, :]
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class ClassicOptions:
    """Settings of the traditional pipeline.

    Attributes:
        ratio: amplification (exposure ratio); ``None`` chooses one with :func:`auto_ratio`.
        denoiser: ``auto``, ``bm3d``, ``nlm`` or ``none``.
        white_balance: ``camera`` (as shot; gray world if the file has none), ``gray``, ``none``.
        gamma: ``bt709`` (LibRaw's, default) or ``srgb``.
    """

    ratio: float | None = 1.0
    denoiser: Denoiser = Denoiser.AUTO
    white_balance: WhiteBalance = WhiteBalance.CAMERA
    gamma: GammaCurve = GammaCurve.BT709


@dataclass(frozen=True)
class ClassicResult:
    """The rendered image and the choices the pipeline made."""

    image: np.ndarray
    ratio: float
    wb_gains: tuple[float, float, float]
    denoiser: Denoiser


def run_classic(
    mosaic_dn: np.ndarray, meta: RawMetadata, options: ClassicOptions = ClassicOptions()
) -> ClassicResult:
    """Render a (dark) raw mosaic with the traditional pipeline.

    Args:
        mosaic_dn: ``(H, W)`` in DN.
        meta: its metadata.

    Returns:
        A :class:`ClassicResult` whose ``image`` is ``(3, H', W')`` gamma-encoded in [0, 1],
        oriented as the camera recorded (H', W' swap for portrait orientations).
    """
    raw_lin = subtract_black_level(mosaic_dn, meta)
    ratio = auto_ratio(raw_lin) if options.ratio is None else float(options.ratio)
    planes = pack(amplify(raw_lin, ratio), meta)
    denoiser = resolve_denoiser(options.denoiser, planes.size)
    with progress.part(f"denoising ({denoiser.value.upper()})"):
        planes = denoise_planes(planes, denoiser)
    gains = choose_gains(planes, meta, options.white_balance)
    image = render_planes(planes, meta, gains, options.gamma)
    return ClassicResult(image=image, ratio=ratio, wb_gains=gains, denoiser=denoiser)


def render_planes(
    planes: np.ndarray,
    meta: RawMetadata,
    gains: tuple[float, float, float],
    gamma: GammaCurve = GammaCurve.BT709,
) -> np.ndarray:
    """The classic pipeline after denoising: white balance, demosaic, colour matrix, gamma.

    Args:
        planes: ``(C, h, w)`` packed, black-subtracted and amplified raw (denoised or not).
        meta: the file's metadata (CFA, colour matrix, size, orientation).
        gains: white-balance gains (R, G, B), e.g. from :func:`choose_gains`.

    Returns:
        The ``(3, H', W')`` gamma-encoded image in [0, 1], oriented.
    """
    balanced = white_balance(planes, gains)
    rgb_cam = demosaic(unpack(balanced, meta), meta)
    matrix = None if meta.rgb_cam is None else np.asarray(meta.rgb_cam)
    rgb_lin = color_correct(rgb_cam, matrix)
    return orient(gamma_encode(rgb_lin, gamma).astype(np.float32), meta.flip)


def choose_gains(
    planes: np.ndarray, meta: RawMetadata, mode: WhiteBalance
) -> tuple[float, float, float]:
    """White-balance gains for ``mode``: ``camera`` is the file's as-shot gains (gray world on
    ``planes`` when it has none), ``gray`` gray world, ``none`` unit gains."""
    if mode is WhiteBalance.NONE:
        return (1.0, 1.0, 1.0)
    if mode is WhiteBalance.CAMERA and meta.wb_gains is not None:
        return meta.wb_gains
    return gray_world_gains(planes)
