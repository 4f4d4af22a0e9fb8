"""Training pairs made on the fly: random packed crops of (dark input x ratio, clean target).

SID's reference code (Chen et al., CVPR 2018) loads every raw file of the dataset into memory
before training, which needs 64 GB for its Sony set. Here each item reads one source file, cuts
one crop, and simulates its dark frame (:mod:`darkraw.synth.simulate`), so memory does not grow with
the number of files and a folder of any size works.

The network input follows SID (black level subtracted, scaled to white 1, packed, times the
exposure ratio, clipped to [0, 1]) and then applies the file's white balance and colour matrix, as
the classic pipeline does. SID trains one network per camera, which learns that camera's colour
rendering; one network for every camera cannot guess a file's white balance from the pixels (a
network fed raw colours tinted GoPro and phone files red), while the file states it.
:func:`network_input` is shared with inference so that the two never disagree.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from darkraw.classic.denoise import Denoiser, denoise_planes
from darkraw.classic.pipeline import (
    ClassicOptions,
    rggb_view,
    run_classic,
    unorient,
)
from darkraw.errors import DarkrawError
from darkraw.nn.inputs import network_input
from darkraw.raw.cfa import transpose_bayer_planes
from darkraw.raw.fileio import read_image
from darkraw.raw.rawio import read_raw
from darkraw.synth.noise import NoiseProfile
from darkraw.synth.simulate import NoiseModel, SimulationConfig, simulate_dark
from darkraw.synth.sources import (
    CleanRaw,
    SourceConfig,
    SourceKind,
    clean_from_raw,
    source_kind,
    unprocess_photo,
)
from darkraw.synth.unprocess import sample_unprocess_params
from darkraw.training.sid import SIDPair, cached_ground_truth

#: Exposure ratios of SID's test set.
SID_RATIOS = (100.0, 250.0, 300.0)

#: Largest ``patch`` of a pair: 4096 packed pixels make an 8192x8192 target, 0.8 GB in float32;
#: a million (a typo, or a hostile config) ran the machine out of memory before any check.
MAX_PATCH = 4096


@dataclass(frozen=True)
class PairConfig:
    """What a training pair is.

    Attributes:
        patch: side of the packed crop (the target is twice that for Bayer); SID trains on 512,
            darkraw's CPU default is 256; a multiple of 16, at most :data:`MAX_PATCH`.
        ratios: exposure ratios, one drawn uniformly per pair.
        augment: random flips and transpose, as SID does (training pairs only).
        simulation: noise model of the dark frames.
        sources: how photos and raw files become clean raw.
        smooth_fraction: share of training crops of photos blurred before they are unprocessed
            (input and target alike), so that the network sees smooth scenes: photos are
            textured almost everywhere, and a network trained on them alone covers a flat sky or
            wall with grain (phase 7 of the default model: an 8-bit standard deviation of 6.7-21
            on a flat field with no colour matrix, against 1.7-5.4 for BM3D on the same frames;
            ``benchmarks/flat_field.py``).
        smooth_sigma: range of the Gaussian blur's sigma in photo pixels, drawn log-uniformly.
        flat_fraction: share of training crops of photos replaced by a nearly flat field of
            their own mean colour (a gentle gradient across it) before they are unprocessed: a
            frame with almost no texture, at any level, so that the network learns to flatten
            one. The raw denoiser's later training steps left a grid of bright dots on flat
            frames at 1-2 electrons a sample (``docs/model-card.md``, known limits); photos,
            even blurred, are rarely that flat and that dark.
        flat_gain: range of the factor, drawn log-uniformly, that scales the field's colour
            (darker fields than the photo's mean, so that dark flat frames are common).
    """

    patch: int = 256
    ratios: tuple[float, ...] = SID_RATIOS
    augment: bool = True
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    sources: SourceConfig = field(default_factory=SourceConfig)
    smooth_fraction: float = 0.0
    smooth_sigma: tuple[float, float] = (1.0, 6.0)
    flat_fraction: float = 0.0
    flat_gain: tuple[float, float] = (0.02, 1.0)

    def __post_init__(self) -> None:
        if not 16 <= self.patch <= MAX_PATCH or self.patch % 16:
            raise ValueError(
                f"patch must be a multiple of 16 from 16 to {MAX_PATCH}, got {self.patch}"
            )
        if not self.ratios or any(not r >= 1 or not math.isfinite(r) for r in self.ratios):
            raise ValueError(f"ratios must be numbers >= 1, got {self.ratios}")
        if not 0.0 <= self.smooth_fraction <= 1.0:
            raise ValueError(f"smooth_fraction must be in [0, 1], got {self.smooth_fraction}")
        low, high = self.smooth_sigma
        if not 0.0 < low <= high or not math.isfinite(high):
            raise ValueError(f"smooth_sigma must be 0 < low <= high, got {self.smooth_sigma}")
        if not 0.0 <= self.flat_fraction <= 1.0:
            raise ValueError(f"flat_fraction must be in [0, 1], got {self.flat_fraction}")
        low, high = self.flat_gain
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"flat_gain must be 0 < low <= high <= 1, got {self.flat_gain}")


class SyntheticPairs(Dataset[dict[str, torch.Tensor]]):
    """Random crops of simulated (dark, clean) pairs from a list of photos or raw files.

    Training item ``i`` belongs to epoch ``i // len(files)`` and reads one file, in an order
    shuffled afresh for each epoch; its crop, ratio, noise and flips come from a generator seeded
    with ``(seed, i)``. An item is therefore the same in any worker, any process and any run,
    and a training run resumes by asking for items from where it stopped. Validation items
    (``train=False``) read file ``i % len(files)``, take its centre crop, use the ratios in turn
    and are not augmented.

    Items are dictionaries of tensors: ``input`` ``(C, p, p)`` in [0, 1] (already amplified),
    ``target`` ``(3, s*p, s*p)`` sRGB in [0, 1], ``ratio`` (scalar) and ``index``; with
    ``classic=True`` also ``classic``, the traditional pipeline's rendering of the same dark
    frame (non-local-means denoising), for comparison. With ``raw_target=True`` (for a
    raw-output network) ``target`` is the clean frame's planes as the network would see them
    (:func:`network_input` at ratio 1), ``(C, p, p)`` in [0, 1], and ``classic`` the input
    planes denoised by non-local means.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        config: PairConfig | None = None,
        *,
        seed: int = 0,
        length: int | None = None,
        train: bool = True,
        classic: bool = False,
        raw_target: bool = False,
    ) -> None:
        if not files:
            raise ValueError("no source files given")
        self.files = [Path(f) for f in files]
        self.config = PairConfig() if config is None else config
        self.seed = int(seed)
        self.length = len(self.files) if length is None else int(length)
        self.train = train
        self.classic = classic
        self.raw_target = raw_target
        self._profile: NoiseProfile | None = None
        if self.config.simulation.model is NoiseModel.CALIBRATED:
            self._profile = self.config.simulation.profile()
        self._failed: set[Path] = set()
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length

    def file_index(self, index: int) -> int:
        """Which file item ``index`` reads (before any replacement of an unreadable file)."""
        n = len(self.files)
        if not self.train:
            return index % n
        epoch = index // n
        if self._order is None or self._order[0] != epoch:
            perm = np.random.default_rng([self.seed, 1, epoch]).permutation(n)
            self._order = (epoch, perm)
        return int(self._order[1][index % n])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        rng = np.random.default_rng([self.seed, 0 if self.train else 2, index])
        first = self.file_index(index)
        # A file that cannot be read is reported once and replaced by the next one, so that
        # one bad photo in a folder of thousands does not stop a long training run.
        for attempt in range(len(self.files)):
            path = self.files[(first + attempt) % len(self.files)]
            try:
                return self._make_pair(path, index, rng)
            except DarkrawError as err:
                if path not in self._failed:
                    self._failed.add(path)
                    warnings.warn(f"skipping training source {err}", stacklevel=2)
        raise DarkrawError(self.files[0].parent, "none of the training sources can be read")

    def _make_pair(
        self, path: Path, index: int, rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        config = self.config
        clean = self._clean_crop(path, rng)
        if self.train:
            ratio = float(config.ratios[int(rng.integers(len(config.ratios)))])
        else:
            ratio = float(config.ratios[index % len(config.ratios)])
        dark = simulate_dark(
            clean.raw_lin, clean.meta, ratio, config.simulation, rng, profile=self._profile
        )
        # The network sees every Bayer mosaic as RGGB (as inference shows it files), the target
        # mirrored alike, so that its sub-pixels always mean the same thing.
        view = rggb_view(dark.mosaic_dn, dark.meta)
        planes = network_input(view.mosaic, view.meta, ratio)
        if self.raw_target:
            # The clean frame as the network sees its dark twin: balanced, colour-corrected.
            clean_view = rggb_view(clean.raw_lin, clean.meta)
            target = network_input(clean_view.mosaic, clean_view.meta, 1.0)
        else:
            target = view.mirror(clean.reference)
        if self.train and config.augment and source_kind(path) is not SourceKind.PHOTO:
            # Photos were flipped before they became raw (_clean_crop); a raw crop can only be
            # transposed without moving its colours within the tile.
            planes, target = _transpose_rggb(planes, target, rng, target_planes=self.raw_target)
        item = {
            "input": torch.from_numpy(np.ascontiguousarray(planes)),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
            "ratio": torch.tensor(ratio, dtype=torch.float32),
            "index": torch.tensor(index),
        }
        if self.classic and self.raw_target:
            denoised = np.clip(denoise_planes(planes, Denoiser.NLM), 0, 1)
            item["classic"] = torch.from_numpy(np.ascontiguousarray(denoised, dtype=np.float32))
        elif self.classic:
            options = ClassicOptions(ratio=ratio, denoiser=Denoiser.NLM, gamma=config.sources.gamma)
            rendered = run_classic(dark.mosaic_dn, dark.meta.replace(flip=0), options).image
            rendered = view.mirror(rendered)
            item["classic"] = torch.from_numpy(np.ascontiguousarray(rendered, dtype=np.float32))
        return item

    def _photo(self, path: Path) -> np.ndarray:
        """A photo as ``(3, H, W)`` float32 in [0, 1]."""
        try:
            return read_image(path)
        except (OSError, ValueError) as err:
            raise DarkrawError(path, f"cannot read the photo ({err})") from None

    def photo_crop(
        self, path: Path, rng: np.random.Generator, side: int, period: int
    ) -> np.ndarray:
        """A ``side`` x ``side`` crop of the photo at ``path`` (``(3, side, side)`` sRGB), on a
        grid of ``period`` pixels, blurred, made flat and flipped as the config draws."""
        rgb = self._photo(path)
        crop = _crop(_pad_to(rgb, side), side, period, rng, centre=not self.train)
        # Drawn only when enabled, so that earlier configs keep their exact items.
        fraction = self.config.smooth_fraction
        if self.train and fraction > 0 and rng.random() < fraction:
            low, high = self.config.smooth_sigma
            crop = blur_scene(crop, float(np.exp(rng.uniform(np.log(low), np.log(high)))))
        fraction = self.config.flat_fraction
        if self.train and fraction > 0 and rng.random() < fraction:
            low, high = self.config.flat_gain
            crop = flat_scene(crop, float(np.exp(rng.uniform(np.log(low), np.log(high)))), rng)
        if self.train and self.config.augment:
            # SID flips and transposes the packed planes and the picture together, which
            # moves each colour's sample within its 2x2 tile of the picture: the network
            # then cannot tell which sub-pixel a sample is, and renders their average (on
            # the Kodak DC50's clean frame that average alone costs 34.4 dB / 0.943 SSIM).
            # Flipping the photo before it becomes raw keeps the layout as it is.
            crop = _flip_image(crop, rng)
        return crop

    def _clean_crop(self, path: Path, rng: np.random.Generator) -> CleanRaw:
        side = 2 * self.config.patch
        if source_kind(path) is SourceKind.PHOTO:
            crop = self.photo_crop(path, rng, side, 2)
            params = sample_unprocess_params(self.config.sources.unprocess, rng)
            return unprocess_photo(crop, params, self.config.sources.pattern, source=path)
        raw = read_raw(path)
        meta = raw.meta
        if meta.is_xtrans:
            raise DarkrawError(path, "X-Trans raw files are not supported as clean sources yet")
        if min(meta.height, meta.width) < side:
            raise DarkrawError(path, f"smaller than a {side}x{side} training crop")
        mosaic = _crop(raw.mosaic[None], side, meta.period, rng, centre=not self.train)[0]
        clean = clean_from_raw(
            mosaic, meta.replace(height=side, width=side), self.config.sources.gamma
        )
        return CleanRaw(clean.raw_lin, clean.meta, clean.reference, path)


def blur_scene(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """A ``(3, H, W)`` photo blurred by a Gaussian of ``sigma`` pixels (mirrored borders)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    hwc = np.ascontiguousarray(np.moveaxis(rgb, 0, -1), dtype=np.float32)
    blurred = cv2.GaussianBlur(hwc, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return np.moveaxis(blurred, -1, 0)


#: The most a flat field's gradient moves its level from one edge to the other along either
#: axis (a share of it; corner to corner up to 1.4 times that).
FLAT_GRADIENT = 0.2


def flat_scene(rgb: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    """A ``(3, H, W)`` field of ``rgb``'s mean colour times ``gain``, with a linear gradient of
    up to :data:`FLAT_GRADIENT` of its level across it, in a random direction."""
    if not 0 < gain <= 1:
        raise ValueError(f"gain must be in (0, 1], got {gain}")
    _, h, w = rgb.shape
    colour = rgb.reshape(3, -1).mean(axis=1, dtype=np.float64) * gain
    angle = rng.uniform(0.0, 2.0 * np.pi)
    slope = rng.uniform(-FLAT_GRADIENT, FLAT_GRADIENT)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.cos(angle) * (xx / max(w - 1, 1) - 0.5) + np.sin(angle) * (yy / max(h - 1, 1) - 0.5)
    field = colour[:, None, None] * (1.0 + slope * ramp)[None]
    flat: np.ndarray = np.clip(field, 0.0, 1.0).astype(np.float32)
    return flat


def _pad_to(image: np.ndarray, side: int) -> np.ndarray:
    """Mirror-pad a ``(C, H, W)`` image at its bottom and right to at least ``side`` x ``side``."""
    # Each round at most doubles a side: mirror padding cannot be wider than the image.
    while image.shape[1] < side or image.shape[2] < side:
        _, h, w = image.shape
        pad = ((0, 0), (0, min(h, max(0, side - h))), (0, min(w, max(0, side - w))))
        image = np.pad(image, pad, mode="symmetric")
    return image


def _pad_tiles(image: np.ndarray, side: int, period: int) -> np.ndarray:
    """Mirror-pad a ``(C, H, W)`` mosaic or its rendering to at least ``side`` x ``side``, at the
    bottom and right, by whole ``period`` x ``period`` tiles.

    Whole tiles keep the mosaic's CFA phase (pixel-wise mirroring would put red where green
    belongs), and padding a mosaic and its rendering alike keeps the two aligned. Rows and
    columns past the last whole tile are dropped first.
    """
    c, h, w = image.shape
    h, w = h - h % period, w - w % period
    if h < period or w < period:
        raise ValueError(f"a {image.shape[1]}x{image.shape[2]} image holds no whole CFA tile")
    tiles = image[:, :h, :w].reshape(c, h // period, period, w // period, period)
    need = -(-side // period)
    # Each round at most doubles a side: mirror padding cannot be wider than the image.
    while tiles.shape[1] < need or tiles.shape[3] < need:
        th, tw = tiles.shape[1], tiles.shape[3]
        pad = ((0, 0), (0, min(th, max(0, need - th))), (0, 0), (0, min(tw, max(0, need - tw))))
        tiles = np.pad(tiles, (*pad, (0, 0)), mode="symmetric")
    return tiles.reshape(c, tiles.shape[1] * period, tiles.shape[3] * period)


def _crop(
    image: np.ndarray, side: int, period: int, rng: np.random.Generator, *, centre: bool
) -> np.ndarray:
    """A ``side`` x ``side`` crop of ``(C, H, W)`` at offsets that are multiples of ``period``."""
    top, left = _crop_origin(image.shape[1], image.shape[2], side, period, rng, centre=centre)
    return image[:, top : top + side, left : left + side]


def _crop_origin(
    h: int, w: int, side: int, period: int, rng: np.random.Generator, *, centre: bool
) -> tuple[int, int]:
    """Top-left corner of a ``side`` x ``side`` crop of an ``h`` x ``w`` image, on the CFA grid.

    Random (drawing the row, then the column, from ``rng``) or, with ``centre``, central.
    """
    if centre:
        top, left = (h - side) // 2, (w - side) // 2
    else:
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    return top - top % period, left - left % period


def _flip_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A ``(C, H, W)`` image in one of its eight mirror and transpose views, drawn from ``rng``."""
    flip_v, flip_h, transpose = rng.integers(2, size=3)
    if flip_v:
        image = image[:, ::-1]
    if flip_h:
        image = image[:, :, ::-1]
    if transpose:
        image = image.transpose(0, 2, 1)
    return np.ascontiguousarray(image)


def _transpose_rggb(
    planes: np.ndarray, target: np.ndarray, rng: np.random.Generator, *, target_planes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Transpose RGGB planes and their target with probability 1/2, as one mosaic would be.

    A transposed RGGB mosaic is RGGB again (with the two greens' places exchanged), so the
    planes are those of the transposed mosaic (:func:`~darkraw.raw.cfa.transpose_bayer_planes`;
    the target too when it is planes). Mirroring has no such counterpart (it moves red to
    another corner of the tile). X-Trans planes are returned as they are.
    """
    if planes.shape[0] != 4 or not rng.integers(2):
        return planes, target
    target = transpose_bayer_planes(target) if target_planes else target.transpose(0, 2, 1)
    return transpose_bayer_planes(planes), target


class SIDPairs(Dataset[dict[str, torch.Tensor]]):
    """Crops of real (short, long) pairs from SID list entries, read from disk per item.

    The input is SID's (:func:`network_input` of the short exposure at the pair's ratio); the
    target is the long exposure rendered by LibRaw, cached once per file in ``cache_dir`` and
    brought back to sensor orientation so that it lines up with the mosaic. Item ``i`` is pair
    ``i % len(pairs)``; training items take a random crop (generator seeded with
    ``(seed, i)``) with flips and transposes, validation items the centre crop.
    ``patch=None`` gives whole frames (for evaluation). With ``classic=True`` items also carry
    ``classic``, the traditional pipeline's rendering (non-local means, LibRaw's gamma as the
    ground truth has it).
    """

    def __init__(
        self,
        pairs: Sequence[SIDPair],
        cache_dir: str | Path,
        *,
        patch: int | None = 256,
        seed: int = 0,
        length: int | None = None,
        train: bool = True,
        augment: bool = True,
        classic: bool = False,
    ) -> None:
        if not pairs:
            raise ValueError("no SID pairs given")
        if patch is not None and (patch < 16 or patch % 16):
            raise ValueError(f"patch must be a positive multiple of 16, got {patch}")
        self.pairs = list(pairs)
        self.cache_dir = Path(cache_dir)
        self.patch = patch
        self.seed = int(seed)
        self.length = len(self.pairs) if length is None else int(length)
        self.train = train
        self.augment = augment
        self.classic = classic

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        pair = self.pairs[index % len(self.pairs)]
        rng = np.random.default_rng([self.seed, 3, index])
        raw = read_raw(pair.short)
        meta = raw.meta
        truth = cached_ground_truth(pair.long, self.cache_dir)
        if truth.shape[0] != 3:
            raise DarkrawError(pair.long, f"unexpected ground-truth shape {truth.shape}")
        truth = unorient(truth, meta.flip) if meta.flip else truth
        if truth.shape[1:] != (meta.height, meta.width):
            raise DarkrawError(
                pair.long,
                f"rendering is {truth.shape[1]}x{truth.shape[2]} but the short exposure's mosaic "
                f"is {meta.height}x{meta.width}",
            )
        mosaic = raw.mosaic
        if self.patch is not None:
            side = self.patch * (2 if meta.period == 2 else 3)
            if min(meta.height, meta.width) < side:
                mosaic = _pad_tiles(mosaic[None], side, meta.period)[0]
                truth = _pad_tiles(truth, side, meta.period)
                meta = meta.replace(height=mosaic.shape[0], width=mosaic.shape[1])
            top, left = _crop_origin(
                meta.height, meta.width, side, meta.period, rng, centre=not self.train
            )
            mosaic = mosaic[top : top + side, left : left + side]
            truth = truth[:, top : top + side, left : left + side]
            meta = meta.replace(height=side, width=side)
        view = rggb_view(mosaic, meta)
        planes = network_input(view.mosaic, view.meta, pair.ratio)
        target = view.mirror(np.asarray(truth, dtype=np.float32) / np.float32(65535))
        if self.train and self.augment:
            planes, target = _transpose_rggb(planes, target, rng, target_planes=False)
        item = {
            "input": torch.from_numpy(np.ascontiguousarray(planes)),
            "target": torch.from_numpy(np.ascontiguousarray(target)),
            "ratio": torch.tensor(pair.ratio, dtype=torch.float32),
            "index": torch.tensor(index),
        }
        if self.classic:
            options = ClassicOptions(ratio=pair.ratio, denoiser=Denoiser.NLM)
            rendered = view.mirror(run_classic(mosaic, meta.replace(flip=0), options).image)
            item["classic"] = torch.from_numpy(np.ascontiguousarray(rendered, dtype=np.float32))
        return item
