"""Check that darkraw's denoised DNGs open in the editors photographers use (issue 25).

For each raw file: darken it (1/RATIO of its light, Poisson shot noise and 2 DN of Gaussian read
noise, as ``benchmarks/classic_vs_libraw.py`` does), written as a DNG that keeps the original's
metadata; enhance it with the default raw denoiser to a DNG and to a PNG (``--render libraw``,
the default); then

- render the DNG with ``darktable-cli``, ``rawtherapee-cli``, ``dcraw`` and LibRaw (rawpy): each
  must exit 0 and give a picture that is not blank;
- compare ``exiftool``'s Make, Model, ISO, ExposureTime, FNumber and DateTimeOriginal of the DNG
  with the original's (a field the original lacks may be added from LibRaw's reading, and is
  listed as added);
- measure PSNR against LibRaw's rendering of the clean frame (camera white balance, no
  auto-brightening, LibRaw's white point) of LibRaw's rendering of the denoised DNG and of
  darkraw's own PNG: the two should agree within 0.3 dB.

``--simulate PHOTO`` also checks a dark DNG written by ``darkraw simulate`` (its x100 frame, with
its clean frame as the reference). A program that is not installed is reported as absent. Install
them on Debian with ``apt-get install darktable rawtherapee libimage-exiftool-perl dcraw``.

    python scripts/check_dng_editors.py ../shared/data/raw/HERO7_GOPR9231.DNG \\
        --simulate ../shared/data/clean/wikipedia_photos/001.png \\
        -o benchmarks/results/dng_editors.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from darkraw.batch import enhance_file
from darkraw.classic.pipeline import ClassicOptions, black_level_map
from darkraw.raw.dng import write_dng
from darkraw.raw.exif import read_source_metadata
from darkraw.raw.fileio import read_image
from darkraw.raw.rawio import read_raw, render_with_libraw

#: What exiftool must show alike in the original and the DNG.
EXIF_FIELDS = ("Make", "Model", "ISO", "ExposureTime", "FNumber", "DateTimeOriginal")

#: Read noise added when darkening, DN (as benchmarks/classic_vs_libraw.py).
READ_NOISE_DN = 2.0


def darken(source: Path, ratio: float, out: Path, seed: int) -> Path:
    """``source`` with 1/``ratio`` of its light, shot and read noise, as a DNG with its metadata."""
    raw = read_raw(source)
    rng = np.random.default_rng(seed)
    black = black_level_map(raw.meta)
    signal = np.clip(raw.mosaic.astype(np.float64) - black, 0, None) / ratio
    noisy = rng.poisson(signal) + rng.normal(0.0, READ_NOISE_DN, signal.shape) + black
    dark = np.clip(np.rint(noisy), 0, raw.meta.white_level)
    return write_dng(out, dark, raw.meta, read_source_metadata(source))


def clean_reference(source: Path, out: Path) -> np.ndarray:
    """LibRaw's rendering of the clean frame, through a DNG written as the denoised one is, so
    that only the pixels differ (a KDC and its DNG differ in LibRaw's handling, not in data)."""
    raw = read_raw(source)
    path = write_dng(out, raw.mosaic, raw.meta, read_source_metadata(source))
    return render_with_libraw(path, adjust_maximum=False)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a8 = np.rint(np.clip(a, 0, 1) * 255)
    b8 = np.rint(np.clip(b, 0, 1) * 255)
    mse = float(np.mean((a8 - b8) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: int = 600) -> tuple[int, str]:
    """Run ``cmd``; its exit status and the end of its output."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not installed"
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]}: timed out"
    return done.returncode, (done.stdout + done.stderr)[-400:]


def picture_mean(path: Path) -> float | None:
    """Mean level of a rendered picture in [0, 1], or ``None`` when it cannot be read."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path).astype(np.float64)
            return float(arr.mean() / (65535.0 if arr.max() > 255 else 255.0))
        if path.suffix.lower() in (".ppm", ".pgm"):
            from PIL import Image

            with Image.open(path) as pil:
                return float(np.asarray(pil, np.float64).mean() / 255.0)
        return float(read_image(path).mean())
    except Exception:
        return None


def open_with_editors(dng: Path, work: Path) -> dict[str, Any]:
    """Render ``dng`` with each program; whether it rendered, and the picture's mean level."""
    results: dict[str, Any] = {}
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home)}
    jobs: dict[str, tuple[list[str], Path]] = {}
    dt_out = work / f"{dng.stem}_darktable.jpg"
    jobs["darktable"] = (
        [
            "darktable-cli",
            str(dng),
            str(dt_out),
            "--core",
            "--configdir",
            str(work / "dtconf"),
            "--library",
            ":memory:",
        ],
        dt_out,
    )
    rt_out = work / f"{dng.stem}_rawtherapee.jpg"
    jobs["rawtherapee"] = (["rawtherapee-cli", "-o", str(rt_out), "-Y", "-c", str(dng)], rt_out)
    for name, (cmd, out) in jobs.items():
        started = time.perf_counter()
        code, tail = run(cmd, env)
        mean = picture_mean(out) if out.exists() else None
        results[name] = {
            "opens": code == 0 and mean is not None and mean > 0.01,
            "exit": code,
            "mean": mean,
            "seconds": round(time.perf_counter() - started, 1),
            **({} if code == 0 else {"output": tail}),
        }
    dcraw_out = work / f"{dng.stem}.ppm"
    try:
        done = subprocess.run(["dcraw", "-w", "-c", str(dng)], capture_output=True, timeout=600)
        code = done.returncode
        dcraw_out.write_bytes(done.stdout)
    except FileNotFoundError:
        code = 127
    mean = picture_mean(dcraw_out) if code == 0 else None
    results["dcraw"] = {"opens": code == 0 and mean is not None and mean > 0.01, "mean": mean}
    try:
        rgb = render_with_libraw(dng, adjust_maximum=False)
        results["rawpy"] = {"opens": float(rgb.mean()) > 0.01, "mean": float(rgb.mean())}
    except Exception as err:
        results["rawpy"] = {"opens": False, "error": str(err)}
    return results


def exif_fields(path: Path) -> dict[str, str | None]:
    code, _ = run(["exiftool", "-ver"])
    if code != 0:
        return {}
    done = subprocess.run(
        ["exiftool", "-j", "-n", *(f"-{f}" for f in EXIF_FIELDS), str(path)],
        capture_output=True,
        text=True,
    )
    found = json.loads(done.stdout)[0] if done.stdout.strip() else {}
    return {f: (None if f not in found else str(found[f])) for f in EXIF_FIELDS}


def check(
    name: str, dark: Path, clean: Path, original: Path, ratio: float, work: Path
) -> dict[str, Any]:
    """Enhance ``dark`` to DNG and PNG and check both against ``clean``."""
    from darkraw.nn.enhance import load_network

    # As darkraw enhance loads it: the Bayer network, or its X-Trans twin for an X-Trans file.
    model = load_network("default")
    options = ClassicOptions(ratio=ratio)
    dng = work / f"{dark.stem}-darkraw.dng"
    png = work / f"{dark.stem}.png"
    started = time.perf_counter()
    enhance_file(dark, dng, options, model=model)
    enhance_file(dark, png, options, model=model)
    seconds = time.perf_counter() - started
    reference = clean_reference(clean, work / f"{clean.stem}_reference.dng")
    dng_render = render_with_libraw(dng, adjust_maximum=False)
    png_image = read_image(png)
    psnr_dng, psnr_png = psnr(dng_render, reference), psnr(png_image, reference)
    before, after = exif_fields(original), exif_fields(dng)
    return {
        "file": name,
        "ratio": ratio,
        "size": list(reference.shape[1:]),
        "enhance_seconds": round(seconds, 1),
        "editors": open_with_editors(dng, work),
        "exiftool": {
            "original": before,
            "dng": after,
            # A field the original lacks may be filled from LibRaw's reading (a KDC's ISO).
            "match": bool(before)
            and all(before[f] == after[f] for f in EXIF_FIELDS if before[f] is not None),
            "added": [f for f in EXIF_FIELDS if before.get(f) is None and after.get(f)],
        },
        "psnr_db": {
            "libraw_render_of_dng": round(psnr_dng, 2),
            "darkraw_png": round(psnr_png, 2),
            "difference": round(psnr_dng - psnr_png, 2),
            "within_0_3_db": abs(psnr_dng - psnr_png) <= 0.3,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Darken raw files, enhance them to DNG with darkraw's default raw denoiser, "
        "and check the DNG in darktable-cli, rawtherapee-cli, dcraw and LibRaw, its metadata "
        "with exiftool, and LibRaw's rendering of it against darkraw's own PNG (PSNR against "
        "the clean frame).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[-1] if __doc__ else None,
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="RAW", help="raw files to check")
    parser.add_argument(
        "--simulate",
        type=Path,
        action="append",
        default=[],
        metavar="PHOTO",
        help="also check the x100 dark DNG `darkraw simulate` writes from this photo (repeatable)",
    )
    parser.add_argument("--ratio", type=float, default=100.0, help="darkening (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    parser.add_argument("-o", "--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--work", type=Path, default=None, help="keep the files made here")
    args = parser.parse_args(argv)
    if not args.inputs and not args.simulate:
        parser.error("give raw files or --simulate PHOTO")
    tools = {t: shutil.which(t) is not None for t in ("darktable-cli", "rawtherapee-cli", "dcraw")}
    tools["exiftool"] = shutil.which("exiftool") is not None
    with tempfile.TemporaryDirectory(prefix="darkraw-editors-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for source in args.inputs:
            dark = darken(
                source, args.ratio, work / f"{source.stem}_x{args.ratio:g}.dng", args.seed
            )
            rows.append(check(source.name, dark, source, source, args.ratio, work))
            print(json.dumps(rows[-1]), flush=True)
        for photo in args.simulate:
            sim = work / f"sim_{photo.stem}"
            cmd = [sys.executable, "-m", "darkraw", "simulate", str(photo), "-o", str(sim)]
            subprocess.run([*cmd, "--ratios", "100", "--seed", str(args.seed)], check=True)
            dark, clean = sim / f"{photo.stem}_x100.dng", sim / f"{photo.stem}_clean.dng"
            rows.append(check(f"simulate:{photo.name}", dark, clean, dark, 100.0, work))
            print(json.dumps(rows[-1]), flush=True)
    result = {"tools": tools, "read_noise_dn": READ_NOISE_DN, "seed": args.seed, "files": rows}
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    ok = all(
        all(e["opens"] for e in r["editors"].values())
        and r["exiftool"]["match"]
        and r["psnr_db"]["within_0_3_db"]
        for r in rows
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
