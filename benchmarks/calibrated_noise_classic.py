"""How does the classic pipeline cope with a real camera's noise, compared with simple noise?

A 1024x1024 crop of ../shared/data/raw/HERO7_GOPR9231.DNG is darkened x100 and x300 twice:
with darkraw's simple Poisson-Gaussian model (gain 1, read noise 2 DN) and with the calibrated
SonyA7S2 noise (ELD), each with seeds 0 and 1, written as DNG, read back and rendered by the
classic pipeline with NLM denoising; PSNR (8-bit) against the classic rendering of the clean crop.

Usage: python benchmarks/calibrated_noise_classic.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions, run_classic
from darkraw.raw.dng import write_dng
from darkraw.raw.rawio import read_raw
from darkraw.synth.noise import load_profile
from darkraw.synth.simulate import darken_calibrated, darken_mosaic

SOURCE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raw" / "HERO7_GOPR9231.DNG"
)
TOP, LEFT, SIZE = 600, 1200, 1024


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.round(a * 255) - np.round(b * 255)) ** 2))
    return float(round(10 * np.log10(255**2 / mse), 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/calibrated_noise_classic.json")
    args = parser.parse_args()
    raw = read_raw(SOURCE)
    mosaic = raw.mosaic[TOP : TOP + SIZE, LEFT : LEFT + SIZE]
    meta = raw.meta.replace(height=SIZE, width=SIZE, flip=0)
    ref = run_classic(mosaic, meta, ClassicOptions(1.0, Denoiser.NONE)).image
    sony = load_profile("SonyA7S2")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in (100, 300):
            for seed in (0, 1):
                rng = np.random.default_rng(seed)
                simple, simple_meta = darken_mosaic(mosaic, meta, ratio, rng, black_level=512)
                calib, calib_meta, params = darken_calibrated(
                    mosaic, meta, ratio, sony, np.random.default_rng(seed), black_level=512
                )
                for model, dark, dark_meta, extra in (
                    ("simple", simple, simple_meta, {}),
                    (
                        "SonyA7S2",
                        calib,
                        calib_meta,
                        {"K": round(params.k, 3), "read_scale": round(params.read_scale, 3)},
                    ),
                ):
                    back = read_raw(write_dng(Path(tmp) / "d.dng", dark, dark_meta))
                    out = run_classic(
                        back.mosaic, back.meta, ClassicOptions(float(ratio), Denoiser.NLM)
                    ).image
                    rows.append(
                        {
                            "ratio": ratio,
                            "seed": seed,
                            "noise": model,
                            "psnr": psnr8(out, ref),
                            **extra,
                        }
                    )
                    print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
