"""Real pairs for the raw denoiser: a dark short exposure and the bright long exposure of the same
scene, as SID's list files name them (Chen et al., CVPR 2018), for fine-tuning on one's camera.

LED (Jin et al., ICCV 2023) adapts a denoiser pre-trained on virtual cameras to a real one with
two pairs per ratio; ELD (Wei et al., CVPR 2020) and PMN (MM 2022) train on such pairs in the raw
domain. Here:

- the input is what :func:`darkraw.nn.rawdenoise.enhance_with_denoiser` gives the network for the
  short frame at the pair's ratio (strength 1, no noise database): the mosaic seen as RGGB, black
  subtracted and scaled, its black-level offset measured and taken out, its noise estimated from
  the whole frame (:func:`~darkraw.synth.noiselevel.estimate_raw_noise`), then amplified by the
  ratio and clipped above at 1, with the noise map of the amplified noise
  (:func:`~darkraw.nn.inputs.denoiser_input`); training therefore sees what inference sees;
- the target is the long exposure's planes in the same space (RGGB, black subtracted, white 1,
  clipped above at 1; no offset is measured: its noise is small and not amplified);
- ``gains`` and ``matrix`` are the long exposure's white balance and colour matrix, for a loss
  measured after rendering (:func:`darkraw.training.train_denoiser.denoiser_loss`).

Training items are random crops at whole CFA tiles, mirrored and transposed as whole mosaics
(a mirrored RGGB mosaic, one sample cut at each end, is the RGGB mosaic of the mirrored scene),
so the layout stays RGGB. Each file's prepared planes are cached once on disk (``.npy``,
memory-mapped on reading, as :func:`~darkraw.training.sid.ground_truth` caches SID's renderings),
so a crop reads only its rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from darkraw.classic.pipeline import WhiteBalance, choose_gains, rggb_view
from darkraw.errors import DarkrawError
from darkraw.nn.inputs import amplify, denoiser_input, denoiser_planes
from darkraw.nn.rawdenoise import frame_noise, prepare_frame
from darkraw.raw.cfa import BayerPattern, pack_bayer, unpack_bayer
from darkraw.raw.fileio import atomic_output
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw
from darkraw.synth.noiselevel import RawNoise
from darkraw.training import sid
from darkraw.training.sid import SIDPair

#: Bumped when what is cached changes, so that older caches are not read.
CACHE_VERSION = 1


@dataclass(frozen=True)
class RealFrame:
    """One pair as the denoiser sees it, whole frame.

    Attributes:
        planes: ``(4, h, w)`` float32: the short exposure's RGGB planes, black (and its measured
            offset) subtracted, white 1, not amplified.
        noise: their noise, not amplified.
        target: ``(4, h, w)`` float32: the long exposure's planes, white 1, clipped above at 1.
        gains: the long exposure's white-balance gains (R, G, B).
        matrix: ``(3, 3)`` its colour matrix (camera RGB to linear sRGB; identity if none).
        ratio: the pair's amplification.
    """

    planes: np.ndarray
    noise: RawNoise
    target: np.ndarray
    gains: tuple[float, float, float]
    matrix: np.ndarray
    ratio: float


def short_planes(
    mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float
) -> tuple[np.ndarray, RawNoise]:
    """A dark frame's RGGB planes and noise, before amplification, exactly as
    :func:`~darkraw.nn.rawdenoise.enhance_with_denoiser` prepares them by default for
    amplification by ``ratio`` (the learnt black offset reads the frame at it).

    Returns:
        ``(4, h, w)`` float32 planes (black and its offset subtracted, white 1) and their noise
        (zero for a frame too small to measure).
    """
    if meta.is_xtrans:
        raise ValueError("the raw denoiser handles Bayer files; this pair is X-Trans")
    prepared = prepare_frame(mosaic_dn, meta, ratio=ratio)
    return prepared.planes, frame_noise(prepared.planes, meta)


def long_planes(
    mosaic_dn: np.ndarray, meta: RawMetadata
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """A bright frame's RGGB planes (white 1, clipped above at 1), white balance and matrix."""
    if meta.is_xtrans:
        raise ValueError("the raw denoiser handles Bayer files; this pair is X-Trans")
    view = rggb_view(mosaic_dn, meta)
    planes = denoiser_planes(view.mosaic, view.meta, 1.0)
    gains = choose_gains(planes, view.meta, WhiteBalance.CAMERA)
    matrix = np.eye(3) if meta.rgb_cam is None else np.asarray(meta.rgb_cam, dtype=np.float64)
    return planes, gains, matrix


def amplified_input(
    planes: np.ndarray, noise: RawNoise, ratio: float, *, with_map: bool = True
) -> np.ndarray:
    """The network's input from :func:`short_planes`: times ``ratio``, clipped above at 1, and
    the noise map of the amplified noise.

    Returns:
        ``(8, h, w)`` float32 (``(4, h, w)`` without the map).
    """
    return denoiser_input(amplify(planes, ratio), noise.amplified(ratio), with_map=with_map)


def input_crop(
    frame: RealFrame, top: int, left: int, size: int, *, with_map: bool = True
) -> np.ndarray:
    """:func:`amplified_input` of the whole frame, cut to ``size`` x ``size`` packed pixels at
    ``(top, left)``: the noise map is computed with a margin of one sample (its 3x3 mean's
    reach), so it equals the whole frame's there."""
    _, h, w = frame.planes.shape
    if size < 1 or min(top, left) < 0 or top + size > h or left + size > w:
        raise ValueError(f"a {size}x{size} crop at ({top}, {left}) leaves a {h}x{w} frame")
    y0, x0 = max(top - 1, 0), max(left - 1, 0)
    y1, x1 = min(top + size + 1, h), min(left + size + 1, w)
    x = amplified_input(frame.planes[:, y0:y1, x0:x1], frame.noise, frame.ratio, with_map=with_map)
    return x[:, top - y0 : top - y0 + size, left - x0 : left - x0 + size]


class FrameCache:
    """Prepared planes of pairs, made once per file and kept in ``folder`` (``None``: made
    afresh on each call).

    The short exposure's planes and noise and the long exposure's planes, gains and matrix are
    stored apart (several short frames share one long frame), each as an ``.npy`` memory-mapped
    on reading and a small JSON, named by the file's path, size and time of change.
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None or str(folder) == "" else Path(folder)

    def frame(self, pair: SIDPair) -> RealFrame:
        planes, noise = self._short(pair.short, pair.ratio)
        target, gains, matrix = self._long(pair.long)
        if planes.shape != target.shape:
            raise DarkrawError(
                pair.long,
                f"its planes are {target.shape[1]}x{target.shape[2]} but the short exposure's "
                f"are {planes.shape[1]}x{planes.shape[2]}",
            )
        return RealFrame(planes, noise, target, gains, matrix, pair.ratio)

    def _short(self, path: Path, ratio: float) -> tuple[np.ndarray, RawNoise]:
        # The black offset taken out depends on the ratio the frame is read at.
        kind = f"short-x{ratio:g}"
        stored = self._read(path, kind)
        if stored is not None:
            planes, info = stored
            return planes, RawNoise(info["shot"], info["read"], info["source"])
        raw = read_raw(path)
        planes, noise = short_planes(raw.mosaic, raw.meta, ratio)
        info = {"shot": list(noise.shot), "read": list(noise.read), "source": noise.source}
        return self._write(path, kind, planes, info), noise

    def _long(self, path: Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
        stored = self._read(path, "long")
        if stored is None:
            raw = read_raw(path)
            planes, gains, matrix = long_planes(raw.mosaic, raw.meta)
            info = {"gains": list(gains), "matrix": matrix.tolist()}
            stored = self._write(path, "long", planes, info), info
        planes, info = stored
        r, g, b = (float(v) for v in info["gains"])
        return planes, (r, g, b), np.asarray(info["matrix"], dtype=np.float64)

    def _paths(self, path: Path, kind: str) -> tuple[Path, Path] | None:
        if self.folder is None:
            return None
        stat = path.stat()
        text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{kind}|{CACHE_VERSION}"
        key = hashlib.sha256(text.encode()).hexdigest()[:12]
        # Not with_suffix: SID's names hold dots (``10003_00_0.04s``).
        stem = f"{path.stem}-{kind}-{key}"
        return self.folder / f"{stem}.npy", self.folder / f"{stem}.json"

    def _read(self, path: Path, kind: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        paths = self._paths(path, kind)
        if paths is None or not (paths[0].is_file() and paths[1].is_file()):
            return None
        try:
            planes = np.load(paths[0], mmap_mode="r")
            info = json.loads(paths[1].read_text())
        except (OSError, ValueError) as err:
            raise DarkrawError(
                paths[0], f"corrupt cache of prepared planes ({err}); delete it"
            ) from None
        return planes, info

    def _write(self, path: Path, kind: str, planes: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        paths = self._paths(path, kind)
        if paths is None:
            return planes
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(paths[0]) as tmp, open(tmp, "wb") as out:
            np.save(out, np.ascontiguousarray(planes, dtype=np.float32))
        with atomic_output(paths[1]) as tmp:
            tmp.write_text(json.dumps(info))
        return planes


def sid_pair_split(
    train_list: str | Path,
    val_list: str | Path | None,
    *,
    root: str | Path | None = None,
    fraction: float = 1.0,
    per_ratio: int = 0,
    val_fraction: float = 0.08,
    val_items: int = 32,
    seed: int = 0,
) -> tuple[list[SIDPair], list[SIDPair]]:
    """Training and validation pairs from SID list files.

    Pairs are :func:`~darkraw.training.sid.select`-ed (misaligned scenes left out). Without a
    ``val_list``, whole scenes are held out for validation: a ``val_fraction`` of them (at least
    one), chosen by a hash of the scene id and ``seed``. The training pairs are then a
    ``fraction`` of the rest or ``per_ratio`` pairs of each ratio (:func:`~darkraw.training.sid.
    subset`); validation keeps its first ``val_items`` pairs.

    Raises:
        ValueError: too few pairs (or scenes) to train and validate on.
    """
    pairs = sid.select(sid.read_list(train_list, root))
    if val_list:
        val_pairs = sid.select(sid.read_list(val_list, root))
    else:
        scenes = sorted(
            {p.scene for p in pairs},
            key=lambda s: hashlib.sha256(f"{seed}/{s}".encode()).digest(),
        )
        if len(scenes) < 2:
            raise ValueError(
                f"{train_list}: {len(scenes)} scene(s) are too few to hold one out for "
                "validation; give a validation list"
            )
        held = set(scenes[: max(1, round(val_fraction * len(scenes)))])
        val_pairs = [p for p in pairs if p.scene in held]
        pairs = [p for p in pairs if p.scene not in held]
    if per_ratio:
        pairs = sid.subset(pairs, per_ratio=per_ratio, seed=seed)
    elif fraction < 1:
        pairs = sid.subset(pairs, fraction=fraction, seed=seed)
    val_pairs = val_pairs[:val_items]
    if not pairs or not val_pairs:
        raise ValueError(f"{train_list}: the SID lists give no training or no validation pairs")
    return pairs, val_pairs


class RealDenoisePairs(Dataset[dict[str, torch.Tensor]]):
    """Crops of real (short, long) pairs for the raw denoiser.

    Items are those of :class:`~darkraw.training.denoise_pairs.DenoisePairs`: ``input``
    ``(8, p, p)`` (the amplified short planes and their noise map; ``(4, p, p)`` without the
    map), ``target`` ``(4, p, p)``, ``gains`` (3,), ``matrix`` (3, 3), ``ratio`` and ``index``.

    Item ``i`` is pair ``i % len(pairs)``; a training item's crop and its mirrorings come from a
    generator seeded with ``(seed, i)``, so an item is the same in any worker and any run.
    Validation items (``train=False``) are centre crops, not mirrored. A frame smaller than the
    crop is mirrored out at its bottom and right by whole tiles.
    """

    def __init__(
        self,
        pairs: Sequence[SIDPair],
        cache_dir: str | Path | None = None,
        *,
        patch: int = 256,
        seed: int = 0,
        length: int | None = None,
        train: bool = True,
        augment: bool = True,
        with_map: bool = True,
    ) -> None:
        if not pairs:
            raise ValueError("no SID pairs given")
        if patch < 1:
            raise ValueError(f"patch must be a positive number of packed pixels, got {patch}")
        self.pairs = list(pairs)
        self.cache = FrameCache(cache_dir)
        self.patch = int(patch)
        self.seed = int(seed)
        self.length = len(self.pairs) if length is None else int(length)
        self.train = train
        self.augment = augment
        self.with_map = with_map

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        frame = self.cache.frame(self.pairs[index % len(self.pairs)])
        rng = np.random.default_rng([self.seed, 5, index])
        mirror = self.train and self.augment
        # A mirrored mosaic loses one sample at each end to stay RGGB: one packed pixel more.
        side = self.patch + 1 if mirror else self.patch
        x, target = self._crop(frame, side, rng)
        if mirror:
            flips = tuple(bool(v) for v in rng.integers(2, size=3))
            p = frame.planes.shape[0]
            x = np.concatenate([_mirror_rggb(x[i : i + p], flips) for i in range(0, len(x), p)])
            target = _mirror_rggb(target, flips)
        return {
            "input": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
            "gains": torch.tensor(frame.gains, dtype=torch.float32),
            "matrix": torch.tensor(frame.matrix, dtype=torch.float32),
            "ratio": torch.tensor(frame.ratio, dtype=torch.float32),
            "index": torch.tensor(index),
        }

    def _crop(
        self, frame: RealFrame, side: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        _, h, w = frame.planes.shape
        if h >= side and w >= side:
            top, left = self._origin(h, w, side, rng)
            x = input_crop(frame, top, left, side, with_map=self.with_map)
            return x, np.asarray(frame.target[:, top : top + side, left : left + side])
        whole = amplified_input(frame.planes, frame.noise, frame.ratio, with_map=self.with_map)
        x, target = _pad_to(whole, side), _pad_to(np.asarray(frame.target), side)
        top, left = self._origin(target.shape[1], target.shape[2], side, rng)
        return x[:, top : top + side, left : left + side], target[
            :, top : top + side, left : left + side
        ]

    def _origin(self, h: int, w: int, side: int, rng: np.random.Generator) -> tuple[int, int]:
        if self.train:
            return int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        return (h - side) // 2, (w - side) // 2


def _pad_to(planes: np.ndarray, side: int) -> np.ndarray:
    """Mirror ``(C, h, w)`` packed planes out at the bottom and right to ``side`` a side (whole
    CFA tiles, so the layout is kept)."""
    while planes.shape[1] < side or planes.shape[2] < side:
        _, h, w = planes.shape
        pad = ((0, 0), (0, min(h, max(0, side - h))), (0, min(w, max(0, side - w))))
        planes = np.pad(planes, pad, mode="symmetric")
    return planes


def _mirror_rggb(planes: np.ndarray, flips: tuple[bool, ...]) -> np.ndarray:
    """``(4, s, s)`` RGGB planes (or per-plane values such as a noise map) as those of the
    mosaic mirrored vertically and/or horizontally and transposed (``flips``), ``(4, s-1,
    s-1)``.

    Mirrored, an RGGB mosaic of even side reads GB/RG or GR/BG; cutting one sample at each end
    makes it RGGB again: the RGGB mosaic of the mirrored scene. Unmirrored, the last tile is
    cut. A transposed RGGB mosaic is RGGB (its greens exchange places)."""
    flip_v, flip_h, transpose = flips
    mosaic = unpack_bayer(np.asarray(planes), BayerPattern.RGGB)
    mosaic = mosaic[::-1][1:-1] if flip_v else mosaic[:-2]
    mosaic = mosaic[:, ::-1][:, 1:-1] if flip_h else mosaic[:, :-2]
    if transpose:
        mosaic = mosaic.T
    return pack_bayer(np.ascontiguousarray(mosaic), BayerPattern.RGGB)


__all__ = [
    "CACHE_VERSION",
    "FrameCache",
    "RealDenoisePairs",
    "RealFrame",
    "amplified_input",
    "input_crop",
    "long_planes",
    "short_planes",
    "sid_pair_split",
]
