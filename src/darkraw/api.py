"""One call from a dark raw photo to a bright image: ``darkraw.enhance(path)``.

The same methods as ``darkraw enhance``: the raw denoiser (:mod:`darkraw.nn.rawdenoise`, the
default), the See-in-the-Dark network (Chen et al., CVPR 2018; :mod:`darkraw.nn.infer`) or the
traditional pipeline (:mod:`darkraw.classic.pipeline`). torch is imported only when a network
is used (and OpenCV only for the classic pipeline), so ``import darkraw`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, overload

import numpy as np

from darkraw.raw.fileio import to_hwc
from darkraw.raw.metadata import RawMetadata, as_matrix3
from darkraw.raw.rawio import BareMosaicSpec, pixels_float, read_raw

if TYPE_CHECKING:
    from darkraw.classic.pipeline import ClassicOptions
    from darkraw.nn.enhance import AnyNetwork as Network
    from darkraw.nn.infer import InferenceOptions
    from darkraw.nn.rawdenoise import DenoiseOptions
    from darkraw.synth.noiselevel import RawNoise

#: ``model=`` value that selects the traditional pipeline.
CLASSIC = "classic"

#: Exposure ratios accepted (here and by ``darkraw enhance --ratio``): beyond 10,000 every frame
#: is white (``--ratio 100000`` and ``1e30`` wrote an all-white picture with exit code 0).
RATIO_RANGE = (1.0, 10_000.0)


@dataclass(frozen=True)
class EnhanceInfo:
    """What :func:`enhance` chose, returned with the image when ``return_info=True``.

    Attributes:
        ratio: the amplification used (chosen from the image when ``ratio=None``).
        method: ``"classic"``, ``"sid"`` (a SID U-Net) or ``"raw_denoiser"``.
        noise: the raw denoiser only: the frame's noise level (normalised raw units, per packed
            plane R, G1, B, G2), amplified by the ratio, before the strength.
        strength: the raw denoiser only: the strength it ran with.
        noise_told: the raw denoiser only: the noise level the network was told, ``noise``
            with its standard deviation times ``strength``.
        passes: the raw denoiser only: how many times the network ran over the frame (2: the
            frame and its transpose, averaged; 0 at strength 0).
    """

    ratio: float
    method: Literal["classic", "sid", "raw_denoiser"]
    noise: RawNoise | None = None
    strength: float | None = None
    noise_told: RawNoise | None = None
    passes: int | None = None


@overload
def enhance(
    raw: str | Path | np.ndarray,
    model: str | Path | Network = ...,
    ratio: float | None = ...,
    *,
    strength: float | None = ...,
    noise_profiles: str | Path | None = ...,
    pattern: str | None = ...,
    white_level: float | None = ...,
    black_level: float | tuple[float, float, float, float] = ...,
    wb_gains: tuple[float, float, float] | None = ...,
    color_matrix: Sequence[Sequence[float]] | None = ...,
    inference: InferenceOptions | None = ...,
    denoise: DenoiseOptions | None = ...,
    classic: ClassicOptions | None = ...,
    device: str = ...,
    return_info: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def enhance(
    raw: str | Path | np.ndarray,
    model: str | Path | Network = ...,
    ratio: float | None = ...,
    *,
    strength: float | None = ...,
    noise_profiles: str | Path | None = ...,
    pattern: str | None = ...,
    white_level: float | None = ...,
    black_level: float | tuple[float, float, float, float] = ...,
    wb_gains: tuple[float, float, float] | None = ...,
    color_matrix: Sequence[Sequence[float]] | None = ...,
    inference: InferenceOptions | None = ...,
    denoise: DenoiseOptions | None = ...,
    classic: ClassicOptions | None = ...,
    device: str = ...,
    return_info: Literal[True],
) -> tuple[np.ndarray, EnhanceInfo]: ...


def enhance(
    raw: str | Path | np.ndarray,
    model: str | Path | Network = "default",
    ratio: float | None = None,
    *,
    strength: float | None = None,
    noise_profiles: str | Path | None = None,
    pattern: str | None = None,
    white_level: float | None = None,
    black_level: float | tuple[float, float, float, float] = 0.0,
    wb_gains: tuple[float, float, float] | None = None,
    color_matrix: Sequence[Sequence[float]] | None = None,
    inference: InferenceOptions | None = None,
    denoise: DenoiseOptions | None = None,
    classic: ClassicOptions | None = None,
    device: str = "auto",
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, EnhanceInfo]:
    """Enhance a dark raw photo.

    Args:
        raw: a raw file LibRaw reads (ARW, DNG, NEF, RAF, ...) or a bare mosaic file (``.npy``,
            16-bit PNG/TIFF; give ``pattern`` and ``white_level``), or a Bayer mosaic array in
            DN (give ``pattern`` and ``white_level``; ``black_level`` defaults to 0): 2-D
            ``(H, W)``, or packed ``(h, w, 4)`` as a bare ``.npy`` file may hold it (the four
            positions of the 2x2 tile in raster order).
        model: ``"default"`` (the bundled raw denoiser), ``"sid"`` (the bundled See-in-the-Dark
            U-Net), ``"small"`` (its half-width version), a model file or training checkpoint
            path, a loaded network (to enhance many photos without reloading), or
            ``"classic"`` for the traditional pipeline.
        ratio: amplification (exposure ratio), from 1 to 10,000 (:data:`RATIO_RANGE`);
            ``None`` chooses one from the image (``return_info=True`` says which).
        strength: the raw denoiser's strength (0 leaves the frame as it is, 1 the measured
            noise level, up to 2 to smooth more); overrides ``denoise.strength``.
        pattern: Bayer layout of a bare mosaic: ``RGGB``, ``BGGR``, ``GRBG`` or ``GBRG``.
        white_level: saturation level of a bare mosaic, DN.
        black_level: black level of a bare mosaic, DN (one value or four in the 2x2 tile's
            raster order).
        wb_gains: as-shot white balance (R, G, B multipliers, green 1) of a mosaic array;
            ``None`` estimates it (gray world), as for bare mosaic files.
        color_matrix: camera-to-sRGB 3x3 matrix of a mosaic array, rows summing to 1; ``None``
            is the identity.
        inference: how a SID network runs (tiles, precision, device, self-ensemble); defaults
            if ``None``, which average 8 flipped copies on photos up to 1.56 Mpixel and run one
            pass on larger ones (:func:`darkraw.nn.infer.ensemble_copies`).
        noise_profiles: camera noise profiles for the raw denoiser (a file in darktable's
            ``noiseprofiles.json`` format, or ``"darktable"`` for darktable's own); ``None``
            estimates the noise from the frame itself, as for cameras the profiles lack.
        denoise: how the raw denoiser runs (strength, renderer, tone curve, tiles,
            self-ensemble); defaults if ``None``, which average as many mirrored and turned
            passes as fit in the work of one 12-Mpixel frame (8 up to 1.56 Mpixel, 2 up to
            6.25) and run one pass on larger frames
            (:func:`darkraw.nn.rawdenoise.ensemble_passes`).
        classic: the classic pipeline's settings (its ``ratio`` is replaced by ``ratio``).
        device: where the raw denoiser runs in ONNX Runtime: ``auto`` (an NVIDIA GPU where
            onnxruntime-gpu sees one), ``cpu`` or ``cuda`` (for a SID network, give
            ``inference=InferenceOptions(device=...)``).
        return_info: also return an :class:`EnhanceInfo` saying what was chosen (the ratio,
            and the raw denoiser's noise level and strength).

    Returns:
        ``(H, W, 3)`` float32 sRGB in [0, 1], oriented as the camera recorded; with
        ``return_info=True``, ``(image, info)``.

    Raises:
        DarkrawError: the file cannot be read, or the model cannot be loaded, or the network
            gives NaN or infinite values (broken weights; ``NetworkOutputError``).
        ValueError: a bad array, a ratio outside 1..10,000, a missing
            ``pattern``/``white_level``, or a file that does not fit the model (X-Trans file,
            Bayer model, or the reverse).

    Warns:
        ConstantOutputWarning: a network's result is one colour over the whole frame.
    """
    low, high = RATIO_RANGE
    if ratio is not None and not low <= ratio <= high:
        raise ValueError(f"ratio must be between {low:g} and {high:g} (or None), got {ratio!r}")
    mosaic, meta = _mosaic(raw, pattern, white_level, black_level)
    if wb_gains is not None or color_matrix is not None:
        if not isinstance(raw, np.ndarray):
            raise ValueError("wb_gains= and color_matrix= are for mosaic arrays; files carry them")
        meta = meta.replace(
            wb_gains=None if wb_gains is None else tuple(float(g) for g in wb_gains),
            rgb_cam=None if color_matrix is None else as_matrix3(color_matrix),
        )
    if isinstance(model, str) and model == CLASSIC:
        # Imported here: OpenCV and the denoisers cost time that ``import darkraw`` should not.
        from darkraw.classic.pipeline import ClassicOptions, run_classic

        options = classic or ClassicOptions()
        options = ClassicOptions(
            ratio=ratio,
            denoiser=options.denoiser,
            white_balance=options.white_balance,
            gamma=options.gamma,
        )
        done = run_classic(mosaic, meta, options)
        return _returned(to_hwc(done.image), EnhanceInfo(done.ratio, "classic"), return_info)
    from dataclasses import replace

    from darkraw.nn.enhance import enhance_mosaic, is_denoiser, load_network
    from darkraw.nn.rawdenoise import DenoisedResult, DenoiseOptions
    from darkraw.synth.noiselevel import load_noise_profiles

    network = load_network(
        model, device=device, precision="auto" if denoise is None else denoise.precision.value
    )
    source = None if isinstance(raw, np.ndarray) or meta.source != "LibRaw" else raw
    if not is_denoiser(network):
        if strength is not None or denoise is not None:
            raise ValueError("strength= and denoise= are for the raw denoiser, not a SID model")
        result = enhance_mosaic(mosaic, meta, network, ratio, inference=inference)
        return _returned(to_hwc(result.image), EnhanceInfo(result.ratio, "sid"), return_info)
    if inference is not None:
        raise ValueError("inference= is for SID models; the raw denoiser takes denoise=")
    settings = denoise or DenoiseOptions()
    if strength is not None:
        settings = replace(settings, strength=strength)
    database = None if noise_profiles is None else load_noise_profiles(noise_profiles)
    denoised = enhance_mosaic(
        mosaic, meta, network, ratio, denoise=settings, source=source, database=database
    )
    # A raw denoiser's result, whatever the signature says.
    denoised = cast(DenoisedResult, denoised)
    info = EnhanceInfo(
        ratio=denoised.ratio,
        method="raw_denoiser",
        noise=denoised.noise,
        strength=denoised.strength,
        noise_told=denoised.noise.scaled(denoised.strength),
        passes=denoised.passes,
    )
    # LibRaw's 16-bit pixels become float pixels in one pass; the planes are not needed.
    rgb16 = denoised.rgb16
    image = to_hwc(denoised.image) if rgb16 is None else pixels_float(rgb16)
    return _returned(image, info, return_info)


def _returned(
    image: np.ndarray, info: EnhanceInfo, return_info: bool
) -> np.ndarray | tuple[np.ndarray, EnhanceInfo]:
    return (image, info) if return_info else image


def _mosaic(
    raw: str | Path | np.ndarray,
    pattern: str | None,
    white_level: float | None,
    black_level: float | tuple[float, float, float, float],
) -> tuple[np.ndarray, RawMetadata]:
    if isinstance(raw, np.ndarray):
        if raw.ndim == 3 and raw.shape[-1] == 4:
            raw = _unpack_raster_tiles(raw)
        if raw.ndim != 2 or min(raw.shape) < 2:
            raise ValueError(
                f"expected a 2-D (H, W) mosaic array or a packed (h, w, 4) one, got shape "
                f"{raw.shape}"
            )
        if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
            raise TypeError(f"expected a numeric mosaic array, got {raw.dtype}")
        if pattern is None or white_level is None:
            raise ValueError("a mosaic array needs pattern= and white_level= (and black_level=)")
        meta = RawMetadata.for_bayer(
            pattern, raw.shape[0], raw.shape[1], black_level=black_level, white_level=white_level
        )
        return raw, meta
    bare = None
    if pattern is not None or white_level is not None:
        if pattern is None or white_level is None:
            raise ValueError("a bare mosaic file needs both pattern= and white_level=")
        bare = BareMosaicSpec(pattern=pattern, white_level=white_level, black_level=black_level)
    image = read_raw(raw, bare)
    return image.mosaic, image.meta


def _unpack_raster_tiles(packed: np.ndarray) -> np.ndarray:
    """A packed ``(h, w, 4)`` mosaic, its planes the 2x2 tile's positions in raster order (as
    :func:`darkraw.raw.rawio.read_raw` reads a packed bare ``.npy``), as the ``(2h, 2w)`` mosaic:
    ``mosaic[2i + a, 2j + b] = packed[i, j, 2a + b]``, whatever the Bayer layout."""
    h, w, _ = packed.shape
    return packed.reshape(h, w, 2, 2).transpose(0, 2, 1, 3).reshape(2 * h, 2 * w)
