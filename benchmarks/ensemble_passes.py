"""The raw denoiser's self-ensemble of 1, 2, 4 and 8 passes, on Bayer and X-Trans frames.

Each pass runs the network on the frame mirrored or turned (``darkraw.nn.rawdenoise.
BAYER_PASSES``, ``XTRANS_PASSES``) and the passes are averaged. Bayer: the acceptance benchmark's
frames and groups (``benchmarks/denoiser_vs_classic.py``: its three small raw files, as
``benchmarks/checkpoint_compare.py`` takes them, and six held-out photos; its references and
scores), the bundled default model. X-Trans: the X-Trans
benchmark's frames (``benchmarks/xtrans_denoiser_vs_classic.py``: six held-out photos on the
X-Trans layout), the default's X-Trans twin. Both in torch fp32 and rendered by LibRaw, as
``darkraw enhance`` does; PSNR / SSIM / mean CIEDE2000 per group, means over the frames. The
classic pipeline's figures for the same frames are in those benchmarks' results.

Usage:
    python benchmarks/ensemble_passes.py [--layouts bayer,xtrans] [--passes 1,2,4,8]
        [--groups ...] [--bayer default] [--xtrans xtrans] [--demo]
        [--out benchmarks/results/ensemble_passes.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import denoiser_vs_classic as bayer_bench  # noqa: E402
import xtrans_denoiser_vs_classic as xtrans_bench  # noqa: E402
from checkpoint_compare import SMALL_FILES  # noqa: E402

from darkraw.demo import SAMPLE_RATIO, sample_path  # noqa: E402
from darkraw.nn.denoiser import RawDenoiser  # noqa: E402
from darkraw.nn.infer import resolve_model  # noqa: E402
from darkraw.nn.rawdenoise import DenoiseOptions, enhance_with_denoiser  # noqa: E402
from darkraw.raw.rawio import read_raw, render_mosaic_with_libraw  # noqa: E402


def options(passes: int, gamma: object = None) -> DenoiseOptions:
    if gamma is None:
        return DenoiseOptions(precision="fp32", ensemble=passes)
    return DenoiseOptions(gamma=gamma, precision="fp32", ensemble=passes)  # type: ignore[arg-type]


def bayer_scores(
    net: RawDenoiser, passes: list[int], groups: list[str], seed: int
) -> dict[str, dict[str, list[float]]]:
    frames = [bayer_bench.raw_frame(n) for n in SMALL_FILES.split(",")]
    frames += bayer_bench.photo_frames(6, seed)
    out: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            _, ratio = bayer_bench.GROUPS[group]
            per: dict[int, list[list[float]]] = {n: [] for n in passes}
            seconds: dict[int, float] = dict.fromkeys(passes, 0.0)
            for frame in frames:
                dark = bayer_bench.as_user_file(
                    frame.raw_lin, frame.meta, group, seed, Path(tmp), frame.name
                )
                for n in passes:
                    start = time.perf_counter()
                    result = enhance_with_denoiser(
                        dark.mosaic,
                        dark.meta,
                        net,
                        ratio,
                        options(n, frame.gamma),
                        black_range=bayer_bench.black_range(group, dark),
                    )
                    seconds[n] += time.perf_counter() - start
                    rendered = bayer_bench.libraw_of(frame, result.mosaic_dn, dark, Path(tmp))
                    s = bayer_bench.scores(rendered, frame.reference)
                    per[n].append([s["psnr"], s["ssim"], s["de2000"]])
            out[group] = {str(n): summary(per[n], seconds[n]) for n in passes}
            print("bayer", group, json.dumps(out[group]), flush=True)
    return out


def demo_scores(net: RawDenoiser, passes: list[int]) -> dict[str, list[float]]:
    """The demo crop against LibRaw's rendering of the clean crop (the acceptance benchmark's)."""
    reference = bayer_bench.demo_reference()
    dark = read_raw(sample_path())
    out = {}
    for n in passes:
        start = time.perf_counter()
        result = enhance_with_denoiser(dark.mosaic, dark.meta, net, SAMPLE_RATIO, options(n))
        seconds = time.perf_counter() - start
        rendered = render_mosaic_with_libraw(sample_path(), result.mosaic_dn, dark.meta)
        s = bayer_bench.scores(rendered, reference)
        out[str(n)] = summary([[s["psnr"], s["ssim"], s["de2000"]]], seconds)
    print("bayer demo", json.dumps(out), flush=True)
    return out


def xtrans_scores(
    net: RawDenoiser, passes: list[int], groups: list[str], seed: int
) -> dict[str, dict[str, list[float]]]:
    frames = xtrans_bench.frames(6, seed)
    out: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            _, ratio = xtrans_bench.GROUPS[group]
            per: dict[int, list[list[float]]] = {n: [] for n in passes}
            seconds: dict[int, float] = dict.fromkeys(passes, 0.0)
            for frame in frames:
                lin, meta = frame["xtrans"]  # type: ignore[misc]
                dark = xtrans_bench.darkened(lin, meta, group, seed, Path(tmp) / "x.dng")
                for n in passes:
                    start = time.perf_counter()
                    result = enhance_with_denoiser(dark.mosaic, dark.meta, net, ratio, options(n))
                    seconds[n] += time.perf_counter() - start
                    rendered = render_mosaic_with_libraw(
                        None, result.mosaic_dn, dark.meta, gamma=xtrans_bench.CURVE
                    )
                    s = bayer_bench.scores(rendered, frame["reference"])  # type: ignore[arg-type]
                    per[n].append([s["psnr"], s["ssim"], s["de2000"]])
            out[group] = {str(n): summary(per[n], seconds[n]) for n in passes}
            print("xtrans", group, json.dumps(out[group]), flush=True)
    return out


def summary(rows: list[list[float]], seconds: float) -> list[float]:
    """Mean PSNR, SSIM, CIEDE2000 over the frames, and the seconds the denoiser took in all."""
    psnr, ssim, de = np.mean(rows, axis=0)
    return [round(float(psnr), 3), round(float(ssim), 4), round(float(de), 3), round(seconds, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", default="bayer,xtrans")
    parser.add_argument("--passes", default="1,2,4,8")
    parser.add_argument("--groups", default=",".join(bayer_bench.GROUPS))
    parser.add_argument("--bayer", default="default")
    parser.add_argument("--xtrans", default="xtrans")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", action="store_true", help="the demo crop too (Bayer)")
    parser.add_argument("--out", default="benchmarks/results/ensemble_passes.json")
    args = parser.parse_args()
    passes = [int(p) for p in args.passes.split(",")]
    groups = [g for g in args.groups.split(",") if g]
    result: dict[str, object] = {
        "what": "mean PSNR, SSIM, CIEDE2000 over the frames, and the denoiser's seconds for all "
        "of them (torch fp32, LibRaw rendering), for each number of passes",
        "passes": passes,
        "seed": args.seed,
    }
    for layout, spec, run in (
        ("bayer", args.bayer, bayer_scores),
        ("xtrans", args.xtrans, xtrans_scores),
    ):
        if layout not in args.layouts.split(","):
            continue
        net = resolve_model(spec)
        if not isinstance(net, RawDenoiser):
            raise SystemExit(f"{spec} is not a raw denoiser")
        result[layout] = {"model": spec, "groups": run(net, passes, groups, args.seed)}
        if layout == "bayer" and args.demo:
            result["bayer"]["demo"] = demo_scores(net, passes)  # type: ignore[index]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
