"""The raw denoiser against the classic pipeline and the seed's SID network (issue 23's acceptance).

Frames: the development raw files (../shared/data/raw: two GoPro DNGs, a Kodak KDC and two bare
phone mosaics) and development photos that training never saw (the validation share of
``configs/denoiser_default.yaml``'s split, centre crops), each darkened in five groups:

- ``a_sony_x100``, ``a_sony_x300``: the SonyA7S2 calibration (ELD: shot, Tukey-lambda read,
  row, quantisation noise, colour bias; black 512 DN), x100 and x300;
- ``b_nikon_x100``: another ELD camera's calibration (Nikon D850), x100;
- ``c_pg_x100``: Poisson-Gaussian noise at the demo's level (1 DN per electron, 2 DN read), x100;
- ``d_pg_x4``: the same at x4, a well-lit frame.

Each frame of a group draws its own camera setting from the calibration (gain, read and row noise
scales, colour-bias row), so that a group's mean covers as many settings as it has frames;
``--draw group`` draws one for the whole group, as results before the twelfth session did (seed
0 then gave every frame of (a) x100 the Sony calibration's largest colour bias). Each dark frame is
written as a DNG and read back, as a user's file would be. References: a raw file's clean
rendering by LibRaw (camera white balance, no auto-brightening, its BT.709 curve), a photo itself.
Methods, all at the true ratio:

- ``classic``: black level, BM3D where it runs (up to about 1 Mpixel of planes, NLM above), the
  file's white balance, demosaicing, colour matrix, the reference's tone curve;
- ``sid``: the seed's SID U-Net as ``darkraw enhance --model sid`` runs it;
- ``denoiser``: the raw denoiser, rendered by darkraw's pipeline with the reference's curve;
- ``denoiser_libraw``: the same clean mosaic rendered by LibRaw (a raw file's own: the clean
  mosaic is put back into the original file, as it would be into a user's dark file).

Scores on 8-bit images: PSNR, SSIM and the mean CIEDE2000 colour difference. The noise level the
denoiser is told is estimated from each frame (no camera profile is used). The denoiser corrects
the black level as it does for a user's file (``DenoiseOptions.black_offset``); the frames carry
their source's make and model, so no bundled calibration matches them. ``--camera-profile``
plays a user whose camera is the calibrated group's: the denoiser is given that calibration's
range of black-level offsets, as darkraw gives a file of that camera (the calibration's lowest to
highest bias for the default, learnt offset), and each row records the offset it subtracted.

The demo crop (``--demo``): the bundled sample against LibRaw's rendering of the same clean crop
of the HERO7 file.

Usage:
    python benchmarks/denoiser_vs_classic.py [--model default|PATH] [--sid sid|PATH]
        [--groups a_sony_x100,...] [--files ...] [--photos 6] [--seed 0] [--demo]
        [--out benchmarks/results/denoiser_vs_classic.json] [--images docs/images]
        [--camera-profile] [--draw frame|group]
    python benchmarks/denoiser_vs_classic.py --tables RESULT.json [RESULT.json ...]

Groups can run in separate processes (``--groups``, each with its own ``--out``) and their
tables be printed together with ``--tables``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import (
    ClassicOptions,
    ClassicResult,
    GammaCurve,
    run_classic,
    subtract_black_level,
)
from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import InferenceOptions, enhance_raw_network, resolve_model, sid_network
from darkraw.nn.rawdenoise import LIBRAW_CURVES, DenoiseOptions, Renderer, enhance_with_denoiser
from darkraw.raw.dng import write_dng
from darkraw.raw.figures import side_by_side
from darkraw.raw.fileio import read_image, write_image
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import (
    BareMosaicSpec,
    RawImage,
    read_raw,
    render_mosaic_with_libraw,
    render_with_libraw,
)
from darkraw.synth.noiselevel import BlackOffsetRange
from darkraw.synth.simulate import DarkFrame, SimulationConfig, simulate_dark
from darkraw.synth.sources import collect_sources, unit_levels, unprocess_photo
from darkraw.synth.unprocess import UnprocessConfig, sample_unprocess_params
from darkraw.training.evaluate import mean_ciede2000, score
from darkraw.training.train import split_sources

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"

#: The raw files and what the bare mosaics do not say about themselves (data/README.md).
FILES: dict[str, BareMosaicSpec | None] = {
    "HERO7_GOPR9231.DNG": None,
    "Fusion_GPBK7066.DNG": None,
    "RAW_KODAK_DC50.KDC": None,
    "halide_bayer_small.png": BareMosaicSpec("GRBG", white_level=1023, black_level=25),
    "aisp_vivoX90_x90_3_4.npy": BareMosaicSpec("RGGB", white_level=4095, black_level=0),
}

#: The groups: a noise model and an exposure ratio.
GROUPS: dict[str, tuple[SimulationConfig, float]] = {
    "a_sony_x100": (SimulationConfig(camera="SonyA7S2"), 100.0),
    "a_sony_x300": (SimulationConfig(camera="SonyA7S2"), 300.0),
    "b_nikon_x100": (SimulationConfig(camera="NikonD850"), 100.0),
    "c_pg_x100": (SimulationConfig(model="simple", gain=1.0, read_noise_dn=2.0), 100.0),
    "d_pg_x4": (SimulationConfig(model="simple", gain=1.0, read_noise_dn=2.0), 4.0),
}

#: Photos are centre-cropped to this (BM3D takes about 35 s per megapixel of planes).
PHOTO_SIDE = (512, 768)

#: The bundled sample's crop of the HERO7 file (src/darkraw/data/SAMPLE.md).
DEMO_CROP = (900, 1348, 768, 1152)


@dataclass
class Frame:
    """A clean frame to darken: its linear mosaic (white 1), metadata, reference and source."""

    name: str
    kind: str  # "raw" or "photo"
    raw_lin: np.ndarray
    meta: RawMetadata
    reference: np.ndarray
    gamma: GammaCurve
    source: Path | None  # the original file LibRaw renders a raw frame's clean mosaic into
    source_meta: RawMetadata | None


def raw_frame(name: str) -> Frame:
    path = DATA / "raw" / name
    raw = read_raw(path, FILES[name])
    libraw_file = raw.meta.source == "LibRaw"
    if libraw_file:
        reference = render_with_libraw(path, adjust_maximum=False)
    else:
        reference = render_mosaic_with_libraw(None, raw.mosaic, raw.meta)
    raw_lin = np.clip(subtract_black_level(raw.mosaic, raw.meta), 0.0, 1.0).astype(np.float32)
    unit = unit_levels(raw.meta)
    return Frame(
        name,
        "raw",
        raw_lin,
        unit,
        reference,
        GammaCurve.BT709,
        path if libraw_file else None,
        raw.meta,
    )


def photo_frames(count: int, seed: int) -> list[Frame]:
    """Held-out photos (the denoiser's validation split), unprocessed with a seeded camera."""
    files = collect_sources([DATA / "clean"])
    _, held_out = split_sources(files, 0.08)
    frames = []
    rng = np.random.default_rng([seed, 7])
    for path in held_out[:count]:
        rgb = read_image(path)
        h, w = rgb.shape[1:]
        th, tw = min(PHOTO_SIDE[0], h) // 2 * 2, min(PHOTO_SIDE[1], w) // 2 * 2
        top, left = (h - th) // 2 // 2 * 2, (w - tw) // 2 // 2 * 2
        crop = rgb[:, top : top + th, left : left + tw]
        params = sample_unprocess_params(UnprocessConfig(), rng)
        clean = unprocess_photo(crop, params, "RGGB", source=path)
        frames.append(
            Frame(
                f"{path.parent.name}/{path.name}",
                "photo",
                clean.raw_lin,
                clean.meta,
                clean.reference,
                GammaCurve.SRGB,
                None,
                None,
            )
        )
    return frames


#: ``--no-colour-bias``: the calibrated groups without ELD's colour bias (a per-channel error
#: of the black level, not noise: times the ratio it tints a whole frame, and neither the classic
#: pipeline nor a camera-agnostic denoiser can know it).
WITHOUT_BIAS = False

#: ``--camera-profile``: the denoiser knows the calibrated groups' camera (its black offsets).
CAMERA_PROFILE = False


def black_range(group: str, dark: RawImage) -> BlackOffsetRange | None:
    """The calibrated group's range of black offsets under ``--camera-profile`` (as darkraw
    gives a file of that camera: for the default, learnt offset, the calibration's lowest to
    highest bias, :func:`~darkraw.synth.noiselevel.learnt_offset_range`), else ``None`` (the
    denoiser's own choice for the file's camera)."""
    simulation, _ = GROUPS[group]
    if not CAMERA_PROFILE or simulation.model.value != "calibrated":
        return None
    span = dark.meta.white_level - float(np.mean(dark.meta.black_tile))
    return BlackOffsetRange.from_calibration(simulation.profile(), span, up_to="max")


#: ``--draw``: ``frame`` draws each frame's camera setting (gain, read noise, colour-bias row)
#: on its own, ``group`` one for the whole group, as the results before the twelfth session did.
DRAW = "frame"


def darkening_rng(group: str, seed: int, name: str) -> np.random.Generator:
    """The generator that darkens frame ``name`` in ``group``.

    With ``DRAW`` ``"frame"`` it is seeded with the frame's name too, so that a group's mean is
    taken over as many of the calibration's settings as it has frames: with one draw for the
    group, seed 0 gave every frame of (a) x100 the Sony calibration's largest colour bias (+3.9
    to +4.3 DN) and every frame of (b) one of the Nikon's largest (+0.1 to +3.7).
    """
    _, ratio = GROUPS[group]
    key = [seed, int(ratio), sum(map(ord, group))]
    if DRAW == "frame":
        key.append(zlib.crc32(name.encode()))
    return np.random.default_rng(key)


def as_user_file(
    raw_lin: np.ndarray, meta: RawMetadata, group: str, seed: int, tmp: Path, name: str
) -> RawImage:
    """Frame ``name`` darkened as ``group`` says, written as a DNG and read back."""
    dark = darkened(raw_lin, meta, group, seed, name)
    return read_raw(write_dng(tmp / "dark.dng", dark.mosaic_dn, dark.meta))


def darkened(raw_lin: np.ndarray, meta: RawMetadata, group: str, seed: int, name: str) -> DarkFrame:
    """Frame ``name`` darkened as ``group`` says (:func:`as_user_file` before its DNG)."""
    simulation, ratio = GROUPS[group]
    rng = darkening_rng(group, seed, name)
    profile = None
    if WITHOUT_BIAS and simulation.model.value == "calibrated":
        profile = replace(simulation.profile(), color_bias=((0.0, 0.0, 0.0, 0.0),))
    return simulate_dark(raw_lin, meta, ratio, simulation, rng, profile=profile)


def libraw_of(frame: Frame, clean_dn: np.ndarray, dark: RawImage, tmp: Path) -> np.ndarray:
    """LibRaw's rendering of a denoised mosaic (in the dark file's DN): put back into the raw
    file it came from, or, for photos and bare mosaics, through a DNG of the dark frame's."""
    curve = LIBRAW_CURVES[frame.gamma]
    if frame.source is None or frame.source_meta is None:
        return render_mosaic_with_libraw(None, clean_dn, dark.meta, gamma=curve)
    black_d = np.asarray(dark.meta.black_tile, dtype=np.float32).mean()
    y = (clean_dn - black_d) / (dark.meta.white_level - black_d)
    black = np.asarray(frame.source_meta.black_tile, dtype=np.float32).mean()
    original = black + y * (frame.source_meta.white_level - black)
    return render_mosaic_with_libraw(frame.source, original, frame.source_meta, gamma=curve)


def scores(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    s = score(image, reference)
    q = np.round(np.clip(image, 0, 1) * 255) / 255
    r = np.round(reference * 255) / 255
    return {
        "psnr": round(s.psnr8, 2),
        "ssim": round(s.ssim8, 4),
        "de2000": round(mean_ciede2000(q, r), 3),
    }


def timed_classic(dark: RawImage, ratio: float, gamma: GammaCurve) -> tuple[ClassicResult, float]:
    """The classic pipeline (BM3D where it runs) on a dark frame, and the seconds it took."""
    start = time.perf_counter()
    options = ClassicOptions(ratio=ratio, denoiser=Denoiser.AUTO, gamma=gamma)
    return run_classic(dark.mosaic, dark.meta, options), time.perf_counter() - start


def run_frame(
    frame: Frame,
    group: str,
    seed: int,
    denoiser: RawDenoiser,
    sid: object,
    tmp: Path,
) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    _, ratio = GROUPS[group]
    dark = as_user_file(frame.raw_lin, frame.meta, group, seed, tmp, frame.name)
    images: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    classic, times["classic"] = timed_classic(dark, ratio, frame.gamma)
    images["classic"] = classic.image
    start = time.perf_counter()
    images["sid"] = enhance_raw_network(
        dark.mosaic,
        dark.meta,
        sid,
        ratio,
        InferenceOptions(),  # type: ignore[arg-type]
    ).image
    times["sid"] = time.perf_counter() - start
    start = time.perf_counter()
    result = enhance_with_denoiser(
        dark.mosaic,
        dark.meta,
        denoiser,
        ratio,
        # darkraw's rendering here (LibRaw's, the default, is the next column's): left to the
        # default, this column became LibRaw's too when LibRaw became the default renderer.
        DenoiseOptions(gamma=frame.gamma, renderer=Renderer.DARKRAW),
        black_range=black_range(group, dark),
    )
    images["denoiser"], times["denoiser"] = result.image, time.perf_counter() - start
    start = time.perf_counter()
    images["denoiser_libraw"] = libraw_of(frame, result.mosaic_dn, dark, tmp)
    times["denoiser_libraw"] = time.perf_counter() - start + times["denoiser"]
    images["as_shot"] = run_classic(
        dark.mosaic, dark.meta, ClassicOptions(ratio=1.0, denoiser=Denoiser.NONE, gamma=frame.gamma)
    ).image
    row: dict[str, object] = {
        "frame": frame.name,
        "kind": frame.kind,
        "group": group,
        "ratio": ratio,
        "seed": seed,
        "size": f"{frame.meta.width}x{frame.meta.height}",
        "classic_denoiser": classic.denoiser.value,
        "noise": result.noise.describe(),
    }
    if CAMERA_PROFILE:
        row["black_offset"] = list(result.black_offset)
    for method in ("classic", "sid", "denoiser", "denoiser_libraw"):
        image = images[method]
        if image.shape != frame.reference.shape:
            raise ValueError(f"{frame.name} {method}: {image.shape} vs {frame.reference.shape}")
        for key, value in scores(image, frame.reference).items():
            row[f"{method}_{key}"] = value
        row[f"{method}_s"] = round(times[method], 2)
    images["reference"] = frame.reference
    return row, images


METHODS = ("classic", "sid", "denoiser", "denoiser_libraw")


def group_means(
    rows: list[dict[str, object]], methods: tuple[str, ...] = METHODS
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for group in dict.fromkeys(str(r["group"]) for r in rows):
        mine = [r for r in rows if r["group"] == group]
        means: dict[str, float] = {"frames": len(mine)}
        for method in methods:
            for key in ("psnr", "ssim", "de2000"):
                values = [float(str(r[f"{method}_{key}"])) for r in mine]
                means[f"{method}_{key}"] = round(float(np.mean(values)), 4)
        out[group] = means
    return out


def crop(image: np.ndarray, side: int = 512) -> np.ndarray:
    _, h, w = image.shape
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[:, top : top + side, left : left + side]


def demo_reference() -> np.ndarray:
    """LibRaw's rendering of the clean crop of the HERO7 file the bundled sample was made from."""
    source = read_raw(DATA / "raw" / "HERO7_GOPR9231.DNG")
    top, left, height, width = DEMO_CROP
    clean = source.mosaic[top : top + height, left : left + width]
    return render_mosaic_with_libraw(None, clean, source.meta.replace(height=height, width=width))


def demo(denoiser: RawDenoiser, sid: object, images: Path) -> dict[str, object]:
    """The bundled sample against LibRaw's rendering of the same clean crop."""
    from darkraw.demo import SAMPLE_RATIO, sample_path

    reference = demo_reference()
    dark = read_raw(sample_path())
    out: dict[str, object] = {"frame": "demo crop", "ratio": SAMPLE_RATIO}
    panels = {}
    classic = run_classic(dark.mosaic, dark.meta, ClassicOptions(ratio=SAMPLE_RATIO)).image
    panels["classic"] = classic
    panels["sid"] = enhance_raw_network(
        dark.mosaic,
        dark.meta,
        sid,
        SAMPLE_RATIO,  # type: ignore[arg-type]
    ).image
    result = enhance_with_denoiser(dark.mosaic, dark.meta, denoiser, SAMPLE_RATIO)
    panels["denoiser"] = result.image
    panels["denoiser_libraw"] = render_mosaic_with_libraw(
        sample_path(), result.mosaic_dn, dark.meta
    )
    for name, image in panels.items():
        for key, value in scores(image, reference).items():
            out[f"{name}_{key}"] = value
    sheet = side_by_side(
        [
            ("classic (BM3D)", crop(panels["classic"])),
            ("SID network", crop(panels["sid"])),
            ("raw denoiser", crop(panels["denoiser"])),
            ("reference (LibRaw, clean)", crop(reference)),
        ],
        max_width=2100,
        captions=[
            f"{out['classic_psnr']} dB, dE {out['classic_de2000']}",
            f"{out['sid_psnr']} dB, dE {out['sid_de2000']}",
            f"{out['denoiser_psnr']} dB, dE {out['denoiser_de2000']}",
            "",
        ],
    )
    write_image(images / "denoiser_demo_crop.png", sheet)
    return out


def markdown(results: list[dict[str, object]]) -> str:
    """Tables of several result files' rows together: per group, and per frame kind."""
    rows = [row for result in results for row in result["rows"]]  # type: ignore[attr-defined]
    lines = [
        "| group | frames | classic | SID | denoiser | denoiser, LibRaw |",
        "|---|---|---|---|---|---|",
    ]
    for group, means in group_means(rows).items():
        cells = [
            f"{means[f'{m}_psnr']:.2f} / {means[f'{m}_ssim']:.3f} / {means[f'{m}_de2000']:.2f}"
            for m in METHODS
        ]
        lines.append(f"| {group} | {means['frames']:.0f} | " + " | ".join(cells) + " |")
    lines += ["", "| group | kind | classic | SID | denoiser | denoiser, LibRaw |"]
    lines.append("|---|---|---|---|---|---|")
    for kind in ("raw", "photo"):
        mine = [r for r in rows if r["kind"] == kind]
        for group, means in group_means(mine).items():
            cells = [
                f"{means[f'{m}_psnr']:.2f} / {means[f'{m}_ssim']:.3f} / {means[f'{m}_de2000']:.2f}"
                for m in METHODS
            ]
            lines.append(f"| {group} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tables", nargs="+", default=None, help="print tables of these result files and stop"
    )
    parser.add_argument("--model", default="default", help="the raw denoiser: a name or a file")
    parser.add_argument("--sid", default="sid", help="the SID network: a name or a file")
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--files", default=",".join(FILES))
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", action="store_true", help="also score the demo crop")
    parser.add_argument("--out", default="benchmarks/results/denoiser_vs_classic.json")
    parser.add_argument("--images", default="docs/images")
    parser.add_argument(
        "--no-colour-bias",
        action="store_true",
        help="calibrated groups without ELD's colour bias (a black-level error, not noise)",
    )
    parser.add_argument(
        "--camera-profile",
        action="store_true",
        help="give the denoiser the calibrated groups' camera calibration (its black offsets)",
    )
    parser.add_argument(
        "--draw",
        choices=["frame", "group"],
        default="frame",
        help="draw the noise setting (gain, colour-bias row) per frame, or once per group as "
        "results before the twelfth session did",
    )
    args = parser.parse_args()
    global WITHOUT_BIAS, CAMERA_PROFILE, DRAW
    WITHOUT_BIAS = args.no_colour_bias
    CAMERA_PROFILE = args.camera_profile
    DRAW = args.draw
    if args.tables:
        print(markdown([json.loads(Path(f).read_text()) for f in args.tables]))
        return
    denoiser = resolve_model(args.model)
    if not isinstance(denoiser, RawDenoiser):
        raise SystemExit(f"{args.model} is not a raw denoiser")
    sid = sid_network(args.sid)
    images = Path(args.images)
    images.mkdir(parents=True, exist_ok=True)
    frames = [raw_frame(n) for n in args.files.split(",") if n and (DATA / "raw" / n).exists()]
    frames += photo_frames(args.photos, args.seed)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for group in args.groups.split(","):
            for i, frame in enumerate(frames):
                row, pictures = run_frame(frame, group, args.seed, denoiser, sid, Path(tmp))
                rows.append(row)
                print(json.dumps(row), flush=True)
                if i in (0, 2) or (frame.kind == "photo" and frame is frames[-1]):
                    names = ("as_shot", "classic", "sid", "denoiser", "reference")
                    sheet = side_by_side(
                        [(n, crop(pictures[n], 400)) for n in names], max_width=2100
                    )
                    stem = Path(frame.name).stem
                    tag = "_nobias" if args.no_colour_bias else ""
                    write_image(images / f"denoiser_{group}{tag}_{stem}.png", sheet)
    result: dict[str, object] = {
        "colour_bias": not args.no_colour_bias,
        **({"camera_profile": True} if args.camera_profile else {}),
        "draw": args.draw,
        "model": args.model,
        "sid": args.sid,
        "seed": args.seed,
        "rows": rows,
        "groups": group_means(rows),
    }
    if args.demo:
        result["demo"] = demo(denoiser, sid, images)
        print(json.dumps(result["demo"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for group, means in group_means(rows).items():
        line = "  ".join(
            f"{m} {means[f'{m}_psnr']:.2f}/{means[f'{m}_ssim']:.3f}/{means[f'{m}_de2000']:.2f}"
            for m in METHODS
        )
        print(f"{group} ({means['frames']:.0f} frames): {line}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
