"""Training the learnt black-offset estimate (:mod:`darkraw.nn.blackoffset`).

Each sample is a crop of a clean photo, unprocessed to raw with a random camera, darkened by a
ratio drawn log-uniformly in 1-300, in one of four ways (:data:`KINDS`), and prepared as
``darkraw enhance`` prepares a frame (:func:`darkraw.nn.rawdenoise.prepare_frame`, without an
offset taken out); its features are :func:`~darkraw.nn.blackoffset.offset_features` and its
target the offset each packed plane was given, in per cent of white after amplification. The
MLP is trained in torch with an L1 loss, then handed to numpy.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from darkraw.nn.blackoffset import (
    FEATURE_COUNT,
    TARGET_SCALE,
    BlackOffsetModel,
    offset_features,
)
from darkraw.nn.rawdenoise import prepare_frame
from darkraw.raw.cfa import pack_bayer, unpack_bayer
from darkraw.raw.fileio import read_image
from darkraw.synth.simulate import NoiseModel, SimulationConfig, simulate_dark
from darkraw.synth.sources import unprocess_photo
from darkraw.synth.unprocess import UnprocessConfig, sample_unprocess_params

#: ELD's calibrated cameras, drawn alike.
CAMERAS = ("SonyA7S2", "NikonD850", "CanonEOS5D4", "CanonEOS70D", "CanonEOS700D")

#: How a sample is darkened, and how often: a calibrated camera with its measured colour bias, the
#: same without it, a Poisson-Gaussian camera, and a Poisson-Gaussian camera with a random offset
#: (so that the model learns to read an offset from the scene, not from ELD's noise).
KINDS = (
    "calibrated, biased",
    "calibrated, no bias",
    "Poisson-Gaussian",
    "Poisson-Gaussian, random offset",
)


@dataclass(frozen=True)
class SampleConfig:
    """How samples are drawn.

    Attributes:
        kind_shares: how often each of :data:`KINDS` is drawn.
        max_ratio: ratios are drawn log-uniformly in ``[1, max_ratio]``.
        crop: smallest and largest side of a crop, pixels.
        random_offset_dn: the random offsets' largest size, DN of 14 bits, either way.
    """

    kind_shares: tuple[float, float, float, float] = (0.4, 0.2, 0.25, 0.15)
    max_ratio: float = 300.0
    crop: tuple[int, int] = (256, 1024)
    random_offset_dn: float = 4.0

    def __post_init__(self) -> None:
        if len(self.kind_shares) != len(KINDS) or min(self.kind_shares) < 0:
            raise ValueError(f"kind_shares must be {len(KINDS)} shares >= 0")
        if not math.isclose(sum(self.kind_shares), 1.0):
            raise ValueError(f"kind_shares must sum to 1, got {sum(self.kind_shares)}")


def darkened_sample(
    path: Path, config: SampleConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """A darkened crop of the photo at ``path``: its features, its offset per plane (per cent of
    white after amplification) and its kind (an index of :data:`KINDS`)."""
    rgb = read_image(path)
    h, w = rgb.shape[1:]
    lo, hi = config.crop
    th = int(rng.integers(min(lo, h), min(hi, h) + 1)) // 16 * 16
    tw = int(rng.integers(min(lo, w), min(hi, w) + 1)) // 16 * 16
    y = int(rng.integers(0, h - th + 1)) // 2 * 2
    x = int(rng.integers(0, w - tw + 1)) // 2 * 2
    params = sample_unprocess_params(UnprocessConfig(), rng)
    clean = unprocess_photo(rgb[:, y : y + th, x : x + tw], params, "RGGB", source=path)
    ratio = float(np.exp(rng.uniform(0.0, np.log(config.max_ratio))))
    kind = int(rng.choice(len(KINDS), p=config.kind_shares))
    if kind >= 2:
        gain = float(np.exp(rng.uniform(np.log(0.1), np.log(10.0))))
        simulation = SimulationConfig(
            model=NoiseModel.SIMPLE, gain=gain, read_noise_dn=float(rng.uniform(0.5, 4.0))
        )
        dark = simulate_dark(clean.raw_lin, clean.meta, ratio, simulation, rng)
        bias = np.zeros(4)
        mosaic = dark.mosaic_dn
        if kind == 3:
            bias = rng.uniform(-config.random_offset_dn, config.random_offset_dn, 4)
            planes = pack_bayer(mosaic.astype(np.float64), "RGGB") + bias[:, None, None]
            mosaic = np.clip(np.rint(unpack_bayer(planes, "RGGB")), 0, 65535).astype(np.uint16)
    else:
        simulation = SimulationConfig(camera=CAMERAS[int(rng.integers(len(CAMERAS)))])
        profile = simulation.profile()
        if kind == 1:
            profile = replace(profile, color_bias=((0.0, 0.0, 0.0, 0.0),))
        dark = simulate_dark(clean.raw_lin, clean.meta, ratio, simulation, rng, profile=profile)
        bias = np.array(getattr(dark.params, "color_bias", (0.0,) * 4), np.float64)
        mosaic = dark.mosaic_dn
    span = dark.meta.white_level - float(np.mean(dark.meta.black_tile))
    target = (bias / span * ratio * TARGET_SCALE).astype(np.float32)
    planes = prepare_frame(mosaic, dark.meta, black_offset=False).planes
    return offset_features(planes, ratio), target, kind


def _sample_job(job: tuple[Path, SampleConfig, int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    path, config, seed, index = job
    return darkened_sample(path, config, np.random.default_rng([seed, index]))


def sample_set(
    files: Sequence[Path],
    count: int,
    config: SampleConfig,
    seed: int,
    *,
    workers: int = 1,
) -> dict[str, np.ndarray]:
    """``count`` samples (features ``x``, targets ``y``, ``kind``), sample ``i`` drawn from file
    ``i mod len(files)`` with its own generator (``[seed, i]``): the same set whatever
    ``workers``."""
    jobs = [(files[i % len(files)], config, seed, i) for i in range(count)]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = pool.map(_sample_job, jobs, chunksize=8)
    else:
        rows = [_sample_job(job) for job in jobs]
    return {
        "x": np.stack([r[0] for r in rows]).reshape(count, FEATURE_COUNT),
        "y": np.stack([r[1] for r in rows]).reshape(count, 4),
        "kind": np.array([r[2] for r in rows], dtype=np.int64),
    }


def train_black_offset_model(
    data: dict[str, np.ndarray],
    *,
    steps: int = 6000,
    width: int = 64,
    batch: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> BlackOffsetModel:
    """An MLP (two hidden layers of ``width``) fitted to ``data`` with an L1 loss (Adam, the
    rate cosine-annealed to zero)."""
    import torch

    x_np, y_np = data["x"].astype(np.float32), data["y"].astype(np.float32)
    mean = x_np.mean(axis=0)
    scale = x_np.std(axis=0) + 1e-6
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURE_COUNT, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 4),
    )
    optimiser = torch.optim.Adam(net.parameters(), lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    x = torch.from_numpy((x_np - mean) / scale)
    y = torch.from_numpy(y_np)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=generator)
        loss = (net(x[idx]) - y[idx]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    return BlackOffsetModel(
        tuple(m.weight.detach().numpy().copy() for m in linears),
        tuple(m.bias.detach().numpy().copy() for m in linears),
        mean,
        scale,
    )
