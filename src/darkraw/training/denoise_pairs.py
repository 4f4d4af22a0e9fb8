"""Training pairs for the raw denoiser: noisy packed planes with their noise map, clean planes.

One network for every camera and exposure needs noise from many cameras at many levels
(LED, Jin et al., ICCV 2023, pre-trains on several virtual cameras; Ansel's denoiser draws from
darktable's profiles of hundreds of cameras). Each pair here draws its camera afresh:

- with probability ``calibrated_fraction`` one of ELD's calibrated cameras (Wei et al., CVPR
  2020: shot noise through the system gain, Tukey-lambda read noise, row noise, quantisation;
  :func:`darkraw.synth.simulate.darken_calibrated`, its colour bias taken out again);
- otherwise a virtual Poisson-Gaussian camera: shot noise ``a`` (1 / full well in electrons,
  from a full-frame sensor at base ISO to a phone at high gain), read noise of 0.5-20 electrons,
  a 10-, 12- or 14-bit converter, and a black level that keeps the noise around black or (as in
  the GoPro files, stored black-subtracted) clips it at zero.

The exposure ratio is log-uniform in ``ratios`` (1 is a well-lit frame, which must pass through
unharmed). The clean frame is a photo unprocessed into raw (Brooks et al., CVPR 2019) through
:class:`~darkraw.training.dataset.SyntheticPairs`' sources, seen as RGGB, or (``cfa: xtrans``)
sampled on Fujifilm's X-Trans layout and packed into its nine planes. The network is told
the Poisson-Gaussian level of the noise it gets (its total variance, read, row and quantisation
together), off by a random factor of about 20 %, as a frame's estimate or a camera's profile
would be. With ``told_factor_fraction`` > 0 a share of the pairs is told more than that: the
standard deviation times a factor drawn log-uniformly from ``told_factor`` (e.g. 1-2.5), the
target still the clean frame, so that a network told more noise than its input has (``--strength``
above 1) smooths more instead of making artefacts it never saw in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from darkraw.classic.pipeline import pack, rggb_view
from darkraw.errors import DarkrawError
from darkraw.nn.inputs import denoiser_input
from darkraw.raw.cfa import XTRANS_TILE, cfa_colours, pack_xtrans
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.noise import (
    CalibratedNoiseParams,
    NoiseProfile,
    ReadNoise,
    calibrated_mosaic_noise,
    load_profile,
    sample_calibrated_params,
)
from darkraw.synth.noiselevel import RawNoise
from darkraw.synth.simulate import darken_calibrated
from darkraw.synth.sources import SourceKind, camera_rgb, source_kind, unit_levels
from darkraw.synth.unprocess import sample_unprocess_params
from darkraw.training.dataset import PairConfig, SyntheticPairs

#: The colour filter arrays a denoiser trains for: Bayer (every layout seen as RGGB, four
#: packed planes) and X-Trans (nine packed planes).
CFAS = ("bayer", "xtrans")

#: ELD's five calibrated cameras, bundled with darkraw.
ELD_CAMERAS = ("SonyA7S2", "NikonD850", "CanonEOS5D4", "CanonEOS70D", "CanonEOS700D")


@dataclass(frozen=True)
class DenoisePairConfig:
    """What a denoising pair is.

    Attributes:
        crop: source pairs: crop size (``crop.patch``, packed), smoothing of photos and how
            photos become raw (``crop.sources``); its noise settings are not used.
        ratios: range of the exposure ratio, drawn log-uniformly.
        calibrated_fraction: share of pairs with an ELD camera's calibrated noise.
        cameras: the ELD cameras drawn from.
        shot: range of a virtual camera's shot-noise variance per unit signal (white = 1)
            before amplification, drawn log-uniformly; 2e-5 is a 50,000-electron full well.
        max_amplified_shot: cap on ``ratio * shot``: at 0.2 a sample amplified to 0.1 holds
            half an electron; ELD's cameras reach 0.1-0.5 at x300 and their highest gain.
        read_electrons: range of a virtual camera's read noise in electrons at base gain; the
            top of the range shrinks as the gain rises (``sqrt(shot / 2e-5)``, down to 2 e-),
            as on real sensors, where read noise in electrons falls with the analogue gain.
        bits: converter resolutions drawn from.
        clip_black_fraction: share of virtual cameras whose values are clipped at black.
        told_error: standard deviation of the log of the factor the told noise level (its
            variance) is off by.
        told_factor: range of a further factor on the told noise's standard deviation, drawn
            log-uniformly for a share ``told_factor_fraction`` of the pairs (the target stays
            the clean frame): telling the network more noise than there is (``--strength``
            above 1) then asks it to smooth more, as it was trained to.
        told_factor_fraction: share of pairs told with a ``told_factor``; 0 (the default) draws
            nothing, so pairs are exactly those of a config without it.
        cfa: ``bayer`` (RGGB crops of ``2 * crop.patch`` pixels, four planes) or ``xtrans``
            (crops of ``3 * crop.patch`` pixels on Fujifilm's X-Trans layout as every file is
            packed, nine planes and the block kinds; photos only).
        target: clean ``(P, p, p)`` planes, amplified like the input.
    """

    crop: PairConfig = field(default_factory=PairConfig)
    ratios: tuple[float, float] = (1.0, 300.0)
    calibrated_fraction: float = 0.4
    cameras: tuple[str, ...] = ELD_CAMERAS
    shot: tuple[float, float] = (2e-5, 1e-2)
    max_amplified_shot: float = 0.2
    read_electrons: tuple[float, float] = (0.5, 20.0)
    bits: tuple[int, ...] = (10, 12, 14)
    clip_black_fraction: float = 0.3
    told_error: float = 0.2
    told_factor: tuple[float, float] = (1.0, 1.0)
    told_factor_fraction: float = 0.0
    cfa: str = "bayer"

    def __post_init__(self) -> None:
        if self.cfa not in CFAS:
            raise ValueError(f"cfa must be one of {', '.join(CFAS)}, got {self.cfa!r}")
        low, high = self.ratios
        if not 1 <= low <= high or not math.isfinite(high):
            raise ValueError(f"ratios must be 1 <= low <= high, got {self.ratios}")
        for name in ("calibrated_fraction", "clip_black_fraction", "told_factor_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("shot", "read_electrons", "told_factor"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi or not math.isfinite(hi):
                raise ValueError(f"{name} must be 0 < low <= high, got {(lo, hi)}")
        if not self.max_amplified_shot > 0 or not self.told_error >= 0:
            raise ValueError("max_amplified_shot must be > 0 and told_error >= 0")
        if not self.bits or any(b not in range(8, 17) for b in self.bits):
            raise ValueError(f"bits must be in 8..16, got {self.bits}")
        if self.calibrated_fraction > 0 and not self.cameras:
            raise ValueError("calibrated_fraction > 0 needs at least one camera")


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def tukey_variance(shape: float, scale: float) -> float:
    """Variance of a Tukey-lambda distribution (finite for ``shape > -0.5``)."""
    if abs(shape) < 1e-6:
        return scale**2 * math.pi**2 / 3.0
    lg = math.lgamma(shape + 1.0)
    return (
        scale**2
        * (2.0 / shape**2)
        * (1.0 / (1.0 + 2.0 * shape) - math.exp(2.0 * lg - math.lgamma(2.0 * shape + 2.0)))
    )


def virtual_dark(
    planes: np.ndarray,
    ratio: float,
    shot: float,
    read_electrons: float,
    bits: int,
    clip_black: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, RawNoise]:
    """A virtual Poisson-Gaussian camera's frame of ``planes`` given ``1/ratio`` of the light.

    Args:
        planes: ``(4, h, w)`` clean, white 1.
        shot: variance per unit signal (``1 / full well``).

    Returns:
        The dark planes amplified by ``ratio`` (white 1, as :func:`denoiser_planes` reads a
        file), and their noise, amplified alike.
    """
    electrons = np.clip(planes, 0.0, 1.0) / (ratio * shot)
    read = read_electrons * shot
    dark = rng.poisson(electrons).astype(np.float32) * np.float32(shot)
    dark += rng.normal(0.0, read, planes.shape).astype(np.float32)
    step = 1.0 / (2**bits - 1)
    dark = np.rint(dark / step) * np.float32(step)
    if clip_black:
        dark = np.maximum(dark, 0.0)
    noise = RawNoise((shot,) * 4, (read**2 + step**2 / 12,) * 4, "virtual camera")
    return dark * np.float32(ratio), noise.amplified(ratio)


class DenoisePairs(SyntheticPairs):
    """Items: ``input`` ``(8, p, p)`` (noisy planes and noise map), ``target`` ``(4, p, p)``
    clean planes in the same units, ``gains`` (3,) and ``matrix`` (3, 3) of the clean frame's
    white balance and colour matrix (for a loss measured after rendering), ``ratio``, ``index``.

    Item ``i`` is a function of ``(seed, i)`` as in :class:`SyntheticPairs`.
    """

    def __init__(
        self,
        files: list[Path],
        config: DenoisePairConfig | None = None,
        *,
        seed: int = 0,
        length: int | None = None,
        train: bool = True,
        with_map: bool = True,
    ) -> None:
        self.denoise = DenoisePairConfig() if config is None else config
        super().__init__(files, self.denoise.crop, seed=seed, length=length, train=train)
        self.with_map = with_map
        self._profiles: dict[str, NoiseProfile] = {}
        self._photos: dict[Path, np.ndarray] = {}

    def _photo(self, path: Path) -> np.ndarray:
        # Decoding a PNG takes two thirds of an item's time; kept in 8 bits (exact for the
        # 8-bit photos training uses), the 243 development photos hold about 0.8 GB.
        cached = self._photos.get(path)
        if cached is None:
            rgb = super()._photo(path)
            as_bytes = np.rint(rgb * 255.0)
            if np.array_equal(as_bytes / 255.0, rgb.astype(np.float64)):
                self._photos[path] = as_bytes.astype(np.uint8)
            return rgb
        return cached.astype(np.float32) / np.float32(255.0)

    def _camera(self, name: str) -> NoiseProfile:
        if name not in self._profiles:
            self._profiles[name] = load_profile(name)
        return self._profiles[name]

    def _make_pair(
        self, path: Path, index: int, rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        cfg = self.denoise
        if cfg.cfa == "xtrans":
            return self._make_xtrans_pair(path, index, rng)
        clean = self._clean_crop(path, rng)
        view = rggb_view(clean.raw_lin, clean.meta)
        mosaic = view.mosaic
        if self.train and rng.random() < 0.5:
            # A transposed RGGB mosaic is RGGB: a free augmentation that keeps the layout.
            mosaic = np.ascontiguousarray(mosaic.T)
        target = pack(mosaic, view.meta).astype(np.float32)
        ratio = _log_uniform(rng, *cfg.ratios) if self.train else _val_ratio(index, cfg)
        if rng.random() < cfg.calibrated_fraction:
            noisy, noise = self._calibrated(mosaic, view.meta, ratio, rng)
        else:
            noisy, noise = self._virtual(target, ratio, rng)
        meta = clean.meta
        gains = meta.wb_gains or (1.0, 1.0, 1.0)
        matrix = np.eye(3) if meta.rgb_cam is None else np.asarray(meta.rgb_cam)
        return self._item(noisy, noise, target, gains, matrix, ratio, index, rng)

    def _make_xtrans_pair(
        self, path: Path, index: int, rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        cfg = self.denoise
        if source_kind(path) is not SourceKind.PHOTO:
            raise DarkrawError(path, "X-Trans training pairs are made from photos only")
        crop = self.photo_crop(path, rng, 3 * cfg.crop.patch, 6)
        params = sample_unprocess_params(cfg.crop.sources.unprocess, rng)
        cam = np.clip(camera_rgb(crop, params), 0.0, 1.0)
        # Every file is packed from this tile (darkraw.raw.cfa.xtrans_phase), so that the two
        # kinds of block the network is told apart are the same ones everywhere.
        tile = np.asarray(XTRANS_TILE)
        colours = cfa_colours(tile, *cam.shape[1:])
        mosaic = np.take_along_axis(cam, colours[None], axis=0)[0].astype(np.float32)
        target = pack_xtrans(mosaic, tile)
        ratio = _log_uniform(rng, *cfg.ratios) if self.train else _val_ratio(index, cfg)
        if rng.random() < cfg.calibrated_fraction:
            noisy, noise = self._calibrated_xtrans(mosaic, tile, ratio, rng)
        else:
            noisy, noise = self._virtual(target, ratio, rng)
        gains, matrix = params.wb_gains, np.asarray(params.rgb_cam)
        return self._item(noisy, noise, target, gains, matrix, ratio, index, rng)

    def _item(
        self,
        noisy: np.ndarray,
        noise: RawNoise,
        target: np.ndarray,
        gains: tuple[float, float, float],
        matrix: np.ndarray,
        ratio: float,
        index: int,
        rng: np.random.Generator,
    ) -> dict[str, torch.Tensor]:
        cfg = self.denoise
        noisy = np.minimum(noisy, np.float32(1.0))
        if cfg.told_error > 0:
            factor = float(np.exp(rng.normal(0.0, cfg.told_error)))
            noise = noise.scaled(math.sqrt(factor))
        if cfg.told_factor_fraction > 0 and self.train and rng.random() < cfg.told_factor_fraction:
            noise = noise.scaled(_log_uniform(rng, *cfg.told_factor))
        return {
            "input": torch.from_numpy(denoiser_input(noisy, noise, with_map=self.with_map)),
            "target": torch.from_numpy(np.ascontiguousarray(target)),
            "gains": torch.tensor(gains, dtype=torch.float32),
            "matrix": torch.tensor(matrix, dtype=torch.float32),
            "ratio": torch.tensor(ratio, dtype=torch.float32),
            "index": torch.tensor(index),
        }

    def _virtual(
        self, target: np.ndarray, ratio: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, RawNoise]:
        cfg = self.denoise
        high = min(cfg.shot[1], cfg.max_amplified_shot / ratio)
        shot = _log_uniform(rng, min(cfg.shot[0], high), high)
        low, top = cfg.read_electrons
        top = max(min(top, top * math.sqrt(cfg.shot[0] / shot)), min(2.0, top))
        read = _log_uniform(rng, min(low, top), top)
        bits = int(cfg.bits[int(rng.integers(len(cfg.bits)))])
        clip = bool(rng.random() < cfg.clip_black_fraction)
        return virtual_dark(target, ratio, shot, read, bits, clip, rng)

    def _calibrated(
        self, mosaic: np.ndarray, meta_view: RawMetadata, ratio: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, RawNoise]:
        cfg = self.denoise
        profile = self._camera(cfg.cameras[int(rng.integers(len(cfg.cameras)))])
        unit = unit_levels(meta_view).replace(height=mosaic.shape[0], width=mosaic.shape[1])
        dark, dark_meta, params = darken_calibrated(
            mosaic, unit, ratio, profile, rng, read_model=ReadNoise.TUKEY, black_level=512.0
        )
        span = profile.white_level
        # ELD's colour bias (a per-channel offset of the black level, 0.5 DN on average and up
        # to 6 DN) is taken out again: drawn from a handful of cameras it is not zero on
        # average, so a network trained with it learns to subtract that average from every
        # file, and darkened the red and first green planes of unbiased frames by up to 20 % in
        # the shadows (step 4,000 of the first run).
        bias = np.asarray(params.color_bias, dtype=np.float32)[:, None, None]
        planes = (pack(dark.astype(np.float32), dark_meta) - np.float32(512.0) - bias) / np.float32(
            span
        )
        noise = _told_calibrated(params, span, profile.name)
        return planes * np.float32(ratio), noise.amplified(ratio)

    def _calibrated_xtrans(
        self, mosaic: np.ndarray, tile: np.ndarray, ratio: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, RawNoise]:
        """:meth:`_calibrated`'s noise on an X-Trans mosaic (white 1): shot noise through the
        system gain, Tukey-lambda read noise and one offset per sensor row, rounded to whole
        DN and clipped as a black level of 512 DN clips, without the colour bias."""
        cfg = self.denoise
        profile = self._camera(cfg.cameras[int(rng.integers(len(cfg.cameras)))])
        params = sample_calibrated_params(profile, rng, read_model=ReadNoise.TUKEY)
        span = profile.white_level
        signal = np.clip(mosaic, 0.0, None).astype(np.float64) * (span / ratio)
        colours = cfa_colours(tile, *mosaic.shape)
        dark = calibrated_mosaic_noise(
            signal, colours, params, rng, quantization=False, color_bias=False
        )
        dark = np.clip(np.rint(dark), -512.0, span)
        planes = pack_xtrans((dark / span).astype(np.float32), tile)
        noise = _told_calibrated(params, span, profile.name)
        return planes * np.float32(ratio), noise.amplified(ratio)


def _told_calibrated(params: CalibratedNoiseParams, span: float, camera: str) -> RawNoise:
    """The Poisson-Gaussian level with the same total variance as a calibrated camera's noise
    (read, row and quantisation together), as a profile fitted to real frames measures it."""
    read_var = tukey_variance(params.tukey_lambda, params.read_scale)
    if params.read_model is ReadNoise.GAUSSIAN:
        read_var = params.read_scale**2
    read_var += params.row_scale**2 + 1.0 / 12.0
    return RawNoise((params.k / span,) * 4, (read_var / span**2,) * 4, f"{camera} calibration")


def _val_ratio(index: int, cfg: DenoisePairConfig) -> float:
    """Validation items cycle through ratios spread over the range (log-spaced)."""
    low, high = cfg.ratios
    steps = (0.0, 0.5, 0.8, 1.0)
    return float(low * (high / low) ** steps[index % len(steps)])
