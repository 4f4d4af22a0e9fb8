"""Does an int8 (or bf16) raw denoiser hold the fp32 one's quality, and how much faster is it?
(issue 24, 3)

The fp32 ONNX export and one or more int8 versions of it (``scripts/quantize_denoiser.py``) run
through the same darkraw path, :func:`darkraw.nn.rawdenoise.enhance_with_denoiser` with an
:class:`~darkraw.nn.runtime.OnnxDenoiser` loaded from each file, on the acceptance benchmark's
frames and groups (``benchmarks/denoiser_vs_classic.py``: its frames, darkening, DNG round trip
and references are imported from it, not copied) and on its demo crop. For each it reports PSNR,
SSIM and CIEDE2000 against the reference (8-bit, as that benchmark scores), the per-group
change against fp32 (the bar: within 0.2 dB PSNR on every group) and the PSNR of the int8
picture against the fp32 one. Side-by-side crops at 1:1 (fp32, int8, their difference x8,
reference) of each variant's worst frame go to ``--crops``. The network runs one pass
(``ensemble=1``): the arithmetic is what is compared, as the recorded figures were measured.

Speed, in the same run: ``run_denoiser`` on a 12-Mpixel frame's input (packed 1424x2128, tile
1024), fp32 and each int8 file alternately, 2 threads, median of 3; the CPU's model name, its
VNNI flags and the load average are recorded beside (the ratios are measured back to back).

``--bf16`` adds the fp32 export run by OpenVINO with bf16 arithmetic inside
(:func:`~darkraw.nn.runtime.load_openvino_denoiser`, the default where OpenVINO is installed on
a CPU with native bf16) as one more variant, ``bf16_openvino``. ``--int8-runtime openvino``
runs each int8 file in OpenVINO (``load_openvino_denoiser(..., precision="int8")``, the int8
default on x86 CPUs where OpenVINO is installed) as ``<name>_openvino``, ``both`` in either.

Usage:
    python benchmarks/int8_denoiser.py [--int8 /tmp/denoiser_int8.onnx [more.onnx ...]] [--bf16]
        [--fp32 src/darkraw/data/denoiser_model.onnx] [--full] [--groups a_sony_x100,...]
        [--no-speed | --speed-only] [--repeats 3] [--threads 2] [--crops /tmp/int8_crops]
        [--out benchmarks/results/int8_denoiser.json]

By default a few frames per group (the three small raw files and two photos); ``--full`` runs
the acceptance benchmark's counts (five raw files, six photos).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import denoiser_vs_classic as bench  # noqa: E402

from darkraw.nn.rawdenoise import DenoiseOptions, enhance_with_denoiser, run_denoiser  # noqa: E402
from darkraw.nn.runtime import (  # noqa: E402
    OnnxDenoiser,
    load_onnx_denoiser,
    load_openvino_denoiser,
)
from darkraw.raw.figures import side_by_side  # noqa: E402
from darkraw.raw.fileio import write_image  # noqa: E402
from darkraw.raw.rawio import read_raw  # noqa: E402
from darkraw.training.evaluate import score  # noqa: E402

FP32 = ROOT / "src" / "darkraw" / "data" / "denoiser_model.onnx"
SMALL_FILES = ("RAW_KODAK_DC50.KDC", "halide_bayer_small.png", "aisp_vivoX90_x90_3_4.npy")
#: The packed input of a 12-Mpixel frame (SID's Sony: 2848x4256).
FRAME_PACKED = (1424, 2128)
CROP = 256


def cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"Model name:\s*(.+)", lscpu)
        info["model_name"] = found.group(1).strip() if found else None
    except OSError:
        info["model_name"] = None
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16"):
        info[flag] = flag in flags
    info["cores"] = os.cpu_count()
    return info


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(score(a, np.clip(b, 0, 1)).psnr8), 2)


def worst_window(diff: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the ``side`` x ``side`` window with the largest mean difference."""
    d = np.abs(diff).mean(axis=0)
    h, w = d.shape
    if h <= side or w <= side:
        return 0, 0
    step = side // 4
    best, where = -1.0, (0, 0)
    for top in range(0, h - side + 1, step):
        for left in range(0, w - side + 1, step):
            m = float(d[top : top + side, left : left + side].mean())
            if m > best:
                best, where = m, (top, left)
    return where


def write_crops(
    path: Path, fp32: np.ndarray, int8: np.ndarray, reference: np.ndarray, caption: str
) -> None:
    top, left = worst_window(int8 - fp32, CROP)
    window = np.s_[:, top : top + CROP, left : left + CROP]
    diff = np.clip(0.5 + 8 * (int8 - fp32), 0, 1)
    panels = [
        ("fp32", fp32[window]),
        ("int8", int8[window]),
        ("int8 - fp32, x8", diff[window]),
        ("reference", reference[window]),
    ]
    sheet = side_by_side(panels, max_width=4 * CROP + 60, captions=[caption, "", "", ""])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, sheet)


#: The variant name of the fp32 export run by OpenVINO in bf16.
BF16 = "bf16_openvino"

#: The ending of an int8 file's variant name when OpenVINO runs it.
OPENVINO = "_openvino"


def load_variant(name: str, path: str, threads: int) -> OnnxDenoiser:
    if name == BF16:
        return load_openvino_denoiser(path, threads=threads)
    if name.endswith(OPENVINO):
        return load_openvino_denoiser(path, threads=threads, precision="int8")
    return load_onnx_denoiser(path, device="cpu", threads=threads)


def load(paths: dict[str, str], threads: int) -> dict[str, OnnxDenoiser]:
    return {name: load_variant(name, p, threads) for name, p in paths.items()}


def quality(
    paths: dict[str, str],
    threads: int,
    groups: list[str],
    frames: list[bench.Frame],
    seed: int,
    crops: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    worst: dict[str, tuple[float, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            _, ratio = bench.GROUPS[group]
            for frame in frames:
                dark = bench.as_user_file(
                    frame.raw_lin, frame.meta, group, seed, Path(tmp), frame.name
                )
                options = DenoiseOptions(gamma=frame.gamma, ensemble=1)
                row: dict[str, Any] = {"group": group, "frame": frame.name, "kind": frame.kind}
                images = {}
                # Fresh sessions per frame: ONNX Runtime's CPU arena keeps the memory of every
                # tile shape it has seen (six models over the full-size frames reached 13 GB).
                models = load(paths, threads)
                for name, model in models.items():
                    start = time.perf_counter()
                    image = enhance_with_denoiser(
                        dark.mosaic, dark.meta, model, ratio, options
                    ).image
                    row[f"{name}_s"] = round(time.perf_counter() - start, 2)
                    images[name] = image
                    for key, value in bench.scores(image, frame.reference).items():
                        row[f"{name}_{key}"] = value
                    if name != "fp32":
                        row[f"{name}_vs_fp32_psnr"] = psnr8(image, images["fp32"])
                        delta = row[f"{name}_psnr"] - row["fp32_psnr"]
                        key = f"{group}/{frame.name}"
                        if name not in worst or delta < worst[name][0]:
                            worst[name] = (delta, key)
                            write_crops(
                                crops / f"{name}_worst.png",
                                images["fp32"],
                                image,
                                frame.reference,
                                f"{key}: {delta:+.2f} dB",
                            )
                        if group in ("a_sony_x300", "c_pg_x100") and frame is frames[0]:
                            write_crops(
                                crops / f"{name}_{group}_{Path(frame.name).stem}.png",
                                images["fp32"],
                                image,
                                frame.reference,
                                f"{key}: {delta:+.2f} dB",
                            )
                del models
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows, {name: {"delta_psnr": round(d, 2), "frame": k} for name, (d, k) in worst.items()}


def group_means(rows: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        means: dict[str, float] = {"frames": len(mine)}
        for name in names:
            for key in ("psnr", "ssim", "de2000"):
                means[f"{name}_{key}"] = round(
                    float(np.mean([r[f"{name}_{key}"] for r in mine])), 4
                )
            if name != "fp32":
                means[f"{name}_delta_psnr"] = round(means[f"{name}_psnr"] - means["fp32_psnr"], 3)
                means[f"{name}_min_frame_delta_psnr"] = round(
                    min(r[f"{name}_psnr"] - r["fp32_psnr"] for r in mine), 2
                )
                means[f"{name}_vs_fp32_psnr"] = round(
                    float(np.mean([r[f"{name}_vs_fp32_psnr"] for r in mine])), 2
                )
        out[group] = means
    return out


def demo(models: dict[str, OnnxDenoiser], crops: Path) -> dict[str, Any]:
    """The bundled sample against LibRaw's rendering of the same clean crop of the HERO7 file."""
    from darkraw.demo import SAMPLE_RATIO, sample_path

    reference = bench.demo_reference()
    dark = read_raw(sample_path())
    out: dict[str, Any] = {"frame": "demo crop", "ratio": SAMPLE_RATIO}
    images = {}
    for name, model in models.items():
        images[name] = enhance_with_denoiser(
            dark.mosaic, dark.meta, model, SAMPLE_RATIO, DenoiseOptions(ensemble=1)
        ).image
        for key, value in bench.scores(images[name], reference).items():
            out[f"{name}_{key}"] = value
        if name != "fp32":
            out[f"{name}_delta_psnr"] = round(out[f"{name}_psnr"] - out["fp32_psnr"], 2)
            out[f"{name}_vs_fp32_psnr"] = psnr8(images[name], images["fp32"])
            write_crops(
                crops / f"{name}_demo.png",
                images["fp32"],
                images[name],
                reference,
                f"demo: {out[f'{name}_delta_psnr']:+.2f} dB",
            )
    return out


def frame_input(models: dict[str, OnnxDenoiser], seed: int) -> np.ndarray:
    """A 12-Mpixel frame's network input: the HERO7 file darkened x100 (group a), its input
    planes as ``enhance_with_denoiser`` makes them, reflected to 1424x2128 packed pixels."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from quantize_denoiser import network_input

    frame = bench.raw_frame("HERO7_GOPR9231.DNG")
    with tempfile.TemporaryDirectory() as tmp:
        dark = bench.as_user_file(
            frame.raw_lin, frame.meta, "a_sony_x100", seed, Path(tmp), frame.name
        )
    x = network_input(dark.mosaic, dark.meta, models["fp32"], 100.0)
    h, w = FRAME_PACKED
    pad_h, pad_w = max(0, h - x.shape[1]), max(0, w - x.shape[2])
    x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
    return np.ascontiguousarray(x[:, :h, :w])


def speed(models: dict[str, OnnxDenoiser], x: np.ndarray, repeats: int) -> dict[str, Any]:
    options = DenoiseOptions(tile=1024)
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        run_denoiser(model, x, options)  # warm-up
    load_before = load_average()
    for _ in range(repeats):
        for name, model in models.items():  # alternately, back to back
            start = time.perf_counter()
            run_denoiser(model, x, options)
            times[name].append(round(time.perf_counter() - start, 3))
    out: dict[str, Any] = {
        "input": list(x.shape),
        "tile": options.tile,
        "repeats": repeats,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "seconds": times,
        "median_s": {name: round(statistics.median(t), 3) for name, t in times.items()},
    }
    fp32 = statistics.median(times["fp32"])
    out["speedup_vs_fp32"] = {
        name: round(fp32 / statistics.median(t), 2) for name, t in times.items() if name != "fp32"
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--int8", nargs="*", default=[], help="int8 ONNX files to compare")
    parser.add_argument(
        "--bf16", action="store_true", help="also the fp32 export in OpenVINO with bf16 inside"
    )
    parser.add_argument(
        "--int8-runtime",
        choices=["onnxruntime", "openvino", "both"],
        default="onnxruntime",
        help="what runs the int8 files (default: onnxruntime)",
    )
    parser.add_argument("--fp32", default=str(FP32), help="the fp32 ONNX export")
    parser.add_argument("--full", action="store_true", help="the acceptance benchmark's counts")
    parser.add_argument("--groups", default=",".join(bench.GROUPS))
    parser.add_argument(
        "--photos", type=int, default=None, help="photos (default 2, 6 with --full)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true", help="time the files, score nothing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crops", default="/tmp/int8_crops", help="where 1:1 crops go (PNG)")
    parser.add_argument("--out", default="benchmarks/results/int8_denoiser.json")
    args = parser.parse_args()
    if not args.int8 and not args.bf16:
        parser.error("nothing to compare with fp32: give --int8 files, --bf16, or both")

    models: dict[str, OnnxDenoiser] = {
        "fp32": load_onnx_denoiser(args.fp32, device="cpu", threads=args.threads)
    }
    settings: dict[str, Any] = {}
    fp32_meta = {p.key: p.value for p in onnx.load(args.fp32).metadata_props}
    fp32_weights = fp32_meta.get("darkraw.weights_sha256")
    for path in args.int8:
        name = Path(path).stem
        meta = {p.key: p.value for p in onnx.load(path).metadata_props}
        props = json.loads(meta.get("darkraw.quantisation", "{}"))
        weights = meta.get("darkraw.weights_sha256")
        if weights != fp32_weights:
            raise SystemExit(
                f"{path} was quantised from other weights ({weights}) than {args.fp32} "
                f"({fp32_weights}): quantise the fp32 file again"
            )
        variants = {
            "onnxruntime": [name],
            "openvino": [name + OPENVINO],
            "both": [name, name + OPENVINO],
        }[args.int8_runtime]
        for variant in variants:
            if variant in models:
                raise SystemExit(f"two files named {name}")
            models[variant] = load_variant(variant, path, args.threads)
            settings[variant] = {"file": str(path), **props}
            if variant.endswith(OPENVINO):
                import openvino

                settings[variant]["runtime"] = f"OpenVINO {openvino.get_version()}"
    if args.bf16:
        import openvino

        models[BF16] = load_openvino_denoiser(args.fp32, threads=args.threads)
        settings[BF16] = {
            "file": str(args.fp32),
            "runtime": f"OpenVINO {openvino.get_version()}",
            "inference_precision_hint": "bf16",
        }
    names = list(models)
    crops = Path(args.crops)
    files = list(bench.FILES) if args.full else list(SMALL_FILES)
    photos = args.photos if args.photos is not None else (6 if args.full else 2)
    frames = []
    if not args.speed_only:
        frames = [bench.raw_frame(n) for n in files if (bench.DATA / "raw" / n).exists()]
        frames += bench.photo_frames(photos, args.seed)
    result: dict[str, Any] = {
        "cpu": cpu_info(),
        # OpenVINO's oneDNN honours it (AVX2 holds it to an AVX2-only CPU's kernels).
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "threads": args.threads,
        "load_average_start": load_average(),
        "fp32": args.fp32,
        "fp32_weights_sha256": fp32_weights,
        "int8": settings,
        "full": args.full,
        "seed": args.seed,
    }
    if not args.no_speed:
        result["speed"] = speed(models, frame_input(models, args.seed), args.repeats)
        print(json.dumps(result["speed"]), flush=True)
    if args.speed_only:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {out}")
        return
    paths = {"fp32": args.fp32, **{n: s["file"] for n, s in settings.items()}}
    rows, worst = quality(paths, args.threads, args.groups.split(","), frames, args.seed, crops)
    result["groups"] = group_means(rows, names)
    result["worst_frame"] = worst
    if not args.no_demo:
        result["demo"] = demo(models, crops)
        print(json.dumps(result["demo"]), flush=True)
    verdict = {}
    for name in names[1:]:
        deltas = [m[f"{name}_delta_psnr"] for m in result["groups"].values()]
        if "demo" in result:
            deltas.append(result["demo"][f"{name}_delta_psnr"])
        verdict[name] = {"worst_group_delta_psnr": min(deltas), "holds": min(deltas) >= -0.2}
    result["verdict"] = verdict
    result["rows"] = rows
    result["load_average_end"] = load_average()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for group, means in result["groups"].items():
        cells = "  ".join(
            f"{n} {means[f'{n}_psnr']:.2f}"
            + (
                ""
                if n == "fp32"
                else f" ({means[f'{n}_delta_psnr']:+.2f}, vs fp32 {means[f'{n}_vs_fp32_psnr']:.1f})"
            )
            for n in names
        )
        print(f"{group} ({means['frames']:.0f}): {cells}")
    print(json.dumps(verdict))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
