"""How close is darkraw's classic pipeline to LibRaw, and how well does it rescue dark frames?

For each LibRaw-readable file in ../shared/data/raw/:
1. the classic pipeline at ratio 1 without denoising, against LibRaw's own rendering
   (``postprocess(use_camera_wb=True, no_auto_bright=True)``), PSNR/SSIM on 8-bit images;
2. a dark copy with 1/100 (and 1/300) of the light, Poisson shot noise (gain 1 DN/e-) and
   2 DN Gaussian read noise, black level 512, rendered by ``--method classic --ratio N``
   with each denoiser, against the same LibRaw rendering of the clean file.
BM3D runs on a 1024x1024 centre crop (it takes ~35 s per megapixel here); the rest on full frames.

Usage: python benchmarks/classic_vs_libraw.py [--out benchmarks/results/classic_vs_libraw.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions, run_classic
from darkraw.raw.dng import write_dng
from darkraw.raw.figures import side_by_side
from darkraw.raw.fileio import write_image
from darkraw.raw.rawio import read_raw, render_with_libraw
from darkraw.synth.simulate import darken_mosaic

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raw"
FILES = ["HERO7_GOPR9231.DNG", "Fusion_GPBK7066.DNG", "RAW_KODAK_DC50.KDC"]
CROP = 1024


def metrics(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    a = np.round(ours * 255) / 255
    b = np.round(ref * 255) / 255
    mse = float(np.mean((a - b) ** 2))
    ta = torch.from_numpy(a[None].astype(np.float32))
    tb = torch.from_numpy(b[None].astype(np.float32))
    return {
        "psnr": round(10 * np.log10(1 / mse), 2),
        # A tuple comes back only with return_full_image=True.
        "ssim": round(float(cast(torch.Tensor, ssim(ta, tb, data_range=1.0))), 4),
    }


def centre_crop(mosaic: np.ndarray, size: int) -> tuple[slice, slice]:
    h, w = mosaic.shape
    top = (max(h - size, 0) // 4) * 2
    left = (max(w - size, 0) // 4) * 2
    return slice(top, top + size), slice(left, left + size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/classic_vs_libraw.json")
    parser.add_argument("--figure-dir", default="docs/images")
    args = parser.parse_args()
    rows = []
    tmp = Path(args.out).parent / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        path = DATA / name
        raw = read_raw(path)
        ref = render_with_libraw(path)
        t0 = time.perf_counter()
        clean = run_classic(raw.mosaic, raw.meta, ClassicOptions(1.0, Denoiser.NONE)).image
        rows.append(
            {
                "file": name,
                "case": "clean, ratio 1",
                "denoiser": "none",
                "seconds": round(time.perf_counter() - t0, 2),
                **metrics(clean, ref),
            }
        )
        print(rows[-1], flush=True)
        for ratio in (100, 300):
            dark, dark_meta = darken_mosaic(
                raw.mosaic, raw.meta, ratio, np.random.default_rng(ratio), black_level=512
            )
            # Through a real DNG file, as a user's dark raw would arrive.
            dng = write_dng(tmp / f"{Path(name).stem}_x{ratio}.dng", dark, dark_meta)
            dark_raw = read_raw(dng)
            panels = [("LibRaw, clean", ref)]
            for denoiser in (Denoiser.NONE, Denoiser.NLM):
                t0 = time.perf_counter()
                out = run_classic(
                    dark_raw.mosaic, dark_raw.meta, ClassicOptions(float(ratio), denoiser)
                ).image
                rows.append(
                    {
                        "file": name,
                        "case": f"dark x{ratio}",
                        "denoiser": denoiser.value,
                        "seconds": round(time.perf_counter() - t0, 2),
                        **metrics(out, ref),
                    }
                )
                print(rows[-1], flush=True)
                panels.append((f"classic x{ratio}, {denoiser.value}", out))
            if ratio == 100 and name.startswith("HERO7"):
                write_image(
                    Path(args.figure_dir) / "classic_hero7_x100.png",
                    side_by_side(panels, max_width=1500),
                )
            # BM3D on a centre crop, compared with NLM on the same crop.
            rs, cs = centre_crop(dark_raw.mosaic, CROP)
            crop = dark_raw.mosaic[rs, cs]
            crop_meta = dark_raw.meta.replace(height=crop.shape[0], width=crop.shape[1], flip=0)
            ref_crop = run_classic(
                raw.mosaic[rs, cs],
                raw.meta.replace(height=crop.shape[0], width=crop.shape[1], flip=0),
                ClassicOptions(1.0, Denoiser.NONE),
            ).image
            for denoiser in (Denoiser.NLM, Denoiser.BM3D):
                t0 = time.perf_counter()
                out = run_classic(crop, crop_meta, ClassicOptions(float(ratio), denoiser)).image
                rows.append(
                    {
                        "file": name,
                        "case": f"dark x{ratio}, {crop.shape[0]}x"
                        f"{crop.shape[1]} crop vs classic clean",
                        "denoiser": denoiser.value,
                        "seconds": round(time.perf_counter() - t0, 2),
                        **metrics(out, ref_crop),
                    }
                )
                print(rows[-1], flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print("\n| file | case | denoiser | PSNR (dB) | SSIM | time (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['file']} | {r['case']} | {r['denoiser']} | {r['psnr']} | {r['ssim']} "
            f"| {r['seconds']} |"
        )
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
