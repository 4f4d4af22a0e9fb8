"""The ``darkraw`` command line: parses arguments and calls one library function each."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from darkraw import __version__
from darkraw.denoise import Denoiser
from darkraw.errors import DarkrawError
from darkraw.pipeline import ClassicOptions, GammaCurve, WhiteBalance
from darkraw.rawio import BareMosaicSpec

EXIT_FAILED = 1
EXIT_USAGE = 2


def _ratio(text: str) -> float | None:
    if text.lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"ratio must be a positive number, got {text!r}")
    return value


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
    parser = argparse.ArgumentParser(
        prog="darkraw",
        description="Make raw photos taken in the dark look as if taken in good light.",
    )
    parser.add_argument("--version", action="version", version=f"darkraw {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enh = sub.add_parser(
        "enhance",
        help="brighten and denoise dark raw files",
        description="Brighten and denoise dark raw files; writes 8-bit PNG/JPEG or 16-bit TIFF.",
    )
    enh.add_argument("inputs", nargs="+", metavar="INPUT", help="raw files or folders of them")
    enh.add_argument(
        "-o", "--output", required=True, help="output image (one input) or folder (several)"
    )
    enh.add_argument("--method", choices=["classic"], default="classic", help="rendering method")
    enh.add_argument(
        "--ratio",
        type=_ratio,
        default=None,
        help="exposure ratio (amplification), or 'auto' to choose from the image (default: auto)",
    )
    enh.add_argument(
        "--denoise",
        choices=[d.value for d in Denoiser],
        default="auto",
        help="denoiser: bm3d (best, ~35 s/MP), nlm (fast), auto (bm3d up to ~1 MP), none",
    )
    enh.add_argument(
        "--wb",
        choices=[w.value for w in WhiteBalance],
        default="camera",
        help="white balance: camera (as shot), gray (gray world), none",
    )
    enh.add_argument(
        "--gamma",
        choices=[g.value for g in GammaCurve],
        default="bt709",
        help="transfer curve: bt709 (LibRaw's default) or srgb",
    )
    enh.add_argument(
        "--format", choices=["png", "jpg", "tiff"], default="png", help="format in a folder"
    )
    enh.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_bare_options(enh)

    info = sub.add_parser("info", help="print raw files' metadata")
    info.add_argument("inputs", nargs="+", metavar="FILE")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_bare_options(info)

    _add_simulate_parser(sub)

    tr = sub.add_parser(
        "train",
        help="train the network on simulated pairs",
        description=(
            "Train the SID U-Net (with its two per-pixel FC layers) on pairs simulated on the "
            "fly from photos or raw files. CONFIG is a YAML file overriding the defaults of "
            "darkraw.train.TrainConfig (see configs/). Under torchrun it trains with "
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

    demo = sub.add_parser("demo", help="run the classic pipeline on the bundled dark sample")
    demo.add_argument("-o", "--output", default="darkraw-demo", help="output folder")
    demo.add_argument(
        "--denoise", choices=[d.value for d in Denoiser], default="auto", help="denoiser"
    )
    return parser


def _add_simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from darkraw.noise import DEFAULT_CAMERA, available_profiles

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


def _cmd_enhance(args: argparse.Namespace) -> int:
    from darkraw.enhance import enhance_batch

    options = ClassicOptions(
        ratio=args.ratio,
        denoiser=Denoiser.parse(args.denoise),
        white_balance=WhiteBalance.parse(args.wb),
        gamma=GammaCurve.parse(args.gamma),
    )
    report = enhance_batch(
        args.inputs,
        args.output,
        options,
        fmt=args.format,
        bare=_bare_spec(args),
        overwrite=args.overwrite,
    )
    if len(report.written) + len(report.skipped) + len(report.failed) > 1 or report.failed:
        print(report.summary(), file=sys.stderr)
        for path, why in report.failed:
            print(f"  failed: {path}: {why}", file=sys.stderr)
    return 0 if report.ok else EXIT_FAILED


def _cmd_info(args: argparse.Namespace) -> int:
    from darkraw.info import describe_file, format_json, format_table

    bare = _bare_spec(args)
    infos, failed = [], 0
    for path in args.inputs:
        try:
            infos.append(describe_file(path, bare))
        except DarkrawError as err:
            print(f"darkraw: error: {err}", file=sys.stderr)
            failed += 1
    if args.json:
        print(format_json(infos))
    else:
        print("\n\n".join(format_table(i) for i in infos))
    return EXIT_FAILED if failed else 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from darkraw.pairs import SimulateOptions, simulate_batch
    from darkraw.simulate import SimulationConfig

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
    print(report.summary(), file=sys.stderr)
    for path, why in report.failed:
        print(f"  failed: {path}: {why}", file=sys.stderr)
    return 0 if report.ok else EXIT_FAILED


def _cmd_train(args: argparse.Namespace) -> int:
    from darkraw.config import load_config
    from darkraw.train import TrainConfig, train

    config = load_config(TrainConfig, args.config)
    summary = train(config, resume=args.resume, stop_after=args.stop_after)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from darkraw.demo import run_demo

    paths = run_demo(args.output, args.denoise)
    print(f"classic result: {paths['classic']}")
    print(f"comparison:     {paths['comparison']}  (as shot | classic pipeline)")
    return 0


_COMMANDS = {
    "enhance": _cmd_enhance,
    "info": _cmd_info,
    "simulate": _cmd_simulate,
    "train": _cmd_train,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 failed inputs, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
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
    except KeyboardInterrupt:
        print(
            "darkraw: interrupted; finished outputs are complete, run again to do the rest",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
