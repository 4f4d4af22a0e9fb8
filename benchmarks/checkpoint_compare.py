"""Raw-denoiser model files side by side: the acceptance benchmark's small frames and groups, its
demo crop, and the flat-frame check of the model card's deep-shadow limit.

Only the denoiser runs (torch, fp32, one pass: no self-ensemble, so that the weights are what
is compared), rendered by LibRaw as ``darkraw enhance`` does; the frames, darkening, DNG round
trip, references and scores are imported from ``benchmarks/denoiser_vs_classic.py`` (the
classic pipeline's and SID's figures for the same frames are in its results). The flat-frame
check: flat frames of 192x192 packed pixels at 1, 1.5, 2, 3.2 and 16 electrons a sample
(0.0063-0.1 of white; shot 6.3e-5 of white per unit, 2 DN read of 14 bits, x100), noise seeds
1-3; the standard deviation the network leaves (output less the level, 8-pixel margins cut) as
a share of the input's, at strengths 1, 1.5 and 2.

Usage:
    python benchmarks/checkpoint_compare.py default runs/x/checkpoints/step_0003000.safetensors
        [--files ...] [--photos 6] [--groups ...] [--no-frames]
        [--out benchmarks/results/checkpoint_compare.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import denoiser_vs_classic as bench  # noqa: E402

from darkraw.demo import SAMPLE_RATIO, sample_path  # noqa: E402
from darkraw.nn.denoiser import RawDenoiser  # noqa: E402
from darkraw.nn.infer import resolve_model  # noqa: E402
from darkraw.nn.inputs import denoiser_input  # noqa: E402
from darkraw.nn.rawdenoise import DenoiseOptions, enhance_with_denoiser, run_denoiser  # noqa: E402
from darkraw.raw.rawio import read_raw, render_mosaic_with_libraw  # noqa: E402
from darkraw.synth.noiselevel import RawNoise  # noqa: E402

SMALL_FILES = "RAW_KODAK_DC50.KDC,halide_bayer_small.png,aisp_vivoX90_x90_3_4.npy"
FLAT_LEVELS = (0.0063, 0.0095, 0.0126, 0.02, 0.1)
FLAT_SHOT, FLAT_READ, FLAT_RATIO = 6.3e-5, (2 / 15871) ** 2, 100.0
STRENGTHS = (1.0, 1.5, 2.0)
#: One pass of the network (no self-ensemble): these figures compare the weights themselves.
FP32 = DenoiseOptions(precision="fp32", ensemble=1)


def score(image: np.ndarray, reference: np.ndarray) -> list[float]:
    s = bench.scores(image, reference)
    return [s["psnr"], s["ssim"], s["de2000"]]


def frame_scores(
    models: dict[str, RawDenoiser], frames: list[Any], groups: list[str], seed: int
) -> dict[str, dict[str, list[list[float]]]]:
    """PSNR / SSIM / CIEDE2000 of LibRaw's rendering of each model's output, per group."""
    out: dict[str, dict[str, list[list[float]]]] = {name: {} for name in models}
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            _, ratio = bench.GROUPS[group]
            for frame in frames:
                dark = bench.as_user_file(
                    frame.raw_lin, frame.meta, group, seed, Path(tmp), frame.name
                )
                for name, net in models.items():
                    result = enhance_with_denoiser(
                        dark.mosaic,
                        dark.meta,
                        net,
                        ratio,
                        DenoiseOptions(gamma=frame.gamma, precision="fp32", ensemble=1),
                        black_range=bench.black_range(group, dark),
                    )
                    rendered = bench.libraw_of(frame, result.mosaic_dn, dark, Path(tmp))
                    out[name].setdefault(group, []).append(score(rendered, frame.reference))
            means = {n: np.round(np.mean(out[n][group], axis=0), 3).tolist() for n in models}
            print(group, json.dumps(means), flush=True)
    return out


def demo_scores(models: dict[str, RawDenoiser]) -> dict[str, list[float]]:
    reference = bench.demo_reference()
    dark = read_raw(sample_path())
    out = {}
    for name, net in models.items():
        result = enhance_with_denoiser(dark.mosaic, dark.meta, net, SAMPLE_RATIO, FP32)
        rendered = render_mosaic_with_libraw(sample_path(), result.mosaic_dn, dark.meta)
        out[name] = score(rendered, reference)
    print("demo", json.dumps(out), flush=True)
    return out


def flat_check(net: RawDenoiser) -> dict[str, list[float]]:
    """Noise left on flat frames, as a share of the input's, per strength and level."""
    out = {}
    for strength in STRENGTHS:
        row = []
        for level in FLAT_LEVELS:
            shares = []
            for seed in (1, 2, 3):
                rng = np.random.default_rng(seed)
                clean = np.full((4, 192, 192), level, dtype=np.float32)
                electrons = rng.poisson(clean / (FLAT_RATIO * FLAT_SHOT))
                noisy = electrons * FLAT_SHOT + rng.normal(0, np.sqrt(FLAT_READ), clean.shape)
                amplified = np.minimum(noisy * FLAT_RATIO, 1.0).astype(np.float32)
                noise = RawNoise((FLAT_SHOT,) * 4, (FLAT_READ,) * 4, "flat")
                told = noise.amplified(FLAT_RATIO).scaled(strength)
                clean_out = run_denoiser(net, denoiser_input(amplified, told), FP32)
                inner = (slice(None), slice(8, -8), slice(8, -8))
                left = np.std(clean_out[inner] - level) / np.std(amplified[inner] - level)
                shares.append(float(left))
            row.append(round(float(np.mean(shares)), 3))
        out[f"{strength:g}"] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="bundled names or model files / checkpoints")
    parser.add_argument("--groups", default=",".join(bench.GROUPS))
    parser.add_argument("--files", default=SMALL_FILES)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-frames", action="store_true", help="the flat-frame check only")
    parser.add_argument("--out", default="benchmarks/results/checkpoint_compare.json")
    args = parser.parse_args()
    models: dict[str, RawDenoiser] = {}
    for spec in args.models:
        net = resolve_model(spec)
        if not isinstance(net, RawDenoiser):
            raise SystemExit(f"{spec} is not a raw denoiser")
        models[spec] = net
    result: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "models": args.models}
    if not args.no_frames:
        frames = [bench.raw_frame(n) for n in args.files.split(",") if n]
        frames += bench.photo_frames(args.photos, args.seed)
        groups = [g for g in args.groups.split(",") if g]
        per_frame = frame_scores(models, frames, groups, args.seed)
        result["frames"] = [f.name for f in frames]
        result["groups"] = {
            name: {g: np.round(np.mean(v, axis=0), 3).tolist() for g, v in per_group.items()}
            for name, per_group in per_frame.items()
        }
        result["per_frame"] = per_frame
        result["demo"] = demo_scores(models)
    result["flat"] = {}
    for name, net in models.items():
        result["flat"][name] = flat_check(net)
        print("flat", name, json.dumps(result["flat"][name]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
