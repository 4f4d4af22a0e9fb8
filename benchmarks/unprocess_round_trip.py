"""Unprocess -> classic pipeline round trip on the clean photos of ../shared/data/clean/.

Each photo is unprocessed with a virtual camera drawn from the default UnprocessConfig (seed =
photo index), then rendered by the classic pipeline (no denoising, ratio 1 / brightness, sRGB
gamma). PSNR (8-bit) against the photo, with and without the Bayer mosaic in between: without it
the inversion of gamma, colour matrix and white balance is measured alone.

Usage: python benchmarks/unprocess_round_trip.py [--folder cbsd68] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import (
    ClassicOptions,
    GammaCurve,
    color_correct,
    gamma_decode,
    gamma_encode,
    run_classic,
)
from darkraw.raw.fileio import read_image
from darkraw.synth.unprocess import (
    UnprocessConfig,
    inverse_color_correct,
    inverse_white_balance,
    sample_unprocess_params,
    unprocess,
)

CLEAN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clean"


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.round(a * 255) - np.round(b * 255)) ** 2))
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="cbsd68")
    parser.add_argument("--out", default="benchmarks/results/unprocess_round_trip.json")
    args = parser.parse_args()
    config = UnprocessConfig()
    rows = []
    for i, path in enumerate(sorted((CLEAN / args.folder).glob("*.png"))):
        photo = read_image(path)
        params = sample_unprocess_params(config, np.random.default_rng(i))
        raw_lin, meta = unprocess(photo, params)
        options = ClassicOptions(1 / params.brightness, Denoiser.NONE, gamma=GammaCurve.SRGB)
        full = run_classic(raw_lin, meta, options).image
        cam = inverse_white_balance(
            inverse_color_correct(gamma_decode(photo, GammaCurve.SRGB), params.rgb_cam),
            params.wb_gains,
            params.brightness,
        )
        gains = np.asarray(params.wb_gains, dtype=np.float32)[:, None, None] / params.brightness
        no_mosaic = gamma_encode(
            color_correct(np.clip(cam * gains, 0, 1), np.asarray(params.rgb_cam)), GammaCurve.SRGB
        )
        rows.append(
            {
                "photo": path.name,
                "psnr": round(psnr8(full, photo), 2),
                "psnr_without_mosaic": round(psnr8(no_mosaic, photo), 2),
            }
        )
    Path(args.out).write_text(json.dumps(rows, indent=2))
    full_psnr = [r["psnr"] for r in rows]
    bare = [r["psnr_without_mosaic"] for r in rows]
    print(f"{len(rows)} photos of {args.folder}")
    print(
        f"round trip PSNR: mean {np.mean(full_psnr):.2f} dB, min {min(full_psnr):.2f}, "
        f"max {max(full_psnr):.2f}"
    )
    print(f"without the mosaic: mean {np.mean(bare):.2f} dB, min {min(bare):.2f}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
