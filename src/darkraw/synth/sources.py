"""Sources of clean raw data for simulation: raw files and ordinary photos.

The seed trains on the MIT-Adobe FiveK DNGs (Bychkovsky et al., CVPR 2011); any folder of raw
files works the same way (a FiveK download is one: ``raw_photos/*/photos/*.dng``). Ordinary sRGB
photos become raw by unprocessing (:mod:`darkraw.synth.unprocess`, Brooks et al. CVPR 2019).

Every source gives a :class:`CleanRaw`: a clean ``raw_lin`` mosaic, its metadata, and the sRGB
image a good exposure of it renders to, which is what a network learns to produce.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darkraw.choices import parse_choice
from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import (
    ClassicOptions,
    GammaCurve,
    color_correct,
    gamma_decode,
    gamma_encode,
    run_classic,
    subtract_black_level,
)
from darkraw.errors import DarkrawError
from darkraw.raw.cfa import BayerPattern
from darkraw.raw.fileio import read_image
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw
from darkraw.synth.unprocess import (
    UnprocessConfig,
    UnprocessParams,
    inverse_color_correct,
    inverse_white_balance,
    mosaic,
    sample_unprocess_params,
)

#: Photo formats unprocessed into raw.
PHOTO_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})


class SourceKind(enum.Enum):
    """What a clean source file is."""

    PHOTO = "photo"
    RAW = "raw"

    @classmethod
    def parse(cls, value: SourceKind | str) -> SourceKind:
        return parse_choice(cls, value, "source kind")


def source_kind(path: str | Path) -> SourceKind:
    """A photo (by extension) or a raw file (anything LibRaw may read)."""
    suffix = Path(path).suffix.lower()
    if suffix in PHOTO_EXTENSIONS:
        return SourceKind.PHOTO
    return SourceKind.RAW


def collect_sources(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given, and the photos and raw files inside folders given (recursive, sorted).

    Raises:
        DarkrawError: an input does not exist, or nothing usable was found.
    """
    from darkraw.raw.rawio import RAW_EXTENSIONS

    exts = set(PHOTO_EXTENSIONS) | set(RAW_EXTENSIONS)
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise DarkrawError(path, "no such file or folder")
    if not found:
        raise DarkrawError(Path(", ".join(str(i) for i in inputs)), "no photos or raw files found")
    return found


@dataclass(frozen=True)
class SourceConfig:
    """How clean sources become clean raw.

    Attributes:
        unprocess: virtual-camera ranges for photos.
        pattern: Bayer layout of unprocessed photos.
        gamma: transfer curve of the reference rendering of raw files (photos keep their own
            sRGB encoding, which unprocessing inverts).
    """

    unprocess: UnprocessConfig = field(default_factory=UnprocessConfig)
    pattern: BayerPattern = BayerPattern.RGGB
    gamma: GammaCurve = GammaCurve.SRGB

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", BayerPattern.parse(self.pattern))
        object.__setattr__(self, "gamma", GammaCurve.parse(self.gamma))


@dataclass(frozen=True)
class CleanRaw:
    """A clean raw frame and what it should look like.

    Attributes:
        raw_lin: ``(H, W)`` float32 mosaic, black subtracted, white 1, clipped to [0, 1].
        meta: its metadata (black level 0, white level 1; CFA, colour matrix and white balance
            of the camera, real or virtual).
        reference: ``(3, H, W)`` float32 sRGB in [0, 1] in sensor orientation: the clean frame
            rendered by a good pipeline.
        source: the file it came from.
    """

    raw_lin: np.ndarray
    meta: RawMetadata
    reference: np.ndarray
    source: Path | None = None


def unit_levels(meta: RawMetadata) -> RawMetadata:
    """Metadata of a ``raw_lin`` mosaic: black level 0, white level 1."""
    zeros = tuple(tuple(0.0 for _ in row) for row in meta.black_tile)
    return meta.replace(black_tile=zeros, white_level=1.0)


def unprocess_photo(
    rgb_srgb: np.ndarray,
    params: UnprocessParams,
    pattern: BayerPattern | str = BayerPattern.RGGB,
    source: Path | None = None,
) -> CleanRaw:
    """An sRGB photo ``(3, H, W)`` in [0, 1] as a clean raw frame of a virtual camera.

    The reference is the forward pipeline applied to the full-colour camera image before the
    mosaic (white balance, colour matrix, gamma): the photo itself at the sampled brightness,
    which is exactly what the raw frame holds, so input and target agree on exposure. An odd
    last row or column is dropped, so that the mosaic holds whole Bayer tiles.
    """
    if rgb_srgb.ndim != 3 or rgb_srgb.shape[0] != 3 or min(rgb_srgb.shape[1:]) < 2:
        raise ValueError(f"expected a photo of shape (3, H, W), H, W >= 2, got {rgb_srgb.shape}")
    rgb_srgb = rgb_srgb[:, : rgb_srgb.shape[1] // 2 * 2, : rgb_srgb.shape[2] // 2 * 2]
    cam = camera_rgb(rgb_srgb, params)
    raw_lin = np.clip(mosaic(cam, pattern), 0.0, 1.0).astype(np.float32)
    gains = np.asarray(params.wb_gains, dtype=np.float32)[:, None, None]
    balanced = np.clip(cam * gains, 0.0, 1.0)
    rendered = color_correct(balanced, np.asarray(params.rgb_cam))
    reference = gamma_encode(np.clip(rendered, 0.0, 1.0), params.gamma).astype(np.float32)
    _, h, w = rgb_srgb.shape
    return CleanRaw(raw_lin, params.metadata(pattern, h, w), reference, source)


def camera_rgb(rgb_srgb: np.ndarray, params: UnprocessParams) -> np.ndarray:
    """An sRGB photo ``(3, H, W)`` as the virtual camera of ``params`` records it before its
    colour filter array: linear camera RGB (gamma, colour matrix and white balance undone, the
    brightness applied), not clipped; :func:`unprocess_photo` samples it on a Bayer mosaic."""
    rgb_lin = gamma_decode(rgb_srgb, params.gamma).astype(np.float32)
    cam: np.ndarray = inverse_white_balance(
        inverse_color_correct(rgb_lin, params.rgb_cam), params.wb_gains, params.brightness
    )
    return cam


def clean_from_raw(mosaic_dn: np.ndarray, meta: RawMetadata, gamma: GammaCurve | str) -> CleanRaw:
    """A well-exposed raw mosaic in DN as a clean raw frame, rendered by the classic pipeline."""
    raw_lin = np.clip(subtract_black_level(mosaic_dn, meta), 0.0, 1.0).astype(np.float32)
    unit = unit_levels(meta)
    options = ClassicOptions(ratio=1.0, denoiser=Denoiser.NONE, gamma=GammaCurve.parse(gamma))
    reference = run_classic(raw_lin, unit.replace(flip=0), options).image
    return CleanRaw(raw_lin, unit, reference)


def load_clean(
    path: str | Path, rng: np.random.Generator, config: SourceConfig | None = None
) -> CleanRaw:
    """Read one clean source: a photo (unprocessed with a random virtual camera) or a raw file.

    Raises:
        DarkrawError: the file cannot be read.
    """
    config = SourceConfig() if config is None else config
    path = Path(path)
    if source_kind(path) is SourceKind.PHOTO:
        try:
            rgb = read_image(path)
        except (OSError, ValueError) as err:
            raise DarkrawError(path, f"cannot read the photo ({err})") from None
        params = sample_unprocess_params(config.unprocess, rng)
        return unprocess_photo(rgb, params, config.pattern, source=path)
    raw = read_raw(path)
    clean = clean_from_raw(raw.mosaic, raw.meta, config.gamma)
    return CleanRaw(clean.raw_lin, clean.meta, clean.reference, path)
