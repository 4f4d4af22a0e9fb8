"""The X-Trans raw denoiser against the classic pipeline, on X-Trans frames made from photos.

No real X-Trans (Fujifilm) raw file is in the development data, so every frame is a held-out
development photo (the denoisers' validation split, as ``benchmarks/denoiser_vs_classic.py``
takes them) unprocessed into camera RGB with a seeded virtual camera, sampled on Fujifilm's
X-Trans layout (:data:`darkraw.raw.cfa.XTRANS_TILE`), darkened in the Bayer benchmark's five
groups (ELD's Sony A7S2 calibration at x100 and x300 and Nikon D850's at x100, its colour bias
included; Poisson-Gaussian noise of 1 DN per electron and 2 DN read at x100 and x4) and written
as an X-Trans DNG, read back as a user's file would be. Photos are centre crops of 516x768
pixels (LibRaw renders X-Trans frames from 512 pixels a side); photos smaller than that are
skipped. Reference: the photo itself, through the virtual camera's white balance, colour matrix
and the sRGB curve (as the Bayer benchmark scores its photos).

Methods, all at the true ratio:

- ``classic``: darkraw's classic pipeline (BM3D where it runs, its X-Trans interpolation);
- ``denoiser``: the X-Trans raw denoiser, rendered by darkraw's pipeline;
- ``denoiser_libraw``: the same clean mosaic rendered by LibRaw (``darkraw enhance``'s default);
- ``clean_libraw``: LibRaw's rendering of the clean X-Trans frame, no noise at all: what LibRaw's
  X-Trans demosaicking alone costs against the photo (the ceiling of ``denoiser_libraw``);
- ``bayer_libraw``: for context, the bundled Bayer denoiser (LibRaw rendering) on the same photo
  unprocessed onto an RGGB mosaic, darkened alike (its own noise draw, the same camera setting).

Each frame of a group draws its own camera setting (gain, noise scales, colour-bias row), as
the Bayer benchmark does; ``--draw group`` draws one for the group, as results before the
twelfth session did.

Scores on 8-bit images: PSNR, SSIM and the mean CIEDE2000 colour difference.

Usage:
    python benchmarks/xtrans_denoiser_vs_classic.py [--model xtrans|PATH] [--bayer default]
        [--groups a_sony_x100,...] [--photos 6] [--seed 0] [--draw frame|group]
        [--out benchmarks/results/xtrans_denoiser_vs_classic.json] [--images docs/images]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions, GammaCurve, run_classic
from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import load_model
from darkraw.nn.modelfiles import model_source
from darkraw.nn.rawdenoise import LIBRAW_CURVES, DenoiseOptions, enhance_with_denoiser
from darkraw.raw.cfa import XTRANS_TILE, cfa_colours
from darkraw.raw.dng import write_dng
from darkraw.raw.figures import side_by_side
from darkraw.raw.fileio import read_image, write_image
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import RawImage, read_raw, render_mosaic_with_libraw
from darkraw.synth.simulate import simulate_dark
from darkraw.synth.sources import camera_rgb, collect_sources, unprocess_photo
from darkraw.synth.unprocess import UnprocessConfig, sample_unprocess_params
from darkraw.training.train import split_sources

sys.path.insert(0, str(Path(__file__).resolve().parent))
import denoiser_vs_classic
from denoiser_vs_classic import (
    DATA,
    GROUPS,
    crop,
    darkening_rng,
    group_means,
    scores,
    timed_classic,
)

#: Centre crops of the photos: whole 6x6 tiles, at least LibRaw's X-Trans minimum a side.
PHOTO_SIDE = (516, 768)

METHODS = ("classic", "denoiser", "denoiser_libraw", "clean_libraw", "bayer_libraw")

#: The curve photos are scored with (the reference's), as LibRaw draws it.
CURVE = LIBRAW_CURVES[GammaCurve.SRGB]


def xtrans_meta(height: int, width: int, gains: tuple[float, ...], matrix: object) -> RawMetadata:
    """An X-Trans frame in unit levels (black 0, white 1) with a virtual camera's colour."""
    return RawMetadata(
        cfa_tile=XTRANS_TILE,
        black_tile=tuple((0.0,) * 6 for _ in range(6)),
        white_level=1.0,
        height=height,
        width=width,
        wb_gains=(float(gains[0]), float(gains[1]), float(gains[2])),
        rgb_cam=matrix,  # type: ignore[arg-type]
    )


def frames(count: int, seed: int) -> list[dict[str, object]]:
    """Held-out photos large enough, each as an X-Trans and an RGGB frame of one camera."""
    files = collect_sources([DATA / "clean"])
    _, held_out = split_sources(files, 0.08)
    rng = np.random.default_rng([seed, 7])
    out: list[dict[str, object]] = []
    for path in held_out:
        rgb = read_image(path)
        h, w = rgb.shape[1:]
        if h < PHOTO_SIDE[0] or w < PHOTO_SIDE[1]:
            continue
        top, left = (h - PHOTO_SIDE[0]) // 2, (w - PHOTO_SIDE[1]) // 2
        photo = rgb[:, top : top + PHOTO_SIDE[0], left : left + PHOTO_SIDE[1]]
        params = sample_unprocess_params(UnprocessConfig(), rng)
        bayer = unprocess_photo(photo, params, "RGGB", source=path)
        cam = np.clip(camera_rgb(photo, params), 0.0, 1.0)
        colours = cfa_colours(XTRANS_TILE, *PHOTO_SIDE)
        mosaic = np.take_along_axis(cam, colours[None], axis=0)[0].astype(np.float32)
        meta = xtrans_meta(*PHOTO_SIDE, params.wb_gains, bayer.meta.rgb_cam)
        out.append(
            {
                "name": f"{path.parent.name}/{path.name}",
                "xtrans": (mosaic, meta),
                "bayer": (bayer.raw_lin, bayer.meta),
                "reference": bayer.reference,
            }
        )
        if len(out) == count:
            break
    return out


def darkened(
    raw_lin: np.ndarray, meta: RawMetadata, group: str, seed: int, path: Path, name: str
) -> RawImage:
    """Frame ``name`` darkened in ``group`` and read back from a DNG, as a user's file (its
    camera setting drawn for it: :func:`denoiser_vs_classic.darkening_rng`)."""
    simulation, ratio = GROUPS[group]
    rng = darkening_rng(group, seed, name)
    dark = simulate_dark(raw_lin, meta, ratio, simulation, rng)
    return read_raw(write_dng(path, dark.mosaic_dn, dark.meta))


def clean_dng(raw_lin: np.ndarray, meta: RawMetadata, path: Path) -> RawImage:
    """The clean frame as a 14-bit DNG (black 512), read back."""
    dn = np.rint(512 + raw_lin * (16383 - 512)).astype(np.uint16)
    black = tuple((512.0,) * len(meta.black_tile[0]) for _ in meta.black_tile)
    return read_raw(write_dng(path, dn, meta.replace(black_tile=black, white_level=16383)))


def run_frame(
    frame: dict[str, object],
    group: str,
    seed: int,
    xtrans: RawDenoiser,
    bayer: RawDenoiser,
    tmp: Path,
) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    _, ratio = GROUPS[group]
    reference = frame["reference"]
    assert isinstance(reference, np.ndarray)
    x_lin, x_meta = frame["xtrans"]  # type: ignore[misc]
    b_lin, b_meta = frame["bayer"]  # type: ignore[misc]
    dark = darkened(x_lin, x_meta, group, seed, tmp / "x.dng", str(frame["name"]))
    images: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    classic, times["classic"] = timed_classic(dark, ratio, GammaCurve.SRGB)
    images["classic"] = classic.image
    start = time.perf_counter()
    settings = DenoiseOptions(gamma=GammaCurve.SRGB, precision="fp32", renderer="darkraw")
    result = enhance_with_denoiser(dark.mosaic, dark.meta, xtrans, ratio, settings)
    images["denoiser"], times["denoiser"] = result.image, time.perf_counter() - start
    images["denoiser_libraw"] = render_mosaic_with_libraw(
        None, result.mosaic_dn, dark.meta, gamma=CURVE
    )
    clean = clean_dng(x_lin, x_meta, tmp / "clean.dng")
    images["clean_libraw"] = render_mosaic_with_libraw(None, clean.mosaic, clean.meta, gamma=CURVE)
    bayer_dark = darkened(b_lin, b_meta, group, seed, tmp / "b.dng", str(frame["name"]))
    bayer_result = enhance_with_denoiser(
        bayer_dark.mosaic,
        bayer_dark.meta,
        bayer,
        ratio,
        DenoiseOptions(precision="fp32", ensemble=1),
    )
    images["bayer_libraw"] = render_mosaic_with_libraw(
        None, bayer_result.mosaic_dn, bayer_dark.meta, gamma=CURVE
    )
    images["as_shot"] = run_classic(
        dark.mosaic,
        dark.meta,
        ClassicOptions(ratio=1.0, denoiser=Denoiser.NONE, gamma=GammaCurve.SRGB),
    ).image
    row: dict[str, object] = {
        "frame": frame["name"],
        "group": group,
        "ratio": ratio,
        "seed": seed,
        "classic_denoiser": classic.denoiser.value,
        "noise": result.noise.describe(),
        "classic_s": round(times["classic"], 2),
        "denoiser_s": round(times["denoiser"], 2),
    }
    for method in METHODS:
        for key, value in scores(images[method], reference).items():
            row[f"{method}_{key}"] = value
    images["reference"] = reference
    return row, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="xtrans", help="the X-Trans raw denoiser")
    parser.add_argument("--bayer", default="default", help="the Bayer raw denoiser")
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/xtrans_denoiser_vs_classic.json")
    parser.add_argument("--images", default="docs/images")
    parser.add_argument(
        "--draw",
        choices=["frame", "group"],
        default="frame",
        help="draw the noise setting per frame, or once per group as results before the "
        "twelfth session did",
    )
    args = parser.parse_args()
    denoiser_vs_classic.DRAW = args.draw
    xtrans = load_model(model_source(args.model))
    bayer = load_model(model_source(args.bayer))
    if not (isinstance(xtrans, RawDenoiser) and xtrans.config.planes == 9):
        raise SystemExit(f"{args.model} is not an X-Trans raw denoiser")
    if not (isinstance(bayer, RawDenoiser) and bayer.config.planes == 4):
        raise SystemExit(f"{args.bayer} is not a Bayer raw denoiser")
    images = Path(args.images)
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    chosen = frames(args.photos, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for group in args.groups.split(","):
            for i, frame in enumerate(chosen):
                row, pictures = run_frame(frame, group, args.seed, xtrans, bayer, Path(tmp))
                rows.append(row)
                print(json.dumps(row), flush=True)
                if i == 0:
                    names = ("as_shot", "classic", "denoiser_libraw", "reference")
                    captions = [
                        "",
                        *(
                            f"{row[f'{n}_psnr']} dB, dE {row[f'{n}_de2000']}"
                            for n in ("classic", "denoiser_libraw")
                        ),
                        "",
                    ]
                    sheet = side_by_side(
                        [(n, crop(pictures[n], 400)) for n in names],
                        max_width=2100,
                        captions=captions,
                    )
                    write_image(images / f"xtrans_{group}.png", sheet)
    means = group_means(rows, METHODS)
    result = {
        "model": args.model,
        "bayer": args.bayer,
        "seed": args.seed,
        "draw": args.draw,
        "rows": rows,
        "groups": means,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for group, m in means.items():
        line = "  ".join(
            f"{k} {m[f'{k}_psnr']:.2f}/{m[f'{k}_ssim']:.3f}/{m[f'{k}_de2000']:.2f}" for k in METHODS
        )
        print(f"{group} ({m['frames']:.0f} frames): {line}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
