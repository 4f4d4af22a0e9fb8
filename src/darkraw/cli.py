"""The ``darkraw`` command line: parses arguments and calls one library function each."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, TextIO

from darkraw._version import __version__
from darkraw.api import RATIO_RANGE
from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions, GammaCurve, WhiteBalance
from darkraw.errors import DarkrawError
from darkraw.raw.rawio import BareMosaicSpec

if TYPE_CHECKING:
    from darkraw.training.train import TrainSummary
    from darkraw.training.train_denoiser import DenoiserSummary

EXIT_FAILED = 1
EXIT_USAGE = 2
#: Exit code when the reader of standard output went away (``darkraw info ... | head``): what a
#: shell reports for a program that SIGPIPE ended (128 + 13).
EXIT_BROKEN_PIPE = 141
#: Exit codes after Ctrl-C (SIGINT) and after SIGTERM (``kill``, a job scheduler, a container
#: stopping): 128 + the signal's number, as a shell reports it.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Parser(argparse.ArgumentParser):
    """argparse's parser with darkraw's one error prefix: ``darkraw: error: ...`` (argparse's
    own says ``darkraw enhance: error:``). Subcommands' parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"darkraw: error: {message}\n")


def _ratio(text: str) -> float | None:
    if text.lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    low, high = RATIO_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"ratio must be between {low:g} and {high:g} (or 'auto'), got {text!r}"
        )
    return value


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    from darkraw.nn.rawdenoise import MAX_STRENGTH

    if not 0 <= value <= MAX_STRENGTH:
        raise argparse.ArgumentTypeError(
            f"strength must be from 0 to {MAX_STRENGTH:g} (the bundled denoiser was trained "
            f"told up to 2.5 times its noise), got {text!r}"
        )
    return value


def _jpeg_quality(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number 1-100, got {text!r}") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"JPEG quality must be 1 to 100, got {value}")
    return value


def _ensemble(text: str) -> int | str:
    if text.lower() == "auto":
        return "auto"
    if text not in ("1", "2", "4", "8"):
        raise argparse.ArgumentTypeError(f"expected 1, 2, 4, 8 or 'auto', got {text!r}")
    return int(text)


def _black_level(text: str) -> float | tuple[float, float, float, float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        problem = f"expected a number or four comma-separated numbers, got {text!r}"
        raise argparse.ArgumentTypeError(problem) from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 4:
        return (parts[0], parts[1], parts[2], parts[3])
    raise argparse.ArgumentTypeError(f"expected 1 or 4 comma-separated numbers, got {text!r}")


def _ratios(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 100,250,300, got {text!r}"
        ) from None
    for value in values:
        if not value >= 1 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"ratios must be numbers >= 1, got {text!r}")
    return values


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


def _multiple_of(step: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _count(0)(text)
        if value % step:
            raise argparse.ArgumentTypeError(f"expected a multiple of {step}, got {value}")
        return value

    return parse


def _add_bare_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "bare mosaics (.npy, 16-bit .png/.tif)", "these files carry no metadata: describe them"
    )
    group.add_argument("--pattern", help="Bayer layout: RGGB, BGGR, GRBG or GBRG")
    group.add_argument("--white-level", type=float, help="saturation level in DN")
    group.add_argument(
        "--black-level", type=_black_level, default=0.0, help="black level in DN (1 or 4 values)"
    )


def _bare_spec(args: argparse.Namespace) -> BareMosaicSpec | None:
    if args.pattern is None and args.white_level is None:
        return None
    if args.pattern is None or args.white_level is None:
        raise DarkrawError(None, "bare mosaics need both --pattern and --white-level")
    return BareMosaicSpec(
        pattern=args.pattern, white_level=args.white_level, black_level=args.black_level
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="darkraw",
        description="Make raw photos taken in the dark look as if taken in good light.",
    )
    parser.add_argument("--version", action="version", version=f"darkraw {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enh = sub.add_parser(
        "enhance",
        help="brighten and denoise dark raw files",
        description="Brighten and denoise dark raw files; writes 8-bit PNG/JPEG, 16-bit TIFF "
        "(each with the raw file's EXIF and an sRGB profile) or DNG (the denoised raw, with the "
        "raw file's metadata, for darktable, RawTherapee or Lightroom).",
    )
    enh.add_argument("inputs", nargs="+", metavar="INPUT", help="raw files or folders of them")
    enh.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (one input; .png, .jpg, .tif or .dng) or folder (several); a missing "
        "folder is created, and files in an input folder's subfolders are written in the same "
        "subfolders of it",
    )
    enh.add_argument(
        "--method",
        choices=["classic", "network"],
        default=None,
        help="rendering method: network (default: the network --model names, the raw denoiser "
        "unless told otherwise) or classic (the traditional pipeline: black level, denoise, "
        "white balance, gamma)",
    )
    enh.add_argument(
        "--model",
        metavar="PATH",
        default=None,
        help="network weights: a darkraw model file or training checkpoint (.safetensors), "
        "'default' for the bundled raw denoiser, 'sid' for the bundled See-in-the-Dark U-Net "
        "(the seed's network, which renders colour itself), or 'small' for its half-width "
        "version (default: default)",
    )
    enh.add_argument(
        "--tile",
        type=_multiple_of(16),
        default=None,
        metavar="N",
        help="network: tile side in packed pixels (half the output pixels for Bayer), a multiple "
        "of 16; the raw denoiser takes windows of at most N x N pixels of whatever shape runs "
        "the fewest; 0 runs the whole frame at once (more memory) (default: 1280 for the raw "
        "denoiser, 1024 for the SID network)",
    )
    enh.add_argument(
        "--overlap",
        type=_multiple_of(16),
        default=None,
        metavar="N",
        help="network: margin cut from each tile, packed pixels, a multiple of 16; the default, "
        "the network's reach (112 for the SID network, 64 for the bundled raw denoiser), makes "
        "tiled output equal to whole-frame output; less does less work but is approximate",
    )
    enh.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "int8"],
        default=None,
        help="network: arithmetic of the network's body. The raw denoiser: auto is bf16 in "
        "OpenVINO where it is installed (darkraw[openvino]) and the CPU has native bf16 "
        "(AVX-512 BF16 on AMD, AMX), else its int8 version on a CPU with an 8-bit dot product "
        "(AVX-512 VNNI, AVX-VNNI) or, in OpenVINO, on another x86 CPU, else fp32; bf16 and int8 "
        "insist; the SID network: auto is "
        "bf16 where the CPU has it natively, within about one 8-bit level of fp32, and fp32 "
        "elsewhere (default: auto)",
    )
    enh.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="network: where it runs; auto takes an NVIDIA GPU where one is usable (the raw "
        "denoiser through onnxruntime-gpu, the SID network through torch with CUDA) and the "
        "CPU otherwise (default: auto)",
    )
    enh.add_argument(
        "--ensemble",
        type=_ensemble,
        default=None,
        metavar="{auto,1,2,4,8}",
        help="network: run N mirrored, turned and transposed copies and average them, N times "
        "slower; auto takes as many as fit in the work of one 12-Mpixel frame: 8 up to 1.56 "
        "Mpixel, 4 up to 3.1, 2 up to 6.25, and a full-size camera frame 1. The raw "
        "denoiser with 8: 0.10-0.35 dB better than 1 on Bayer frames, 0.13-0.63 on X-Trans "
        "(default: auto)",
    )
    enh.add_argument(
        "--strength",
        type=_strength,
        default=None,
        metavar="S",
        help="raw denoiser: scales the noise level the network is told, 0 to 2: 0 leaves the "
        "frame as it is, 1 is the measured level, lower keeps more grain (and detail), higher "
        "smooths more (default: 1)",
    )
    enh.add_argument(
        "--render",
        # Listed here: the renderer's module imports torch, which parsing should not.
        choices=["darkraw", "libraw"],
        default=None,
        help="raw denoiser: who renders the denoised raw: libraw (LibRaw, from the denoised "
        "mosaic put back in the file) or darkraw (its classic pipeline) (default: libraw)",
    )
    enh.add_argument(
        "--demosaic",
        # Listed here: the enum's module imports rawpy, which parsing should not.
        choices=["auto", "best", "fast"],
        default=None,
        help="raw denoiser, LibRaw's rendering: best (AHD; on X-Trans files Markesteijn's 3 "
        "passes), fast (PPG; Markesteijn's single pass: a 24-Mpixel X-Trans frame 2.5 s "
        "sooner, 0.1 dB or less apart) or auto (AHD on Bayer files, a single pass on X-Trans "
        "ones, as darktable chooses) (default: auto)",
    )
    enh.add_argument(
        "--black-offset",
        # Listed here: the enum's module imports the runtime, which parsing should not.
        choices=["learnt", "darkest", "none"],
        default=None,
        help="raw denoiser: how a black level that is a few DN off (it tints and lifts or "
        "crushes the shadows once amplified) is found: learnt (a small model reads it from the "
        "frame, within the camera's range), darkest (the frame's darkest level, only black read "
        "low unless the camera is calibrated) or none (trust the file's black level) "
        "(default: learnt)",
    )
    enh.add_argument(
        "--noise-profile",
        metavar="FILE",
        default=None,
        help="raw denoiser: camera noise profiles: a file in darktable's noiseprofiles.json "
        "format, or 'darktable' for darktable's own (installed with darktable); cameras it "
        "lacks, and every file without this option, get the noise estimated from the frame",
    )
    enh.add_argument(
        "--ratio",
        type=_ratio,
        default=None,
        help="exposure ratio (amplification) from 1 to 10000, or 'auto' to choose from the image "
        "(default: auto)",
    )
    enh.add_argument(
        "--denoise",
        choices=[d.value for d in Denoiser],
        default=None,
        help="classic: denoiser: bm3d (best, ~35 s/MP), nlm (fast), auto (bm3d up to ~1 MP), none "
        "(default: auto)",
    )
    enh.add_argument(
        "--wb",
        choices=[w.value for w in WhiteBalance],
        default=None,
        help="classic: white balance: camera (as shot), gray (gray world), none (default: camera)",
    )
    enh.add_argument(
        "--gamma",
        choices=[g.value for g in GammaCurve],
        default=None,
        help="classic and raw denoiser: tone curve: bt709 (LibRaw's default) or srgb "
        "(default: bt709)",
    )
    enh.add_argument(
        "--format",
        choices=["png", "jpg", "tiff", "dng"],
        default="png",
        help="format in a folder; dng: the raw denoiser's clean raw as a DNG named "
        "STEM-darkraw.dng (the classic pipeline and the SID network give a linear DNG of their "
        "picture) (default: png)",
    )
    enh.add_argument(
        "--jpeg-quality",
        type=_jpeg_quality,
        default=95,
        metavar="Q",
        help="quality of JPEG outputs, 1 to 100; from 90 up the colour is kept at full "
        "resolution (4:4:4), below at half (4:2:0) (default: 95)",
    )
    enh.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_bare_options(enh)

    info = sub.add_parser(
        "info",
        help="print raw files' metadata",
        description=(
            "Print what raw files say about themselves: camera, CFA pattern, size, black and "
            "white levels, as-shot white balance, colour matrix, exposure, orientation, and the "
            "range and mean of the pixel values. Folders are searched for raw files as by "
            "enhance; bare mosaics need --pattern and --white-level. With --runtime, what runs "
            "the networks on this machine and how the default model loads."
        ),
    )
    info.add_argument("inputs", nargs="*", metavar="INPUT", help="raw files or folders of them")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument(
        "--runtime",
        action="store_true",
        help="describe this machine instead (or as well): the CPU's int8 and bf16 support, the "
        "runtimes installed, and the precision and runtime the default model loads with",
    )
    _add_bare_options(info)

    _add_simulate_parser(sub)

    onnx = sub.add_parser(
        "export-onnx",
        help="export the network to ONNX",
        description=(
            "Write the network as an ONNX model (fp32, opset 17) with dynamic batch, height and "
            "width, input 'raw'. The raw denoiser: (N, 8, h, w) packed planes and their noise "
            "map in, 'correction' (N, 4, h, w) out, which darkraw adds to the planes less its "
            "local mean (docs/inference.md; darkraw enhance --model FILE.onnx runs it). The "
            "SID network: (N, 4 or 9, h, w) packed raw in [0, 1] in, 'rgb' (N, 3, s*h, s*w) "
            "sRGB clamped to [0, 1] out. Needs the 'onnx' extra: pip install 'darkraw[onnx]'."
        ),
    )
    onnx.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help=(
            "model file or training checkpoint (.safetensors), or a bundled model: 'default' "
            "(the raw denoiser), 'sid' or 'small'"
        ),
    )
    onnx.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx to write")
    onnx.add_argument("--opset", type=_count(13), default=17, help="ONNX opset (default: 17)")

    tr = sub.add_parser(
        "train",
        help="train the network on simulated pairs",
        description=(
            "Train the SID U-Net (with its two per-pixel FC layers) on pairs simulated on the "
            "fly from photos or raw files. CONFIG is a YAML file overriding the defaults of "
            "darkraw.training.train.TrainConfig (see configs/). Under torchrun it trains with "
            "DistributedDataParallel."
        ),
    )
    tr.add_argument("config", metavar="CONFIG", help="YAML training config")
    tr.add_argument(
        "--resume", action="store_true", help="continue from the run's newest checkpoint"
    )
    tr.add_argument(
        "--stop-after",
        type=_count(1),
        default=None,
        metavar="STEP",
        help="stop after this step (a checkpoint is written there); resume later with --resume",
    )

    ft = sub.add_parser(
        "finetune",
        help="fine-tune a trained network on real (SID-layout) pairs",
        description=(
            "Transfer learning: start from CHECKPOINT and train on a fraction of the real pairs "
            "of a SID list (CONFIG sets data.kind: sid and the lists). For the SID network, "
            "strategies: seed (the seed's: re-initialise the two per-pixel FC layers, train "
            "everything), head (only the FC layers, re-initialised), freeze-encoder, full. For "
            "the raw denoiser (CONFIG has task: denoise; it starts from the bundled default "
            "unless --from says otherwise): full, head (only the output convolution), decoder "
            "(the encoder frozen)."
        ),
    )
    ft.add_argument("config", metavar="CONFIG", help="YAML training config with data.kind: sid")
    ft.add_argument(
        "--from",
        dest="init_from",
        default=None,
        metavar="CHECKPOINT",
        help=(
            "checkpoint, model file or bundled model to start from (required for the SID "
            "network; the raw denoiser's default: default)"
        ),
    )
    ft.add_argument(
        "--fraction",
        type=float,
        default=None,
        help="share of the training pairs, in (0, 1] (default: the config's)",
    )
    ft.add_argument(
        "--per-ratio", type=_count(1), default=None, metavar="K", help="instead, K pairs per ratio"
    )
    ft.add_argument(
        "--strategy",
        choices=["seed", "head", "freeze-encoder", "full", "decoder"],
        default=None,
        help="transfer strategy (default: seed for the SID network, full for the raw denoiser)",
    )
    ft.add_argument("--resume", action="store_true", help="continue a stopped fine-tuning run")

    ev = sub.add_parser(
        "evaluate",
        help="PSNR/SSIM of methods on SID-layout pairs, with tables and an HTML report",
        description=(
            "Evaluate the classic pipeline and/or networks on the pairs of a SID list: PSNR and "
            "SSIM per image and per ratio (8-bit, SID's reporting, and float), tables in "
            "Markdown/CSV/JSON, a comparison sheet and a self-contained HTML report. A raw "
            "denoiser is also scored on its raw planes against the long exposure's (ELD's, "
            "PMN's and LED's reporting)."
        ),
    )
    ev.add_argument("--data", required=True, metavar="LIST", help="SID list file of test pairs")
    ev.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PATH",
        help=(
            "model file or checkpoint, SID U-Net or raw denoiser (repeatable; 'default', 'sid' "
            "or 'small' for a bundled one)"
        ),
    )
    ev.add_argument("--no-classic", action="store_true", help="leave out the classic pipeline")
    ev.add_argument(
        "--denoise",
        choices=[d.value for d in Denoiser],
        default="nlm",
        help="denoiser of the classic pipeline (default: nlm)",
    )
    ev.add_argument(
        "--protocol",
        choices=["all", "first-burst"],
        default="all",
        help="all bursts, or SID's own _00 only (default: all)",
    )
    ev.add_argument(
        "--keep-misaligned",
        action="store_true",
        help="keep scenes 10034, 10045, 10172 (left out by default)",
    )
    ev.add_argument("--limit", type=_count(1), default=None, help="evaluate the first N pairs")
    ev.add_argument("-o", "--output", default="darkraw-eval", help="report folder")

    ex = sub.add_parser(
        "experiment",
        help="the seed's experiment: pretrain, baseline, transfers, evaluated together",
        description=(
            "Train the synthetic model, the SID baseline and every transfer of CONFIG "
            "(darkraw.training.experiment.ExperimentConfig), reusing finished runs, then "
            "evaluate them all with the classic pipeline on the test list."
        ),
    )
    ex.add_argument("config", metavar="CONFIG", help="YAML experiment config")

    demo = sub.add_parser(
        "demo",
        help="enhance the bundled dark sample with the default model and the classic pipeline",
        description=(
            "Enhance the dark raw sample that comes with darkraw twice, with the default network "
            "and with the classic pipeline, and write both results and a side-by-side "
            "comparison (as shot | classic pipeline | network) into the output folder."
        ),
    )
    demo.add_argument("-o", "--output", default="darkraw-demo", help="output folder")
    demo.add_argument(
        "--denoise",
        choices=[d.value for d in Denoiser],
        default="auto",
        help="denoiser of the classic pipeline",
    )
    return parser


def _add_simulate_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from darkraw.synth.noise import DEFAULT_CAMERA, available_profiles

    sim = sub.add_parser(
        "simulate",
        help="write simulated dark raw frames (DNG) with their clean references",
        description=(
            "Make training pairs from clean photos or raw files: for each input, a clean raw "
            "frame (10 s) and dark frames at each exposure ratio (10/ratio s), written as DNG "
            "that any raw tool opens, with the clean sRGB reference and pairs.tsv listing the "
            "noise drawn. The same --seed gives the same files, whatever the other inputs."
        ),
    )
    sim.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="photos, raw files, or folders of them"
    )
    sim.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="output folder (created if missing)"
    )
    sim.add_argument(
        "--model",
        choices=["seed", "calibrated", "simple"],
        default="calibrated",
        help="noise model: calibrated (a real camera's noise, after ELD), seed (the seed's "
        "reverse pipeline: gamma, white imbalance, Poisson, black level), simple (Poisson + "
        "Gaussian read noise) (default: calibrated)",
    )
    sim.add_argument(
        "--camera",
        default=DEFAULT_CAMERA,
        metavar="NAME_OR_JSON",
        help=f"noise profile of the calibrated model: {', '.join(available_profiles())}, or a "
        f".json profile file (default: {DEFAULT_CAMERA})",
    )
    sim.add_argument(
        "--ratios",
        type=_ratios,
        metavar="R1,R2,...",
        default=(100.0, 250.0, 300.0),
        help="exposure ratios of the dark frames, each >= 1 (default: 100,250,300, SID's)",
    )
    sim.add_argument(
        "--seed",
        type=_count(0),
        default=0,
        metavar="N",
        help="seed of every random draw (default: 0)",
    )
    sim.add_argument(
        "--bursts",
        type=_count(1),
        metavar="N",
        default=1,
        help="independent dark frames per ratio, like SID's _00, _01 (default: 1)",
    )
    sim.add_argument(
        "--layout",
        choices=["flat", "sid"],
        default="flat",
        help="flat: <stem>_clean.dng, <stem>_x100.dng, ... in one folder; sid: SID's short/, "
        "long/ and Sony_{train,val,test}_list.txt (ratios up to 300) (default: flat)",
    )
    sim.add_argument(
        "--split",
        choices=["train", "val", "test", "auto"],
        default="auto",
        help="split of every input (SID scene ids: 0xxxx train, 1xxxx test, 2xxxx val); "
        "auto: 8 of every 10 inputs train, 1 val, 1 test (default: auto)",
    )
    sim.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sim.add_argument(
        "--figure",
        action="store_true",
        help="write only <stem>_figure3.png per input: the seed's Figure 3 (original, gamma "
        "distortion, white imbalance, Poisson noise at the first ratio, black level), using "
        "the seed model whatever --model says",
    )


def _applies(flags: list[str]) -> str:
    return "applies" if len(flags) == 1 else "apply"


def _given(args: argparse.Namespace, flag: str) -> bool:
    """Whether ``flag`` was on the command line (its default is ``None``)."""
    return getattr(args, flag[2:].replace("-", "_")) is not None


def _writes_dng(args: argparse.Namespace) -> bool:
    """Whether ``enhance`` writes DNGs: an output named ``.dng``, or a folder with ``--format
    dng``."""
    from darkraw.batch import output_suffix
    from darkraw.raw.fileio import DNG_EXTENSION

    return output_suffix(args.output, args.format) == DNG_EXTENSION


def _refuse(args: argparse.Namespace, flags: list[str], owner: str) -> None:
    """A flag for another kind of network would be silently ignored: say so instead."""
    given = [flag for flag in flags if _given(args, flag)]
    if given:
        raise ValueError(f"{', '.join(given)} {_applies(given)} to {owner} only")


#: What a command leaves for the process's end when :func:`run` ends it without finalisation:
#: the network a batch loaded, whose teardown would take 0.03 s of a 2-second command. ``None``
#: (each network torn down after its batch) when :func:`main` is called in a longer process.
_KEPT_UNTIL_EXIT: list[object] | None = None


def _cmd_enhance(args: argparse.Namespace) -> int:
    from darkraw.batch import enhance_batch

    method = args.method or "network"
    # An option of the other method (or network) would be silently ignored; say so instead.
    network_flags = ["--model", "--tile", "--overlap", "--precision", "--ensemble"]
    denoiser_flags = ["--strength", "--render", "--demosaic", "--noise-profile", "--black-offset"]
    classic_flags = ["--denoise", "--wb"]
    wrong = [*network_flags, *denoiser_flags] if method == "classic" else classic_flags
    given = [flag for flag in wrong if _given(args, flag)]
    if given:
        other = "network" if method == "classic" else "classic"
        raise ValueError(f"{', '.join(given)} {_applies(given)} to --method {other} only")
    gamma = GammaCurve.parse(args.gamma or GammaCurve.BT709)
    options = ClassicOptions(
        ratio=args.ratio,
        denoiser=Denoiser.parse(args.denoise or Denoiser.AUTO),
        white_balance=WhiteBalance.parse(args.wb or WhiteBalance.CAMERA),
        gamma=gamma,
    )
    inference, denoise, model = None, None, None
    if method == "network":
        from darkraw.nn.modelfiles import DEFAULT_MODEL, model_arch

        model = args.model or DEFAULT_MODEL
        if model_arch(model) == "raw_denoiser":
            from darkraw.nn.rawdenoise import DenoiseOptions, Renderer

            base = DenoiseOptions()
            denoise = DenoiseOptions(
                strength=base.strength if args.strength is None else args.strength,
                renderer=args.render or base.renderer,
                gamma=gamma,
                tile=base.tile if args.tile is None else args.tile,
                overlap=args.overlap,
                precision=args.precision or base.precision,
                ensemble=args.ensemble or base.ensemble,
                demosaic=args.demosaic or base.demosaic,
                black_offset=args.black_offset or base.black_offset,
            )
            if args.demosaic is not None and denoise.renderer is not Renderer.LIBRAW:
                raise ValueError(
                    "--demosaic chooses LibRaw's demosaicking; it needs --render libraw"
                )
            rendering = [f for f in ("--render", "--demosaic", "--gamma") if _given(args, f)]
            if rendering and _writes_dng(args):
                raise ValueError(
                    f"{', '.join(rendering)} {_applies(rendering)} to rendered pictures (PNG, "
                    "JPEG, TIFF); a DNG holds the denoised raw, which its editor renders"
                )
        else:
            from darkraw.nn.runtime import require_torch

            require_torch(f"the SID network ({model})")
            from darkraw.nn.infer import InferenceOptions

            _refuse(args, [*denoiser_flags, "--gamma"], "the raw denoiser (--model default)")
            defaults = InferenceOptions()
            inference = InferenceOptions(
                tile=defaults.tile if args.tile is None else args.tile,
                overlap=defaults.overlap if args.overlap is None else args.overlap,
                precision=args.precision or defaults.precision,
                ensemble=args.ensemble or defaults.ensemble,
                device=args.device,
            )
    report = enhance_batch(
        args.inputs,
        args.output,
        options,
        fmt=args.format,
        bare=_bare_spec(args),
        overwrite=args.overwrite,
        model=model,
        inference=inference,
        denoise=denoise,
        noise_profiles=args.noise_profile,
        jpeg_quality=args.jpeg_quality,
        device=args.device,
        keep=_KEPT_UNTIL_EXIT,
    )
    done = len(report.written) + len(report.skipped) + len(report.failed)
    # One file's failure is its one-line error, already printed; a summary would repeat it.
    if done > 1 or report.hidden or report.in_output or report.ours:
        print(report.summary(), file=sys.stderr)
        for path, why in report.failed:
            print(f"  failed: {path}: {why}", file=sys.stderr)
    return 0 if report.ok else EXIT_FAILED


def _cmd_info(args: argparse.Namespace) -> int:
    from darkraw.info import describe_inputs, format_json, format_table

    runtime = None
    if args.runtime:
        from darkraw.info import describe_runtime, format_runtime

        runtime = describe_runtime()
        if not args.json:
            print(format_runtime(runtime) + ("\n" if args.inputs else ""))
    infos, failed = [], 0
    for info in describe_inputs(args.inputs, _bare_spec(args)):
        if isinstance(info, DarkrawError):
            print(f"darkraw: error: {info}", file=sys.stderr)
            failed += 1
        else:
            infos.append(info)
    if args.json:
        if runtime is None:
            print(format_json(infos))
        else:
            # One JSON document: the machine alone, or the machine and the files.
            print(
                json.dumps(
                    runtime if not args.inputs else {"runtime": runtime, "files": infos}, indent=2
                )
            )
    elif infos:
        print("\n\n".join(format_table(i) for i in infos))
    return EXIT_FAILED if failed else 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from darkraw.synth.pairs import SimulateOptions, simulate_batch
    from darkraw.synth.simulate import SimulationConfig

    options = SimulateOptions(
        ratios=args.ratios,
        simulation=SimulationConfig(model=args.model, camera=args.camera),
        seed=args.seed,
        layout=args.layout,
        bursts=args.bursts,
        split=args.split,
        overwrite=args.overwrite,
    )
    report = simulate_batch(args.inputs, args.output, options, figure=args.figure)
    # One input's failure is its one-line error, already printed; a summary would repeat it.
    if report.inputs > 1 or report.ok:
        print(report.summary(), file=sys.stderr)
        for path, why in report.failed:
            print(f"  failed: {path}: {why}", file=sys.stderr)
    return 0 if report.ok else EXIT_FAILED


def _cmd_train(args: argparse.Namespace) -> int:
    from darkraw.config import load_config, read_yaml

    data = read_yaml(args.config)
    if isinstance(data, dict) and data.get("task") == "denoise":
        from darkraw.training.train_denoiser import DenoiserTrainConfig, train_denoiser

        settings = load_config(DenoiserTrainConfig, args.config)
        summary = train_denoiser(settings, resume=args.resume, stop_after=args.stop_after)
        return _report_denoiser_training(summary)
    from darkraw.training.train import TrainConfig, train

    config = load_config(TrainConfig, args.config)
    return _report_training(train(config, resume=args.resume, stop_after=args.stop_after))


def _report_denoiser_training(summary: DenoiserSummary) -> int:
    scores = ", ".join(f"{k} {v:.2f}" for k, v in summary.val.items())
    print(
        f"{summary.out_dir}: step {summary.step}: loss {summary.last_loss:.4f}; "
        f"{summary.steps_per_s:.2f} steps/s, peak RSS {summary.peak_rss_mib:.0f} MiB"
        + (f"; {scores}" if scores else "")
    )
    return 0


def _report_training(summary: TrainSummary) -> int:
    if summary.rank:
        return 0
    lines = [
        f"step {summary.step}: loss {summary.last_loss:.4f}",
        f"{summary.steps_per_s:.2f} steps/s, peak RSS {summary.peak_rss_mib:.0f} MiB",
    ]
    if summary.val_psnr is not None and summary.classic_psnr is not None:
        lines.append(
            f"validation PSNR {summary.val_psnr:.2f} dB (classic pipeline "
            f"{summary.classic_psnr:.2f} dB)"
        )
    print(f"{summary.out_dir}: " + "; ".join(lines))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from darkraw.config import load_config, read_yaml
    from darkraw.training.train import DataKind, TrainConfig, Transfer, train

    settings = read_yaml(args.config)
    if isinstance(settings, dict) and settings.get("task") == "denoise":
        from darkraw.training.train_denoiser import (
            DenoiserTrainConfig,
            finetune_config,
            train_denoiser,
        )

        try:
            denoiser_config = finetune_config(
                load_config(DenoiserTrainConfig, args.config),
                init_from=args.init_from or "default",
                transfer=args.strategy or "full",
                fraction=args.fraction,
                per_ratio=args.per_ratio,
                model_from_start="model" not in settings,
            )
        except ValueError as err:
            raise ValueError(f"{args.config}: {err}") from None
        summary = train_denoiser(denoiser_config, resume=args.resume)
        return _report_denoiser_training(summary)
    if args.init_from is None:
        raise ValueError("finetune of the SID network needs --from CHECKPOINT")
    if args.strategy == "decoder":
        raise ValueError(
            "strategy decoder is the raw denoiser's; the SID network takes seed, head, "
            "freeze-encoder or full"
        )
    config = load_config(TrainConfig, args.config)
    data = config.data
    if data.kind is not DataKind.SID:
        raise ValueError(f"{args.config}: finetune needs data.kind: sid and SID list files")
    if args.fraction is not None:
        data = replace(data, sid_fraction=args.fraction)
    if args.per_ratio is not None:
        data = replace(data, sid_per_ratio=args.per_ratio)
    strategy = Transfer(args.strategy or "seed")
    config = replace(config, data=data, init_from=args.init_from, transfer=strategy)
    return _report_training(train(config, resume=args.resume))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from darkraw.nn.infer import resolve_model
    from darkraw.training.evaluate import (
        Method,
        RawMethod,
        classic_method,
        evaluate,
        markdown_table,
        raw_markdown_table,
    )
    from darkraw.training.experiment import network_method
    from darkraw.training.sid import read_list, select

    pairs = select(
        read_list(args.data),
        protocol=args.protocol,
        exclude_misaligned=not args.keep_misaligned,
    )
    if args.limit:
        pairs = pairs[: args.limit]
    methods: dict[str, Method | RawMethod] = {}
    if not args.no_classic:
        methods[f"classic ({args.denoise})"] = classic_method(args.denoise)
    for spec in args.model:
        methods[str(spec)] = network_method(resolve_model(spec))
    if not methods:
        raise ValueError("nothing to evaluate: give --model or drop --no-classic")
    result = evaluate(pairs, methods, args.output)
    print(markdown_table(result.table), end="")
    raw = raw_markdown_table(result.table)
    if raw:
        print("\nraw-domain PSNR / SSIM (packed planes against the long exposure's):")
        print(raw, end="")
    print(f"report: {result.folder / 'report.html'}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from darkraw.config import load_config
    from darkraw.training.evaluate import markdown_table
    from darkraw.training.experiment import ExperimentConfig, run_experiment

    result = run_experiment(load_config(ExperimentConfig, args.config))
    print(markdown_table(result.table), end="")
    print(f"report: {result.folder / 'report.html'}")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from darkraw.nn.onnx_export import export_model_file

    path = export_model_file(args.model, args.output, opset=args.opset)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from darkraw.demo import run_demo
    from darkraw.progress import listening

    # On a terminal, a line that says which step runs: the classic pipeline's BM3D takes most
    # of the demo's half minute, which would otherwise pass without a sign.
    line = tqdm(bar_format="demo: {desc} [{elapsed}]", leave=False, disable=None)
    said = {
        "network": "network result: {}",
        "classic": "classic result: {}",
        "comparison": "comparison:     {}  (as shot | classic pipeline | network)",
    }

    def written(name: str, path: object) -> None:
        # Each file as soon as it is there (the network's after a second, not after BM3D),
        # through tqdm so that the step line is not torn.
        tqdm.write(said[name].format(path))

    with line, listening(lambda text: line.set_description_str(text)):
        run_demo(args.output, args.denoise, on_written=written)
    return 0


_COMMANDS = {
    "enhance": _cmd_enhance,
    "info": _cmd_info,
    "simulate": _cmd_simulate,
    "train": _cmd_train,
    "finetune": _cmd_finetune,
    "evaluate": _cmd_evaluate,
    "experiment": _cmd_experiment,
    "export-onnx": _cmd_export_onnx,
    "demo": _cmd_demo,
}


#: Commands that train or score networks in torch, which ``pip install darkraw`` leaves out.
_NEEDS_TORCH = frozenset({"train", "finetune", "evaluate", "experiment", "export-onnx"})


def _numpy_without_huge_pages() -> None:
    """Stop numpy asking the kernel for transparent huge pages (``MADV_HUGEPAGE``) for its
    arrays, unless ``NUMPY_MADVISE_HUGEPAGE`` says otherwise.

    With the kernel's usual ``defrag=madvise``, each such request may stall on memory
    compaction. A 12-Mpixel ``darkraw enhance`` took 2.86 s (median of 8, alternating, twice)
    without the requests against 3.05-3.11 s with them, its system time 0.82-0.84 s against
    1.07-1.23 s, though it took twice the page faults (``docs/speed-log.md``). Only the command
    line does this: a program that imports darkraw keeps its own numpy settings.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    import numpy as np

    # numpy 2 keeps it in numpy._core, numpy 1.26 in numpy.core.
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if setter is not None:
        setter(False)


#: glibc's ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8

#: The environment variables by which a user sets glibc's allocator; any of them leaves it be.
_MALLOC_SETTINGS = (
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``; ``None`` off Linux or with another C library (musl has none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        mallopt: Callable[[int, int], int] = libc.mallopt
    except (OSError, AttributeError):
        return None
    return mallopt


def _malloc_keeping_freed_memory() -> None:
    """Let glibc's allocator keep the memory a command frees, for its next arrays to reuse,
    unless the user set the allocator through its environment variables.

    By default glibc gives each array of more than 32 MB (a 12-Mpixel frame's planes are 48)
    fresh pages from the kernel and returns them when freed, so each of the command's many
    large arrays is faulted in, page by page, anew; and each thread allocates from an arena of
    its own. With one arena, a mapping threshold of 1 GiB and no trimming, the freed pages are
    reused: a 12-Mpixel ``darkraw enhance`` took 172,000-180,000 page faults instead of
    234,000-238,000, its system time fell by about 0.1 s, its wall time by 0.06 s (median of 6
    alternating pairs) and its peak RSS by 20-40 MB; a batch of eight took 224,000-237,000
    instead of 945,000-1,100,000, 0.8-1.1 s of system time instead of 2.4-2.8 s, and 7-9 %
    less wall time (``docs/speed-log.md``). Only the command line does this; a program that
    imports darkraw keeps its allocator as it is.
    """
    if any(name in os.environ for name in _MALLOC_SETTINGS):
        return
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return
    mallopt(_M_ARENA_MAX, 1)
    mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 failed inputs, 2 usage, 130 after Ctrl-C,
    143 after SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info" and not args.inputs and not args.runtime:
        parser.error("info needs INPUT files or folders, or --runtime")
    _numpy_without_huge_pages()
    _malloc_keeping_freed_memory()
    try:
        if args.command in _NEEDS_TORCH:
            from darkraw.nn.runtime import require_torch

            require_torch(f"darkraw {args.command}")
        with _terminate_as_interrupt(), _stderr_apart_from_libraw(), _warnings_as_lines():
            code = _COMMANDS[args.command](args)
        # Inside the try: a closed pipe shows at this flush when the output fitted the buffer.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except DarkrawError as err:
        if args.debug:
            traceback.print_exc()
        print(f"darkraw: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as err:
        if args.debug:
            traceback.print_exc()
        print(f"darkraw: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        # What no check before it words (a 5000-character output path: "File name too long").
        if args.debug:
            traceback.print_exc()
        print(f"darkraw: error: {_os_error(err)}", file=sys.stderr)
        return EXIT_FAILED
    except _Terminated:
        print(
            "darkraw: terminated; finished outputs are complete, run again to do the rest",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(
            "darkraw: interrupted; finished outputs are complete, run again to do the rest",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def run() -> NoReturn:
    """The ``darkraw`` command (and ``python -m darkraw``, both through
    :func:`darkraw.__main__.run`): :func:`main`, then the process ends at once, without Python's
    finalisation.

    Everything a command writes is complete and closed when :func:`main` returns (outputs are
    written atomically, threads are joined), and tearing down OpenVINO's compiled model and the
    modules of numpy, OpenCV and OpenVINO one by one took 0.11-0.15 s of a 12-Mpixel
    ``darkraw enhance`` of 2.7-3.1 s (0.015 s without it). The standard streams are flushed
    first. An exception :func:`main` does not handle (a bug) still ends the usual way, with its
    traceback. What the command loaded stays loaded until then (:data:`_KEPT_UNTIL_EXIT`).
    """
    global _KEPT_UNTIL_EXIT
    _KEPT_UNTIL_EXIT = []
    code = main()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe: main already said all it could.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as after Ctrl-C: every atomic
    write deletes its temporary file and every ``finally`` runs."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the command runs (the main thread only:
    signals are delivered there), and put the earlier handler back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def terminate(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            # A forked child (a data-loading worker) ends as SIGTERM ends a process.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise _Terminated

    before = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def _stderr_apart_from_libraw() -> Iterator[None]:
    """Python's stderr writes to a duplicate of descriptor 2 while the command runs.

    darkraw mutes LibRaw's own C-level messages by pointing descriptor 2 at ``/dev/null`` while
    a thread is inside LibRaw (:mod:`darkraw.raw.rawio`); in a batch one thread is nearly always
    there (reading the next file, rendering this one), and an error line, a warning or the
    progress bar printed meanwhile by another thread would be lost with them. Left alone where
    ``sys.stderr`` is not the process's own (a test's capture, an embedding program's stream).
    """
    stream = sys.stderr
    try:
        own = sys.__stderr__ is not None and stream is sys.__stderr__ and stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        own = False
    if not own:
        yield
        return
    stream.flush()
    apart = open(  # noqa: SIM115 (closed below, after sys.stderr is put back)
        os.dup(2), "w", encoding=stream.encoding, errors=stream.errors, buffering=1
    )
    sys.stderr = apart
    try:
        yield
    finally:
        apart.flush()
        sys.stderr = stream
        apart.close()


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Print darkraw's warnings as ``darkraw: warning: ...``, one line each, beside the progress
    bar; other libraries' warnings keep Python's format."""
    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if not category.__module__.startswith("darkraw."):
                default(message, category, filename, lineno, file, line)
                return
            from tqdm import tqdm

            tqdm.write(f"darkraw: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        yield


def _os_error(err: OSError) -> str:
    """``PATH: problem`` for an OSError, the path shortened to fit a line."""
    problem = err.strerror or str(err)
    if err.filename is None:
        return problem
    name = os.fsdecode(err.filename) if isinstance(err.filename, bytes) else str(err.filename)
    if len(name) > 120:
        name = f"{name[:60]}...{name[-40:]} ({len(name)} characters)"
    return f"{name}: {problem}"


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # no file descriptor behind sys.stdout (a test's capture): nothing to flush


if __name__ == "__main__":
    sys.exit(main())
