"""Quantise the raw denoiser's ONNX export to int8 with ONNX Runtime's static quantisation.

The calibration inputs are the network's inputs exactly as ``darkraw enhance`` builds them
(:func:`darkraw.nn.rawdenoise.enhance_with_denoiser`: RGGB view, black level and its measured
offset, ratio, the noise level estimated from the frame, the noise map): development photos of
the training split (never the benchmark's held-out ones), unprocessed into raw with a seeded
virtual camera, darkened by ELD's five calibrated cameras or a Poisson-Gaussian camera at
exposure ratios drawn log-uniformly from 1 to 300, and cut into packed crops.

The result is a QDQ graph (int8 weights per output channel, 8-bit activations per tensor) that
:func:`darkraw.nn.runtime.load_onnx_denoiser` accepts: the fp32 file's ``metadata_props`` are
copied, with ``darkraw.precision`` (``int8``) and ``darkraw.quantisation`` (the settings) added.
Whether it is good enough is measured by ``benchmarks/int8_denoiser.py`` (docs/inference.md,
"int8").

Usage:
    python scripts/quantize_denoiser.py --out /tmp/denoiser_int8.onnx \\
        [--model src/darkraw/data/denoiser_model.onnx] [--calibration-count 48] [--side 256] \\
        [--method minmax|entropy|percentile] [--percentile 99.999] [--reduce-range] \\
        [--activation-type uint8|int8] [--exclude first,last] [--symmetric-activations]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
DEFAULT_MODEL = ROOT / "src" / "darkraw" / "data" / "denoiser_model.onnx"

#: Noise of the calibration frames: ELD's calibrated cameras and a Poisson-Gaussian one.
CAMERAS = ("SonyA7S2", "NikonD850", "CanonEOS5D4", "CanonEOS70D", "CanonEOS700D", "simple")


class _Captured(Exception):
    """Raised by the stand-in for ``run_denoiser`` once it holds the network's input."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__("captured")
        self.x = x


def network_input(mosaic_dn: np.ndarray, meta: Any, model: Any, ratio: float) -> np.ndarray:
    """The ``(C, h, w)`` input :func:`enhance_with_denoiser` would give the network.

    The function is run up to its call of ``run_denoiser``, which is replaced for the call, so
    the input is built by darkraw's own code and follows any change to it.
    """
    import darkraw.nn.rawdenoise as rawdenoise

    def capture(_model: Any, x: np.ndarray, _options: Any = None) -> np.ndarray:
        raise _Captured(np.array(x, dtype=np.float32))

    original = rawdenoise.run_denoiser
    rawdenoise.run_denoiser = capture  # type: ignore[assignment]
    try:
        rawdenoise.enhance_with_denoiser(mosaic_dn, meta, model, ratio)
    except _Captured as got:
        return got.x
    finally:
        rawdenoise.run_denoiser = original  # type: ignore[assignment]
    raise RuntimeError("enhance_with_denoiser did not run the network")


def calibration_inputs(
    model: Any, count: int, side: int, seed: int, verbose: bool = True
) -> Iterator[np.ndarray]:
    """``count`` network inputs ``(1, C, side, side)`` from darkened training-split photos."""
    from darkraw.raw.fileio import read_image
    from darkraw.synth.simulate import SimulationConfig, simulate_dark
    from darkraw.synth.sources import collect_sources, unprocess_photo
    from darkraw.synth.unprocess import UnprocessConfig, sample_unprocess_params
    from darkraw.training.train import split_sources

    files, _ = split_sources(collect_sources([DATA / "clean"]), 0.08)
    rng = np.random.default_rng([seed, 8])
    order = rng.permutation(len(files))
    mosaic_side = 2 * side
    made = 0
    for index in order:
        if made >= count:
            return
        rgb = read_image(files[index])
        h, w = rgb.shape[1:]
        if min(h, w) < mosaic_side:
            continue
        top = int(rng.integers(0, h - mosaic_side + 1)) // 2 * 2
        left = int(rng.integers(0, w - mosaic_side + 1)) // 2 * 2
        crop = rgb[:, top : top + mosaic_side, left : left + mosaic_side]
        params = sample_unprocess_params(UnprocessConfig(), rng)
        clean = unprocess_photo(crop, params, "RGGB", source=files[index])
        camera = CAMERAS[made % len(CAMERAS)]
        if camera == "simple":
            simulation = SimulationConfig(
                model="simple",
                gain=float(np.exp(rng.uniform(np.log(0.3), np.log(4.0)))),
                read_noise_dn=float(rng.uniform(1.0, 6.0)),
            )
        else:
            simulation = SimulationConfig(camera=camera)
        ratio = float(np.exp(rng.uniform(0.0, np.log(300.0))))
        dark = simulate_dark(clean.raw_lin, clean.meta, ratio, simulation, rng)
        x = network_input(dark.mosaic_dn, dark.meta, model, ratio)
        made += 1
        if verbose:
            print(
                f"calibration {made}/{count}: {files[index].parent.name}/{files[index].name} "
                f"{camera} x{ratio:.1f} input {x.min():.3f}..{x.max():.3f}",
                flush=True,
            )
        yield x[None]


def conv_names(model_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path)).graph
    return [n.name for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]


def quantise(args: argparse.Namespace) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from darkraw.nn.runtime import load_onnx_denoiser

    source = Path(args.model)
    fp32 = load_onnx_denoiser(source, device="cpu", threads=args.threads)
    start = time.perf_counter()
    samples = list(calibration_inputs(fp32, args.calibration_count, args.side, args.seed))
    prepare_s = time.perf_counter() - start

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {fp32._input: x}

        def rewind(self) -> None:
            self.items = iter(samples)

    convs = conv_names(source)
    names = [n.name for n in onnx.load(str(source)).graph.node]
    exclude: list[str] = []
    for item in filter(None, args.exclude.split(",")):
        item = {"first": convs[0], "last": convs[-1]}.get(item, item)
        exclude += [n for n in names if fnmatch.fnmatchcase(n, item) and n not in exclude]
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    # (CalibMaxIntermediateOutputs is not used: in onnxruntime 1.32 MinMax drops each full
    # chunk of outputs without merging its range.)
    extra: dict[str, Any] = {"CalibTensorRangeSymmetric": args.symmetric_activations}
    if args.method == "percentile":
        extra["CalibPercentile"] = args.percentile
    if args.symmetric_activations:
        extra["ActivationSymmetric"] = True
    settings = {
        "format": "QDQ",
        "method": args.method,
        "percentile": args.percentile if args.method == "percentile" else None,
        "per_channel": not args.per_tensor,
        "reduce_range": args.reduce_range,
        "activation_type": args.activation_type,
        "weight_type": "int8",
        "symmetric_activations": args.symmetric_activations,
        "excluded": exclude,
        "calibration_count": len(samples),
        "calibration_side": args.side,
        "seed": args.seed,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        start = time.perf_counter()
        quantize_static(
            str(prepared),
            str(Path(tmp) / "int8.onnx"),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=not args.per_tensor,
            reduce_range=args.reduce_range,
            activation_type=types[args.activation_type],
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=methods[args.method],
            extra_options=extra,
        )
        quantise_s = time.perf_counter() - start
        model = onnx.load(str(Path(tmp) / "int8.onnx"))
    original = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    original["darkraw.precision"] = "int8"
    original["darkraw.quantisation"] = json.dumps(settings)
    del model.metadata_props[:]
    for key, value in original.items():
        model.metadata_props.add(key=key, value=value)
    partial = out.with_name(out.name + ".partial")
    onnx.save(model, str(partial))
    partial.replace(out)
    load_onnx_denoiser(out, device="cpu", threads=1)  # darkraw accepts it
    settings["prepare_s"] = round(prepare_s, 1)
    settings["quantise_s"] = round(quantise_s, 1)
    settings["bytes"] = out.stat().st_size
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="the fp32 ONNX export")
    parser.add_argument("--out", required=True, help="where to write the int8 ONNX file")
    parser.add_argument(
        "--calibration-count", type=int, default=48, help="calibration crops (default 48)"
    )
    parser.add_argument(
        "--side", type=int, default=256, help="packed side of a calibration crop (default 256)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    parser.add_argument("--percentile", type=float, default=99.999)
    parser.add_argument(
        "--reduce-range",
        action="store_true",
        help="7-bit weights (for AVX2 CPUs without VNNI, whose u8*s8 sums can saturate)",
    )
    parser.add_argument("--activation-type", choices=("uint8", "int8"), default="uint8")
    parser.add_argument("--per-tensor", action="store_true", help="per-tensor weights")
    parser.add_argument(
        "--symmetric-activations", action="store_true", help="activation ranges symmetric at 0"
    )
    parser.add_argument(
        "--exclude",
        default="",
        help="nodes kept in fp32, comma-separated: node names or patterns ('/decoder.2/*'), "
        "'first' or 'last' convolution",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.side % 8:
        parser.error("--side must be a multiple of 8")
    settings = quantise(args)
    print(json.dumps(settings))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
