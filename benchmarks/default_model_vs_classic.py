"""Do real raw files, darkened with a real camera's noise, come back closer to their clean
rendering with the network than with the classic pipeline? (Issue 6's acceptance.)

Every raw file in ../shared/data/raw/ (three LibRaw files and two bare mosaics) is read at full
resolution, rendered clean by the classic pipeline with no denoising (the reference), then given
1/100 and 1/300 of its light with the calibrated SonyA7S2 noise (ELD: shot, Tukey-lambda read,
row and quantisation noise, black level 512 DN), written as a DNG and read back the way a user's
file would be. Both methods render the dark frame at its true ratio with the reference's sRGB
gamma: the classic pipeline with its default denoiser (BM3D up to 1 Mpixel per plane, NLM
above), and the network (tiled, exact margin). Scores: PSNR and SSIM on 8-bit images (SID's
reporting) against the reference, per file and ratio, and SSIM in the reference's flatter and
more textured halves (:func:`darkraw.training.evaluate.ssim_by_texture`).

The network runs as ``darkraw enhance`` runs it (``precision=auto``: bf16 where the CPU has it
natively; ``ensemble=auto``: 8 flipped copies averaged for the three small files, one pass for
the GoPro frames, whose 9-12 Mpixel take the whole budget); ``--precision fp32`` forces fp32, and
``--also-fp32`` scores an fp32 pass beside the default one and records how far apart the two
images are; ``--ensemble N`` runs it as ``darkraw enhance --ensemble N`` does.

One noise draw per frame is one sample, and draws differ most in the system gain K (log-uniform
over the profile's 0.09-6 DN/e-): on the Kodak DC50 file at x100, seeds 0-4 drew K 1.4-5.8 and
the network's SSIM ranged 0.62-0.87. ``--seeds 0,1,2,3,4`` darkens each frame once per seed,
scores every draw (rows carry their ``seed``) and prints the per-frame means, on which the wins
are counted; the images show the first seed.

Usage:
    python benchmarks/default_model_vs_classic.py [--model default|PATH] [--ratios 100,300]
        [--precision auto|fp32|bf16] [--also-fp32] [--ensemble auto|1|2|4|8] [--seeds 0,1,2]
        [--out benchmarks/results/default_model_vs_classic.json] [--images docs/images]

The comparison images (``acceptance_<file>_x<ratio>.png``: dark as shot, classic, network,
reference, on a crop at full resolution) go to ``--images``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions, ClassicResult, GammaCurve, orient, run_classic
from darkraw.nn.infer import InferenceOptions, enhance_raw_network, ensemble_copies, sid_network
from darkraw.nn.precision import Precision, autocast_dtype
from darkraw.raw.dng import write_dng
from darkraw.raw.figures import side_by_side
from darkraw.raw.fileio import quantize, write_image
from darkraw.raw.rawio import BareMosaicSpec, RawImage, read_raw
from darkraw.synth.simulate import DarkFrame, SimulationConfig, simulate_dark
from darkraw.synth.sources import CleanRaw, clean_from_raw
from darkraw.training.evaluate import score, ssim_by_texture

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raw"

#: The files and what the bare mosaics do not say about themselves (from data/README.md).
FILES: dict[str, BareMosaicSpec | None] = {
    "HERO7_GOPR9231.DNG": None,
    "Fusion_GPBK7066.DNG": None,
    "RAW_KODAK_DC50.KDC": None,
    "halide_bayer_small.png": BareMosaicSpec("GRBG", white_level=1023, black_level=25),
    "aisp_vivoX90_x90_3_4.npy": BareMosaicSpec("RGGB", white_level=4095, black_level=0),
}

#: The network's single pass, for the probes that study the model itself (flat fields, noise
#: levels, brightness, the clean ceiling): their figures were measured so, and an ensemble would
#: mix the model's behaviour with the averaging's.
ONE_PASS = InferenceOptions(ensemble=1)

#: Side of the full-resolution crop shown in the comparison images.
CROP = 640


def clean_and_reference(name: str) -> tuple[CleanRaw, np.ndarray]:
    """One of ``FILES`` as clean raw, and its reference: the clean rendering, oriented."""
    raw = read_raw(DATA / name, FILES[name])
    clean = clean_from_raw(raw.mosaic, raw.meta, GammaCurve.SRGB)
    return clean, orient(clean.reference, clean.meta.flip)


def as_user_file(dark: DarkFrame, folder: str | Path) -> RawImage:
    """A dark frame written as a DNG in ``folder`` and read back, as a user's file would be."""
    return read_raw(write_dng(Path(folder) / "dark.dng", dark.mosaic_dn, dark.meta))


def render_classic(dark: RawImage, ratio: float) -> ClassicResult:
    """The classic pipeline as the benchmarks score it: default denoiser, the sRGB curve."""
    options = ClassicOptions(ratio=ratio, denoiser=Denoiser.AUTO, gamma=GammaCurve.SRGB)
    return run_classic(dark.mosaic, dark.meta, options)


def write_rows(path: str | Path, model: str, rows: list[dict[str, object]]) -> Path:
    """Write a benchmark's rows (and the model they are for) as JSON; the path written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(model), "rows": rows}, indent=2) + "\n")
    return out


def ssim8_halves(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """8-bit SSIM in the reference's flatter and more textured halves."""
    out8 = quantize(np.clip(output, 0, 1), 8).astype(np.float32) / 255
    ref8 = quantize(reference, 8).astype(np.float32) / 255
    flat, textured = ssim_by_texture(out8, ref8, parts=2)
    return round(flat, 4), round(textured, 4)


def frame_means(rows: list[dict[str, object]]) -> dict[tuple[str, float], dict[str, float]]:
    """Per (file, ratio): both methods' PSNR and SSIM averaged over its noise draws."""
    keys = ("classic_psnr", "classic_ssim", "network_psnr", "network_ssim")
    frames: dict[tuple[str, float], list[dict[str, object]]] = {}
    for row in rows:
        frames.setdefault((str(row["file"]), float(str(row["ratio"]))), []).append(row)
    return {
        frame: {"draws": len(group)}
        | {key: round(float(np.mean([float(str(r[key])) for r in group])), 4) for key in keys}
        for frame, group in frames.items()
    }


def center_crop(image: np.ndarray, side: int) -> np.ndarray:
    _, h, w = image.shape
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[:, top : top + side, left : left + side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sid", help="'sid' or a SID model/checkpoint")
    parser.add_argument("--ratios", default="100,300")
    parser.add_argument("--files", default="", help="comma-separated subset of the files")
    parser.add_argument("--seeds", default="0", help="comma-separated noise seeds")
    parser.add_argument("--out", default="benchmarks/results/default_model_vs_classic.json")
    parser.add_argument("--images", default="docs/images")
    parser.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    parser.add_argument("--also-fp32", action="store_true", help="score an fp32 pass as well")
    parser.add_argument(
        "--ensemble",
        default="auto",
        choices=["auto", "1", "2", "4", "8"],
        help="self-ensemble size; auto as darkraw enhance (8 copies up to 1.5 Mpixel, 1 above)",
    )
    args = parser.parse_args()
    ensemble = "auto" if args.ensemble == "auto" else int(args.ensemble)
    inference = InferenceOptions(precision=Precision(args.precision), ensemble=ensemble)
    compute = autocast_dtype(inference.precision, torch.device("cpu")) or torch.float32
    ratios = [float(r) for r in args.ratios.split(",")]
    model = sid_network(args.model)
    images = Path(args.images)
    images.mkdir(parents=True, exist_ok=True)
    simulation = SimulationConfig(camera="SonyA7S2")
    profile = simulation.profile()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        chosen = args.files.split(",") if args.files else list(FILES)
        for name in chosen:
            if not (DATA / name).exists():
                print(f"skipped {name}: not in {DATA}")
                continue
            clean, reference = clean_and_reference(name)
            for ratio, seed in itertools.product(ratios, seeds):
                rng = np.random.default_rng([seed, int(ratio)])
                dark = simulate_dark(
                    clean.raw_lin, clean.meta, ratio, simulation, rng, profile=profile
                )
                back = as_user_file(dark, tmp)
                start = time.perf_counter()
                classic = render_classic(back, ratio)
                classic_s = time.perf_counter() - start
                start = time.perf_counter()
                network = enhance_raw_network(back.mosaic, back.meta, model, ratio, inference).image
                network_s = time.perf_counter() - start
                c, n = score(classic.image, reference), score(network, reference)
                row: dict[str, object] = {
                    "file": name,
                    "size": f"{clean.meta.width}x{clean.meta.height}",
                    "ratio": ratio,
                    "seed": seed,
                    "classic_denoiser": classic.denoiser.value,
                    "classic_psnr": round(c.psnr8, 2),
                    "classic_ssim": round(c.ssim8, 4),
                    "network_psnr": round(n.psnr8, 2),
                    "network_ssim": round(n.ssim8, 4),
                    "classic_ssim_flat_textured": ssim8_halves(classic.image, reference),
                    "network_ssim_flat_textured": ssim8_halves(network, reference),
                    "classic_s": round(classic_s, 2),
                    "network_s": round(network_s, 2),
                    "K": round(getattr(dark.params, "k", float("nan")), 3),
                    "network_compute": str(compute).removeprefix("torch."),
                    "network_ensemble": ensemble_copies(ensemble, reference[0].size),
                }
                if args.also_fp32:
                    fp32 = InferenceOptions(precision=Precision.FP32, ensemble=ensemble)
                    start = time.perf_counter()
                    exact = enhance_raw_network(back.mosaic, back.meta, model, ratio, fp32).image
                    row["fp32_s"] = round(time.perf_counter() - start, 2)
                    f = score(exact, reference)
                    row["fp32_psnr"], row["fp32_ssim"] = round(f.psnr8, 2), round(f.ssim8, 4)
                    diff = np.abs(network - exact)
                    row["max_abs_diff_vs_fp32"] = float(diff.max())
                    row["mean_abs_diff_vs_fp32"] = float(diff.mean())
                rows.append(row)
                print(json.dumps(row), flush=True)
                if seed != seeds[0]:
                    continue
                as_shot = run_classic(
                    back.mosaic,
                    back.meta,
                    ClassicOptions(ratio=1.0, denoiser=Denoiser.NONE, gamma=GammaCurve.SRGB),
                ).image
                stem = Path(name).stem
                panels = [
                    ("dark, as shot", as_shot),
                    (f"classic ({classic.denoiser.value})", classic.image),
                    ("network", network),
                    ("reference (clean raw)", reference),
                ]
                captions = [
                    "",
                    f"PSNR {c.psnr8:.2f} dB, SSIM {c.ssim8:.3f}",
                    f"PSNR {n.psnr8:.2f} dB, SSIM {n.ssim8:.3f}",
                    "",
                ]
                sheet = side_by_side(
                    [(label, center_crop(img, CROP)) for label, img in panels],
                    max_width=2000,
                    captions=captions,
                )
                write_image(images / f"acceptance_{stem}_x{ratio:g}.png", sheet)
    out = write_rows(args.out, args.model, rows)
    means = frame_means(rows)
    if len(seeds) > 1:
        for (file, ratio), mean in means.items():
            print(json.dumps({"file": file, "ratio": ratio} | mean))
    psnr_wins = sum(f["network_psnr"] > f["classic_psnr"] for f in means.values())
    ssim_wins = sum(f["network_ssim"] > f["classic_ssim"] for f in means.values())
    print(
        f"network closer on {psnr_wins} of {len(means)} frames in PSNR, {ssim_wins} in SSIM "
        f"(mean of {len(seeds)} noise draw(s) each); written: {out}"
    )


if __name__ == "__main__":
    main()
