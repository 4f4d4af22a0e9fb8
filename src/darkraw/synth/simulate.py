"""Simulating dark exposures of clean raw data.

Three models:

- :func:`darken_mosaic`, the exposure model of See-in-the-Dark (Chen et al., CVPR 2018): a short
  exposure at ratio ``r`` collects ``1/r`` of the light of the long one. Photon arrival is
  Poisson; the sensor adds Gaussian read noise and a black-level offset; the result is
  quantized to whole DN.
- :func:`darken_calibrated`, the same exposure model with a real camera's calibrated noise
  (:mod:`darkraw.synth.noise`, after Wei et al., CVPR 2020).
- The seed's reverse pipeline (Gupta, Botica & Brown, "CS 7180 Milestone 1", Figure 1 bottom and
  Figure 3): the traditional pipeline run backwards on packed ``raw_lin`` planes, each step a
  pure function: gamma distortion (darker), white imbalance (random per-channel gains),
  Poisson noise (photon counting at a sampled light level), black level (a positive bias).

:func:`simulate_dark` runs any of the three on a clean ``raw_lin`` mosaic and returns a dark raw
frame in DN, as a camera would have written it, with the exposure ratio it was made at.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from darkraw.choices import parse_choice
from darkraw.classic.pipeline import pack, subtract_black_level, unpack
from darkraw.raw.cfa import cfa_colours, pack_bayer, plane_colors, unpack_bayer
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.noise import (
    CalibratedNoiseParams,
    NoiseProfile,
    ReadNoise,
    calibrated_mosaic_noise,
    calibrated_noise,
    load_profile,
    sample_calibrated_params,
)


def _check_ratio(ratio: float) -> None:
    if not ratio >= 1 or not np.isfinite(ratio):
        raise ValueError(f"ratio must be >= 1, got {ratio}")


def _dark_metadata(meta: RawMetadata, ratio: float, black: float, white: float) -> RawMetadata:
    """The clean frame's metadata with the dark frame's levels and exposure time."""
    exposure = None if meta.exposure_time is None else meta.exposure_time / ratio
    return meta.replace(
        black_tile=tuple(tuple(black for _ in row) for row in meta.black_tile),
        white_level=white,
        exposure_time=exposure,
    )


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
    _check_ratio(ratio)
    if gain <= 0 or read_noise_dn < 0:
        raise ValueError(f"gain must be > 0 and read noise >= 0, got {gain}, {read_noise_dn}")
    raw_lin = np.clip(subtract_black_level(mosaic_dn, meta), 0.0, 1.0)
    black = float(np.mean(meta.black_tile)) if black_level is None else float(black_level)
    span = meta.white_level - black
    electrons = rng.poisson(raw_lin.astype(np.float64) * span / (gain * ratio))
    signal = electrons * gain + rng.normal(0.0, read_noise_dn, size=raw_lin.shape) + black
    dark = np.clip(np.rint(signal), 0, meta.white_level).astype(np.uint16)
    return dark, _dark_metadata(meta, ratio, black, meta.white_level)


def darken_calibrated(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    ratio: float,
    profile: NoiseProfile,
    rng: np.random.Generator,
    *,
    k: float | None = None,
    read_model: ReadNoise | str = ReadNoise.TUKEY,
    black_level: float | None = None,
) -> tuple[np.ndarray, RawMetadata, CalibratedNoiseParams]:
    """A dark exposure with ``1/ratio`` of the light and a real camera's calibrated noise.

    The clean mosaic's white maps to the profile's white level, so the dark frame is a raw of the
    profiled camera: its white level is ``black + profile.white_level``.

    Args:
        mosaic_dn: ``(H, W)`` clean mosaic in DN: Bayer (H and W even) or X-Trans.
        meta: its metadata.
        ratio: exposure ratio (SID uses 100, 250, 300).
        profile: the camera's noise profile (:func:`darkraw.synth.noise.load_profile`).
        rng: the only source of randomness.
        k: fix the system gain instead of drawing it from the profile's range.
        read_model: Tukey-lambda (ELD) or Gaussian read noise.
        black_level: black level of the dark frame in DN; the clean file's when ``None``.

    Returns:
        The dark mosaic (uint16 DN), its metadata, and the noise parameters drawn.
    """
    _check_ratio(ratio)
    raw_lin = np.clip(subtract_black_level(mosaic_dn, meta), 0.0, 1.0)
    params = sample_calibrated_params(profile, rng, k=k, read_model=read_model)
    if meta.is_xtrans:
        signal = raw_lin.astype(np.float64) * (profile.white_level / ratio)
        colours = cfa_colours(meta.cfa_tile, *raw_lin.shape)
        noisy = calibrated_mosaic_noise(signal, colours, params, rng, quantization=False)
    else:
        pattern = meta.bayer_pattern
        signal = pack_bayer(raw_lin.astype(np.float64), pattern) * (profile.white_level / ratio)
        noisy = unpack_bayer(calibrated_noise(signal, params, rng, quantization=False), pattern)
    black = float(np.mean(meta.black_tile)) if black_level is None else float(black_level)
    white = black + profile.white_level
    dark = np.clip(np.rint(noisy + black), 0, min(white, 65535))
    return dark.astype(np.uint16), _dark_metadata(meta, ratio, black, white), params


def _check_range(name: str, lo_hi: tuple[float, float], minimum: float, strict: bool) -> None:
    lo, hi = lo_hi
    ok = math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    ok = ok and (lo > minimum if strict else lo >= minimum)
    if not ok:
        bound = ">" if strict else ">="
        raise ValueError(
            f"{name} must be (lo, hi) with {bound} {minimum} and lo <= hi, got {lo_hi}"
        )


@dataclass(frozen=True)
class SeedNoiseConfig:
    """Ranges the seed's reverse pipeline samples its parameters from.

    Attributes:
        gamma: exponent of the gamma distortion, uniform; above 1 darkens the mid-tones.
        wb_gain: per-channel (R, G, B) white-imbalance weight, uniform.
        photons: photo-electrons a white pixel collects in the reference (long) exposure,
            log-uniform; a dark frame at ratio ``r`` collects ``photons / r``. The Poisson noise
            level: fewer photons, more noise.
        black_level: positive bias as a fraction of white, uniform.
    """

    gamma: tuple[float, float] = (1.0, 2.5)
    wb_gain: tuple[float, float] = (0.6, 1.4)
    photons: tuple[float, float] = (5000.0, 500000.0)
    black_level: tuple[float, float] = (0.0, 0.05)

    def __post_init__(self) -> None:
        _check_range("gamma", self.gamma, 0.0, strict=True)
        _check_range("wb_gain", self.wb_gain, 0.0, strict=True)
        _check_range("photons", self.photons, 0.0, strict=True)
        _check_range("black_level", self.black_level, 0.0, strict=False)


@dataclass(frozen=True)
class SeedNoiseParams:
    """One draw of the seed's reverse-pipeline parameters (see :class:`SeedNoiseConfig`)."""

    gamma: float
    wb_gains: tuple[float, float, float]
    photons: float
    black_level: float


def sample_seed_params(config: SeedNoiseConfig, rng: np.random.Generator) -> SeedNoiseParams:
    """Draw reverse-pipeline parameters; the same generator state gives the same draw."""
    gamma = float(rng.uniform(*config.gamma))
    gains = rng.uniform(*config.wb_gain, size=3)
    log_photons = rng.uniform(math.log(config.photons[0]), math.log(config.photons[1]))
    black = float(rng.uniform(*config.black_level))
    return SeedNoiseParams(
        gamma=gamma,
        wb_gains=(float(gains[0]), float(gains[1]), float(gains[2])),
        photons=float(math.exp(log_photons)),
        black_level=black,
    )


def gamma_distort(planes: np.ndarray, gamma: float) -> np.ndarray:
    """Seed step 1: ``x ** gamma`` on ``(C, h, w)`` planes in [0, 1] (negatives clipped to 0)."""
    if not gamma > 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a positive number, got {gamma}")
    return np.asarray(np.power(np.clip(planes, 0.0, None), np.float32(gamma)), dtype=np.float32)


def white_imbalance(planes: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    """Seed step 2: multiply each packed plane by its colour's (R, G, B) weight.

    Args:
        planes: ``(C, h, w)`` with C 4 (Bayer, R G1 B G2) or 9 (X-Trans).
    """
    if len(gains) != 3 or min(gains) <= 0:
        raise ValueError(f"expected 3 positive gains (R, G, B), got {gains}")
    g = np.asarray([gains[c] for c in plane_colors(planes.shape[0])], dtype=np.float32)
    return np.asarray(planes * g[:, None, None], dtype=np.float32)


def poisson_noise(planes: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Seed step 3: photon counting, ``Poisson(x * photons) / photons``.

    A pixel at level ``x`` then has mean ``x`` and variance ``x / photons``.
    """
    if not photons > 0 or not math.isfinite(photons):
        raise ValueError(f"photons must be a positive number, got {photons}")
    counts = rng.poisson(np.clip(planes, 0.0, None).astype(np.float64) * photons)
    return np.asarray(counts / photons, dtype=np.float32)


def add_black_level(planes: np.ndarray, black_level: float) -> np.ndarray:
    """Seed step 4: add a positive bias (a fraction of white) to every pixel."""
    if not black_level >= 0 or not math.isfinite(black_level):
        raise ValueError(f"black level must be >= 0, got {black_level}")
    return np.asarray(planes + np.float32(black_level), dtype=np.float32)


@dataclass(frozen=True)
class SeedStages:
    """The clean planes and each stage of the seed's reverse pipeline (the seed's Figure 3)."""

    original: np.ndarray
    gamma: np.ndarray
    white_imbalance: np.ndarray
    poisson: np.ndarray
    black_level: np.ndarray


def seed_reverse_pipeline(
    planes: np.ndarray, params: SeedNoiseParams, rng: np.random.Generator, ratio: float = 1.0
) -> SeedStages:
    """Run the seed's four reverse steps on clean ``(C, h, w)`` ``raw_lin`` planes.

    Args:
        ratio: exposure ratio of the dark frame: its photon count is ``params.photons / ratio``.
            Stages stay in the reference exposure's units (the dark frame times ``ratio``), so
            that each can be viewed as it is; :func:`simulate_dark` divides by the ratio.

    Returns:
        Every stage; ``black_level`` is the simulated low-light input, amplified by ``ratio``.
    """
    if planes.ndim != 3:
        raise ValueError(f"expected packed planes of shape (C, h, w), got {planes.shape}")
    _check_ratio(ratio)
    darker = gamma_distort(planes, params.gamma)
    imbalanced = white_imbalance(darker, params.wb_gains)
    noisy = poisson_noise(imbalanced, params.photons / ratio, rng)
    biased = add_black_level(noisy, params.black_level)
    return SeedStages(planes, darker, imbalanced, noisy, biased)


class NoiseModel(enum.Enum):
    """How a dark frame is simulated."""

    #: The seed's reverse pipeline (gamma distortion, white imbalance, Poisson, black level).
    SEED = "seed"
    #: A real camera's calibrated noise (ELD): shot, Tukey-lambda read, row, quantisation, bias.
    CALIBRATED = "calibrated"
    #: Poisson shot noise and Gaussian read noise at fixed levels (SID's exposure model).
    SIMPLE = "simple"

    @classmethod
    def parse(cls, value: NoiseModel | str) -> NoiseModel:
        return parse_choice(cls, value, "noise model")


@dataclass(frozen=True)
class SimulationConfig:
    """Which noise model makes dark frames, and its settings.

    Attributes:
        model: the noise model.
        camera: noise profile for the calibrated model: a bundled name or a JSON file.
        read_noise: read-noise distribution of the calibrated model.
        seed: parameter ranges of the seed's reverse pipeline.
        black_level: black level in DN of dark frames from the calibrated and simple models (the
            seed model samples its own).
        white_level: white level in DN of dark frames from the seed and simple models (the
            calibrated model uses its camera's).
        gain: system gain K of the simple model, DN per photo-electron.
        read_noise_dn: Gaussian read-noise std of the simple model, DN.
    """

    model: NoiseModel = NoiseModel.CALIBRATED
    camera: str = "SonyA7S2"
    read_noise: ReadNoise = ReadNoise.TUKEY
    seed: SeedNoiseConfig = field(default_factory=SeedNoiseConfig)
    black_level: float = 512.0
    white_level: float = 16383.0
    gain: float = 1.0
    read_noise_dn: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", NoiseModel.parse(self.model))
        object.__setattr__(self, "read_noise", ReadNoise.parse(self.read_noise))
        if not 0 <= self.black_level < self.white_level <= 65535:
            raise ValueError(
                f"need 0 <= black_level < white_level <= 65535, got "
                f"{self.black_level}, {self.white_level}"
            )
        if not self.gain > 0 or not self.read_noise_dn >= 0:
            raise ValueError(
                f"gain must be > 0 and read noise >= 0, got {self.gain}, {self.read_noise_dn}"
            )

    def profile(self) -> NoiseProfile:
        """The calibrated model's camera profile."""
        return load_profile(self.camera)


@dataclass(frozen=True)
class DarkFrame:
    """A simulated dark raw frame.

    Attributes:
        mosaic_dn: ``(H, W)`` uint16 in DN, black level included.
        meta: its metadata (black and white levels of the dark frame, exposure time / ratio).
        ratio: exposure ratio to the clean frame it was made from.
        params: the noise parameters drawn.
    """

    mosaic_dn: np.ndarray
    meta: RawMetadata
    ratio: float
    params: SeedNoiseParams | CalibratedNoiseParams | None


def clean_frame_dn(
    raw_lin: np.ndarray, meta: RawMetadata, black_level: float, white_level: float
) -> tuple[np.ndarray, RawMetadata]:
    """A clean ``raw_lin`` mosaic as a noise-free raw frame in DN (uint16), with its metadata."""
    if not 0 <= black_level < white_level <= 65535:
        raise ValueError(f"need 0 <= black < white <= 65535, got {black_level}, {white_level}")
    dn = np.rint(np.clip(raw_lin, 0.0, 1.0) * (white_level - black_level) + black_level)
    levels = _dark_metadata(meta, 1.0, black_level, white_level)
    return dn.astype(np.uint16), levels


def simulate_dark(
    raw_lin: np.ndarray,
    meta: RawMetadata,
    ratio: float,
    config: SimulationConfig,
    rng: np.random.Generator,
    *,
    profile: NoiseProfile | None = None,
    k: float | None = None,
) -> DarkFrame:
    """A dark raw frame with ``1 / ratio`` of the light of a clean mosaic.

    Args:
        raw_lin: ``(H, W)`` clean mosaic, black subtracted, white 1 (values outside [0, 1] are
            clipped).
        meta: its CFA, colour and orientation (its levels are ignored).
        ratio: exposure ratio, >= 1.
        config: noise model and settings.
        rng: the only source of randomness.
        profile: the calibrated model's camera; ``config.profile()`` when ``None`` (pass it to
            avoid reloading it for every frame).
        k: the calibrated model's system gain (DN per electron: the camera's ISO), fixed
            instead of drawn from the profile's range; the other models have no such setting.

    Returns:
        The dark frame in DN: reading it back, subtracting its black level and multiplying by
        ``ratio`` gives the clean mosaic plus noise (and, for the seed model, its distortions).
    """
    _check_ratio(ratio)
    clean = np.clip(np.asarray(raw_lin, dtype=np.float32), 0.0, 1.0)
    unit = meta.replace(
        black_tile=tuple(tuple(0.0 for _ in row) for row in meta.black_tile), white_level=1.0
    )
    if config.model is NoiseModel.CALIBRATED:
        camera = config.profile() if profile is None else profile
        dark, dark_meta, params = darken_calibrated(
            clean,
            unit,
            ratio,
            camera,
            rng,
            k=k,
            read_model=config.read_noise,
            black_level=config.black_level,
        )
        return DarkFrame(dark, dark_meta, float(ratio), params)
    if k is not None:
        raise ValueError(
            f"a fixed system gain k needs the calibrated noise model, not {config.model.value}"
        )
    if config.model is NoiseModel.SIMPLE:
        dn, dn_meta = clean_frame_dn(clean, unit, config.black_level, config.white_level)
        dark, dark_meta = darken_mosaic(
            dn, dn_meta, ratio, rng, gain=config.gain, read_noise_dn=config.read_noise_dn
        )
        return DarkFrame(dark, dark_meta, float(ratio), None)
    seed_params = sample_seed_params(config.seed, rng)
    stages = seed_reverse_pipeline(pack(clean, unit), seed_params, rng, ratio)
    # Whole DN: raw files (and LibRaw reading a DNG) hold integer black levels.
    black = float(round(seed_params.black_level * config.white_level))
    span = config.white_level - black
    dark_lin = unpack(stages.poisson, unit) / np.float32(ratio)
    dark = np.clip(np.rint(dark_lin * span + black), 0, config.white_level).astype(np.uint16)
    dark_meta = _dark_metadata(meta, ratio, black, config.white_level)
    return DarkFrame(dark, dark_meta, float(ratio), seed_params)
