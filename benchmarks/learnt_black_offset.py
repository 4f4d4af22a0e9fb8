"""A study: can a small learnt model read a frame's black-level offset from the frame?

The raw denoiser keeps every region's level by construction, so a black-level offset (ELD's
colour bias: 0.5 DN on average, up to 6) is rendered as a haze over the whole frame, and the
frame's darkest level cannot tell it from the scene's own shadows (``docs/model-card.md``, "Black
offset"). The SID network, trained on the same calibrations' noise with their bias, scores the
same with the bias and without at the Sony's x300, so the frame holds the information. This
script trains a small MLP on held-in photos darkened in three ways (calibrated noise of ELD's five
cameras with their colour bias, the same without it, and Poisson-Gaussian noise of random gain and
read noise), exposure ratios 1-300, to predict each plane's offset from quantiles of the frame's
8x8 block means (in amplified units) and its mean; then measures:

1. the offset's error on held-out photos darkened alike, against predicting no offset;
2. the raw denoiser on ``benchmarks/denoiser_vs_classic.py``'s three small raw files and six
   photos (its per-frame draws, seed 0; one pass; LibRaw's rendering), given the model's offset
   against the default rule (black read low, at most 2 DN).

It is a prototype, not darkraw's pipeline: nothing here is used by ``darkraw enhance``.

Usage:
    python benchmarks/learnt_black_offset.py [--train 1500] [--test 300] [--steps 3000]
        [--seed 0] [--out benchmarks/results/learnt_black_offset.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from darkraw.classic.pipeline import subtract_black_level
from darkraw.nn.infer import resolve_model
from darkraw.nn.rawdenoise import DenoiseOptions, enhance_with_denoiser
from darkraw.raw.cfa import pack_bayer
from darkraw.raw.fileio import read_image
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import RawImage
from darkraw.synth.noiselevel import BlackOffsetRange
from darkraw.synth.simulate import SimulationConfig, simulate_dark
from darkraw.synth.sources import collect_sources, unprocess_photo
from darkraw.synth.unprocess import UnprocessConfig, sample_unprocess_params
from darkraw.training.train import split_sources

sys.path.insert(0, str(Path(__file__).resolve().parent))
import denoiser_vs_classic as bench

CAMERAS = ("SonyA7S2", "NikonD850", "CanonEOS5D4", "CanonEOS70D", "CanonEOS700D")
#: Quantiles of a plane's 8x8 block means that the model reads (with the plane's mean).
QUANTILES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5)
KINDS = ("calibrated, biased", "calibrated, no bias", "Poisson-Gaussian")


def features(mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float) -> np.ndarray:
    """Each packed plane's block-mean quantiles and mean, amplified (white 1 after the ratio)."""
    planes = pack_bayer(
        subtract_black_level(mosaic_dn, meta) * np.float32(ratio), meta.bayer_pattern
    )
    out: list[float] = []
    for plane in planes:
        h, w = plane.shape[0] // 8 * 8, plane.shape[1] // 8 * 8
        blocks = plane[:h, :w].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3)).ravel()
        out += [float(v) for v in np.quantile(blocks, QUANTILES)] + [float(plane.mean())]
    return np.array(out, np.float32)


def sample(path: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, float]:
    """A darkened crop: its features, offset per plane (amplified units), kind, DN per unit."""
    rgb = read_image(path)
    h, w = rgb.shape[1:]
    th, tw = min(320, h) // 8 * 8, min(480, w) // 8 * 8
    y = int(rng.integers(0, h - th + 1)) // 2 * 2
    x = int(rng.integers(0, w - tw + 1)) // 2 * 2
    params = sample_unprocess_params(UnprocessConfig(), rng)
    clean = unprocess_photo(rgb[:, y : y + th, x : x + tw], params, "RGGB", source=path)
    ratio = float(np.exp(rng.uniform(0.0, np.log(300.0))))
    kind = int(rng.choice(3, p=(0.45, 0.25, 0.30)))
    if kind == 2:
        gain = float(np.exp(rng.uniform(np.log(0.1), np.log(10.0))))
        config = SimulationConfig(
            model="simple", gain=gain, read_noise_dn=float(rng.uniform(0.5, 4))
        )
        dark = simulate_dark(clean.raw_lin, clean.meta, ratio, config, rng)
        bias = np.zeros(4)
    else:
        config = SimulationConfig(camera=CAMERAS[int(rng.integers(len(CAMERAS)))])
        profile = config.profile()
        if kind == 1:
            profile = replace(profile, color_bias=((0.0, 0.0, 0.0, 0.0),))
        dark = simulate_dark(clean.raw_lin, clean.meta, ratio, config, rng, profile=profile)
        bias = np.array(getattr(dark.params, "color_bias", (0.0,) * 4), np.float64)
    span = dark.meta.white_level - float(np.mean(dark.meta.black_tile))
    target = (bias / span * ratio).astype(np.float32)
    return features(dark.mosaic_dn, dark.meta, ratio), target, kind, span / ratio


def dataset(files: list[Path], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rows = [sample(files[i % len(files)], rng) for i in range(n)]
    return {
        "x": np.stack([r[0] for r in rows]),
        "y": np.stack([r[1] for r in rows]),
        "kind": np.array([r[2] for r in rows]),
        "dn": np.array([r[3] for r in rows]),
    }


def train(data: dict[str, np.ndarray], steps: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    mu, sd = data["x"].mean(0), data["x"].std(0) + 1e-6
    net = torch.nn.Sequential(
        torch.nn.Linear(data["x"].shape[1], 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 4),
    )
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.tensor((data["x"] - mu) / sd)
    y = torch.tensor(data["y"] * 100)  # per cent of white: the loss's scale near 1
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=generator)
        loss = (net(x[idx]) - y[idx]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    net.register_buffer("mu", torch.tensor(mu))
    net.register_buffer("sd", torch.tensor(sd))
    return net


def predict(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        z = (torch.tensor(x) - net.mu) / net.sd  # type: ignore[operator]
        return net(z).numpy() / 100


def offset_errors(net: torch.nn.Module, test: dict[str, np.ndarray]) -> dict[str, object]:
    """Mean absolute offset error, by kind, for no offset and for the model's: in per cent of
    white after amplification (what the picture shows), and in DN of the dark frame (which
    weighs low ratios most: an error there is many DN but little of the picture)."""
    out: dict[str, object] = {}
    pred = predict(net, test["x"])
    for name, guess in (("zero", np.zeros_like(test["y"])), ("model", pred)):
        err = np.abs(guess - test["y"])
        for unit, scaled in (("percent_of_white", err * 100), ("dn", err * test["dn"][:, None])):
            out[f"{name}_{unit}"] = {
                "all": round(float(scaled.mean()), 3),
                **{KINDS[k]: round(float(scaled[test["kind"] == k].mean()), 3) for k in range(3)},
            }
    return out


def end_to_end(net: torch.nn.Module, seed: int) -> dict[str, object]:
    """The raw denoiser on the benchmark's small frames with the default rule and the model."""
    denoiser = resolve_model("default")
    names = ["RAW_KODAK_DC50.KDC", "halide_bayer_small.png", "aisp_vivoX90_x90_3_4.npy"]
    frames = [bench.raw_frame(n) for n in names] + bench.photo_frames(6, seed)
    groups: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in bench.GROUPS:
            _, ratio = bench.GROUPS[group]
            scores: dict[str, list[tuple[float, float, float]]] = {"default": [], "model": []}
            for frame in frames:
                dark: RawImage = bench.as_user_file(
                    frame.raw_lin, frame.meta, group, seed, Path(tmp), frame.name
                )
                amplified = predict(net, features(dark.mosaic, dark.meta, ratio)[None])[0]
                offset = tuple(float(v) / ratio for v in amplified)
                for name, black in (
                    ("default", None),
                    ("model", BlackOffsetRange(offset, offset, "model")),
                ):
                    result = enhance_with_denoiser(
                        dark.mosaic,
                        dark.meta,
                        denoiser,
                        ratio,
                        DenoiseOptions(gamma=frame.gamma, ensemble=1),
                        black_range=black,
                    )
                    image = bench.libraw_of(frame, result.mosaic_dn, dark, Path(tmp))
                    s = bench.scores(image, frame.reference)
                    scores[name].append((s["psnr"], s["ssim"], s["de2000"]))
            groups[group] = {
                name: [round(float(v), 3) for v in np.mean(values, axis=0)]
                for name, values in scores.items()
            }
            print(group, groups[group], flush=True)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/learnt_black_offset.json")
    args = parser.parse_args()
    start = time.perf_counter()
    files = collect_sources([bench.DATA / "clean"])
    train_files, test_files = split_sources(files, 0.08)
    rng = np.random.default_rng(args.seed)
    train_set = dataset(train_files, args.train, rng)
    test_set = dataset(test_files, args.test, rng)
    net = train(train_set, args.steps, args.seed)
    errors = offset_errors(net, test_set)
    print(json.dumps(errors), flush=True)
    result = {
        "train": args.train,
        "test": args.test,
        "steps": args.steps,
        "seed": args.seed,
        "offset_error_dn": errors,
        "denoiser_psnr_ssim_de2000": end_to_end(net, args.seed),
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
