"""A learnt estimate of a frame's black-level offset, read from the frame itself; numpy only.

A raw file's black level can be a few DN off (ELD measured 0.5 DN on average and up to 6 on its
five cameras: their "colour bias"). Amplified by the exposure ratio, such an offset tints and
lifts or crushes the whole picture, and the raw denoiser keeps it by construction (it keeps every
region's level). The frame's darkest level alone cannot tell an offset from the scene's own
darkest light (``docs/model-card.md``, "Black offset"), but the frame holds more than its
minimum: the colour of its darkest regions (a bias tints them, scenes' shadows are mostly
neutral), the two greens (which see the same light, so differ only by their offsets), how the
low quantiles fall off, and how noisy the dark blocks are. A small MLP reads the offset from
those (:func:`offset_features`); it is trained by :mod:`darkraw.training.black_offset` on
photos darkened with ELD's calibrated cameras (with their bias and without), Poisson-Gaussian
cameras, and Poisson-Gaussian cameras given a random offset, at exposure ratios 1-300.

Its weights ship in ``darkraw/data`` (a few kB of safetensors) and run here in numpy, so that
enhancing still needs no torch.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkraw.errors import CheckpointError
from darkraw.nn.modelfiles import read_safetensors_file

#: The bundled model's file under ``darkraw/data``.
BUNDLED_FILE = "black_offset_model.safetensors"

#: Value of the file's ``format`` metadata entry.
FORMAT = "darkraw-black-offset"

#: Version of :func:`offset_features`' layout; a file made for another is refused.
FEATURES_VERSION = 1

#: Side of the blocks whose means the features take, packed pixels.
BLOCK = 8

#: Quantiles of each plane's block means.
QUANTILES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5)

#: Shares of the darkest blocks (by the sum of the four planes' means) whose mean colour is read.
DARK_SHARES = (0.002, 0.01, 0.05, 0.2)

#: Share of the darkest blocks whose within-block spread (the noise at the dark end) is read.
NOISE_SHARE = 0.05

#: Above this many blocks a plane's block rows are strided (quantiles need no more, and a
#: 12-Mpixel frame's 47,000 blocks a plane would cost time the network could use).
MAX_BLOCKS = 16384

#: Length of :func:`offset_features`' vector.
FEATURE_COUNT = 4 * (len(QUANTILES) + 1) + 4 * len(DARK_SHARES) + 4 + 1

#: Offsets are learnt in per cent of white after amplification (a loss near 1).
TARGET_SCALE = 100.0


def offset_features(planes: np.ndarray, ratio: float) -> np.ndarray:
    """What the model reads from a frame: in amplified units (white 1 after the ratio), each
    plane's block-mean quantiles (:data:`QUANTILES`) and mean, the mean colour of the darkest
    blocks (:data:`DARK_SHARES`), each plane's within-block spread in the darkest
    :data:`NOISE_SHARE`, and the ratio's logarithm.

    Args:
        planes: ``(4, h, w)`` R, G1, B, G2, normalised (black 0, white 1), not amplified; at
            least :data:`BLOCK` packed pixels a side.
        ratio: the exposure ratio the frame will be amplified by.
    """
    if planes.ndim != 3 or planes.shape[0] != 4:
        raise ValueError(f"planes must be (4, h, w), got {planes.shape}")
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"ratio must be a positive number, got {ratio}")
    _, h, w = planes.shape
    nby, nbx = h // BLOCK, w // BLOCK
    if nby == 0 or nbx == 0:
        raise ValueError(f"planes of {h}x{w} hold no {BLOCK}x{BLOCK} block")
    stride = max(1, math.ceil(nby * nbx / MAX_BLOCKS))
    tiles = planes[:, : nby * BLOCK, : nbx * BLOCK].reshape(4, nby, BLOCK, nbx, BLOCK)[:, ::stride]
    # In float32 and without copying the tiles into blocks: a float64 copy of a 12-Mpixel
    # frame's sampled blocks took 25 ms, and 0.3-0.4 s in some fresh processes (new pages);
    # these sums take 21 ms. The spread is read on the darkest blocks, whose small means leave
    # E[x^2] - m^2 exact enough in float32.
    n = np.float32(BLOCK * BLOCK)
    block_means = tiles.sum(axis=(2, 4), dtype=np.float32) / n
    block_squares = np.square(tiles, dtype=np.float32).sum(axis=(2, 4)) / n
    variance = np.maximum(block_squares - block_means * block_means, 0)
    means = block_means.reshape(4, -1).astype(np.float64) * ratio
    spread = np.sqrt(variance).reshape(4, -1).astype(np.float64) * ratio
    out: list[np.ndarray] = []
    for plane in means:
        out += [np.quantile(plane, QUANTILES), np.array([plane.mean()])]
    order = np.argsort(means.sum(axis=0), kind="stable")
    for share in DARK_SHARES:
        darkest = order[: max(1, round(share * order.size))]
        out.append(means[:, darkest].mean(axis=1))
    darkest = order[: max(1, round(NOISE_SHARE * order.size))]
    out.append(spread[:, darkest].mean(axis=1))
    out.append(np.array([math.log(ratio)]))
    features = np.concatenate(out).astype(np.float32)
    assert features.size == FEATURE_COUNT
    return features


@dataclass(frozen=True)
class BlackOffsetModel:
    """An MLP from :func:`offset_features` to each plane's offset (ReLU between layers).

    Attributes:
        weights, biases: the layers', ``weights[i]`` of shape ``(out, in)``.
        mean, scale: the features are standardised as ``(x - mean) / scale`` first.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    mean: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        if not self.weights or len(self.weights) != len(self.biases):
            raise ValueError("the model needs as many bias vectors as weight matrices")
        width = FEATURE_COUNT
        for w, b in zip(self.weights, self.biases, strict=True):
            if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
                raise ValueError(f"layer of shape {w.shape} (bias {b.shape}) does not take {width}")
            width = w.shape[0]
        if width != 4:
            raise ValueError(f"the model gives {width} values, not 4 offsets")
        if self.mean.shape != (FEATURE_COUNT,) or self.scale.shape != (FEATURE_COUNT,):
            raise ValueError("the standardisation must have one mean and scale per feature")
        if not np.all(self.scale > 0):
            raise ValueError("the standardisation's scales must be positive")

    def amplified(self, features: np.ndarray) -> np.ndarray:
        """Each plane's offset after amplification, shares of white, for ``(n, F)`` features."""
        x = (np.asarray(features, dtype=np.float32) - self.mean) / self.scale
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w.T + b
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0)
        return np.asarray(x, dtype=np.float64) / TARGET_SCALE

    def offset(self, planes: np.ndarray, ratio: float) -> tuple[float, float, float, float]:
        """Each plane's offset as a share of white before amplification: what to subtract."""
        o = self.amplified(offset_features(planes, ratio)[None])[0] / ratio
        return float(o[0]), float(o[1]), float(o[2]), float(o[3])

    def tensors(self) -> dict[str, np.ndarray]:
        """The model as named arrays, as :func:`save_black_offset_model` writes them."""
        named = {"mean": self.mean, "scale": self.scale}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            named[f"layer{i}.weight"] = w
            named[f"layer{i}.bias"] = b
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in named.items()}


def save_black_offset_model(
    model: BlackOffsetModel, path: Path, card: dict[str, str] | None = None
) -> None:
    """Write the model as safetensors, with its format and feature version in the metadata."""
    from safetensors.numpy import save_file

    metadata = {"format": FORMAT, "features_version": str(FEATURES_VERSION), **(card or {})}
    save_file(model.tensors(), str(path), metadata=metadata)


def read_black_offset_model(path: Path) -> BlackOffsetModel:
    """A model written by :func:`save_black_offset_model`.

    Raises:
        CheckpointError: not such a file, or made for other features; one line naming it.
    """
    tensors, metadata = read_safetensors_file(path, "black-offset model")
    if metadata.get("format") != FORMAT:
        raise CheckpointError(path, "not a darkraw black-offset model")
    if metadata.get("features_version") != str(FEATURES_VERSION):
        raise CheckpointError(
            path,
            f"made for features version {metadata.get('features_version')}, this darkraw "
            f"reads {FEATURES_VERSION}",
        )
    layers = sum(1 for k in tensors if k.endswith(".weight"))
    try:
        return BlackOffsetModel(
            tuple(np.asarray(tensors[f"layer{i}.weight"]) for i in range(layers)),
            tuple(np.asarray(tensors[f"layer{i}.bias"]) for i in range(layers)),
            np.asarray(tensors["mean"]),
            np.asarray(tensors["scale"]),
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(path, f"a broken black-offset model ({exc})") from None


@functools.cache
def bundled_black_offset_model() -> BlackOffsetModel:
    """The model shipped with darkraw (read once)."""
    resource = importlib.resources.files("darkraw") / "data" / BUNDLED_FILE
    with importlib.resources.as_file(resource) as path:
        return read_black_offset_model(path)
