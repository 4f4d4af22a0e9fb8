"""How fast and how lean is full-frame inference with the SID U-Net on this CPU?

For one full Sony frame (packed 1424x2128 -> 2848x4256 sRGB output), random-init weights (the
arithmetic does not depend on the values), each configuration runs in a fresh child process so
its peak RSS (``resource.getrusage``) is its own:

- ``naive``: the plain module (``model(x)``) on the whole frame in one pass, fp32, NCHW memory;
- ``whole_cl``: the plain module, whole frame, fp32, channels_last;
- ``tiled``: :func:`darkraw.nn.infer.run_network` with its defaults, the default of ``darkraw
  enhance``: tiles of 1024 with the exact margin, channels_last, ``precision=auto`` (bf16 where
  the CPU has it natively, else fp32), oneDNN's fused convolution + LeakyReLU
  (:mod:`darkraw.nn.fused`) where available;
- ``tiled_fp32``: the same in fp32;
- ``tiled_<T>_<M>``, ``whole``: other tiles ``T`` and margins ``M``, or one pass;
- ``autocast_bf16``, ``autocast_fp32``: tiled, the plain module under bf16 autocast (the
  fused pass turned off), or the plain module in fp32: what the fusion gains;
- ``w16_tiled``, ``w16_tiled_<T>_<M>``, ``w16_whole_cl``, ``w16_naive``: the width-16 network
  (``--model small``), tiled or in one pass;
- ``*_t2``, ``*_denormal``: the same with ``torch.set_num_threads(2)`` or
  ``torch.set_flush_denormal(True)``.

FLOPs are counted exactly on the plain module: a forward hook on every convolution adds
``2 * MACs`` of the call (``out_elements * in_channels * kh * kw`` for a convolution,
``in_elements * out_channels * kh * kw`` for a 2x2 stride-2 transposed one), so tiled runs count
the work their margins repeat. "Useful" GFLOP/s divide the whole frame's FLOPs by the time;
"executed" GFLOP/s the FLOPs actually run. The CPU's peaks are measured with 4096^3
``torch.mm`` in fp32 and in bf16 (what a well-tuned kernel reaches), beside the nominal ``cores
x GHz x FLOP/cycle``.

With ``--tolerance`` it measures instead how far tiled output is from whole-frame output
(random-init networks of width 4 and 32, and a trained one given with ``--trained``).

With ``--runtime`` it measures the default raw denoiser's paths (issue 24), each in a fresh child
process, in one run: ``naive`` (the seed's SID network, whole frame, fp32 NCHW, the baseline),
``denoiser_torch`` (the previous default: the bundled denoiser in torch, tiles of 512,
``precision=auto``), ``denoiser_onnx`` (its fp32 ONNX export in ONNX Runtime, the default
tiles), ``denoiser_int8`` (its quantisation-aware int8 export, the default on CPUs with VNNI
where OpenVINO is not installed; its "GFLOP/s" count the same operations, most of them done in
int8), ``denoiser_bf16`` (the fp32 export in OpenVINO with bf16 inside, the default where
OpenVINO is installed on a CPU with native bf16; skipped without OpenVINO), their executed
GFLOP/s against the measured fp32 matmul peak (and bf16's, where the CPU has it) and their peak
RSS; then the whole command (``python -m darkraw enhance``, as a user runs it, its exit
included, darkraw's modules compiled to bytecode beforehand as ``pip install`` leaves them;
CPU time and peak RSS of that process alone, from ``wait4``) on a 12-megapixel DNG, by
default and with ``--precision int8`` and ``--precision fp32`` (median of ``--runs`` fresh
processes each, interleaved) and a batch of 8 such files in one command (time per file, and how
busy the cores were: user + system CPU time over wall time x cores). Results go to
``benchmarks/results/runtime_speed.json``.

Usage:
    python benchmarks/inference_speed.py [--runs 3] [--only NAME ...] [--note TEXT]
    python benchmarks/inference_speed.py --tolerance [--trained CHECKPOINT]
    python benchmarks/inference_speed.py --runtime [--runs 3]
Results merge into benchmarks/results/inference_speed.json by configuration name, so the
configurations can be measured in several sittings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import darkraw.nn.infer
from darkraw.nn.fused import fused_available
from darkraw.nn.infer import InferenceOptions, run_network
from darkraw.nn.model import PAD_MULTIPLE, ModelConfig, build_model
from darkraw.nn.precision import Precision, autocast_dtype, bf16_supported
from darkraw.nn.tiling import tile_grid, tile_spans

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "inference_speed.json"

#: Packed size of a Sony a7S II frame (SID's camera): 2848x4256 pixels out.
PACKED = (1424, 2128)

_DEFAULT = InferenceOptions()
FP32 = Precision.FP32


@dataclass(frozen=True)
class Setup:
    """One configuration of the benchmark."""

    width: int = 32
    tile: int = _DEFAULT.tile
    overlap: int = _DEFAULT.overlap
    channels_last: bool = True
    precision: str = "auto"
    threads: int = 0
    flush_denormal: bool = False
    #: darkraw's fused pass where available; False runs the plain module (under autocast).
    fused: bool = True
    #: ``model(x)`` on the whole frame, not :func:`run_network` (no tiling, clamping, copying).
    module: bool = False


SETUPS: dict[str, Setup] = {
    "naive": Setup(tile=0, channels_last=False, precision="fp32", fused=False, module=True),
    "whole_cl": Setup(tile=0, precision="fp32", fused=False, module=True),
    "tiled": Setup(),
    "tiled_fp32": Setup(precision="fp32"),
    "whole": Setup(tile=0),
    "autocast_bf16": Setup(precision="bf16", fused=False),
    "autocast_fp32": Setup(precision="fp32", fused=False),
    "tiled_t2": Setup(threads=2),
    "tiled_denormal": Setup(flush_denormal=True),
    "tiled_512_32": Setup(tile=512, overlap=32),
    "tiled_768_64": Setup(tile=768, overlap=64),
    "tiled_768_112": Setup(tile=768, overlap=112),
    "tiled_1024_64": Setup(tile=1024, overlap=64),
    "tiled_1536_112": Setup(tile=1536, overlap=112),
    "w16_tiled": Setup(width=16),
    "w16_naive": Setup(
        width=16, tile=0, channels_last=False, precision="fp32", fused=False, module=True
    ),
    "w16_whole_cl": Setup(width=16, tile=0, precision="fp32", fused=False, module=True),
    "w16_tiled_768_112": Setup(width=16, tile=768, overlap=112),
    "w16_tiled_1536_112": Setup(width=16, tile=1536, overlap=112),
}

#: Configurations run when ``--only`` is not given.
MAIN = (
    "naive", "whole_cl", "tiled", "tiled_fp32", "whole", "autocast_bf16", "autocast_fp32",
    "tiled_768_112", "tiled_1536_112", "w16_tiled",
)  # fmt: skip


def count_flops(model: nn.Module) -> tuple[list[int], list[torch.utils.hooks.RemovableHandle]]:
    """Hooks that add each convolution's FLOPs (2 per multiply-add) to the returned counter."""
    total = [0]

    def conv_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        macs = out.numel() * (module.in_channels // module.groups) * kh * kw
        total[0] += 2 * macs

    def up_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        assert isinstance(module, nn.ConvTranspose2d)
        kh, kw = module.kernel_size
        macs = inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
        total[0] += 2 * macs

    handles = []
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(up_hook))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
    return total, handles


def frame(seed: int = 0) -> np.ndarray:
    """A packed frame in [0, 1]: amplified dark raw is mostly small values with some noise."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.gamma(2.0, 0.05, size=(4, *PACKED)), 0, 1).astype(np.float32)


def child(name: str, runs: int) -> dict[str, Any]:
    """Run one configuration in this (fresh) process; returns its measurements."""
    setup = SETUPS[name]
    if setup.flush_denormal:
        torch.set_flush_denormal(True)
    if not setup.fused:
        # The plain module, under autocast when bf16 is asked for. run_network looks
        # fused_available up in darkraw.nn.infer's namespace (which imports it without
        # re-exporting it), so it is replaced there.
        vars(darkraw.nn.infer)["fused_available"] = lambda *args: False
    if setup.precision == "bf16" and not bf16_supported(torch.device("cpu")):
        return {
            "skipped": "this CPU has no native bf16 (no AVX-512 BF16 / AMX): autocast would "
            "emulate it, several times slower than fp32"
        }
    model = build_model(ModelConfig(width=setup.width), torch.Generator().manual_seed(0))
    options = InferenceOptions(
        tile=setup.tile,
        overlap=setup.overlap,
        precision=Precision(setup.precision),
        channels_last=setup.channels_last,
        threads=setup.threads,
        device="cpu",
        ensemble=1,
    )
    planes = frame()
    amp = autocast_dtype(options.precision, torch.device("cpu"))
    dtype = amp or torch.float32
    # Without setup.fused the replacement above says False; this reads the real function.
    fused = not setup.module and setup.fused and fused_available(torch.device("cpu"), dtype)
    compute = ("bf16" if amp else "fp32") + (" fused" if fused else " module")

    memory = torch.channels_last if setup.channels_last else torch.contiguous_format
    if setup.module:
        model.to(memory_format=memory)  # type: ignore[call-overload]

    def once() -> None:
        if not setup.module:
            run_network(model, planes, options)
            return
        x = torch.from_numpy(planes)[None].contiguous(memory_format=memory)
        with torch.inference_mode():
            model(x)

    start = time.perf_counter()
    once()  # warm-up: oneDNN builds its kernels on first use
    warmup_s = time.perf_counter() - start
    tile = 0 if setup.module else setup.tile
    executed = executed_gflop(setup.width, tile, setup.overlap)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return {
        "setup": setup.__dict__,
        "threads_used": setup.threads or torch.get_num_threads(),
        "warmup_s": warmup_s,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "executed_gflop": executed,
        "compute": compute,
    }


def window_gflop(width: int, h: int, w: int) -> float:
    """FLOPs of one forward pass over ``h x w`` packed pixels, counted on the meta device."""
    model = build_model(ModelConfig(width=width)).to("meta")
    counter, _ = count_flops(model)
    with torch.inference_mode():
        model(torch.empty(1, 4, h, w, device="meta"))
    return counter[0] / 1e9


def whole_frame_gflop(width: int) -> float:
    """FLOPs of one whole-frame forward (at the padded size)."""
    return window_gflop(width, *PACKED)


def executed_gflop(width: int, tile: int, overlap: int) -> float:
    """FLOPs a tiled run executes: every window, margins included."""
    rows = tile_spans(PACKED[0], tile, overlap, PAD_MULTIPLE)
    cols = tile_spans(PACKED[1], tile, overlap, PAD_MULTIPLE)
    return sum(
        window_gflop(width, y1 - y0, x1 - x0) for y0, y1, _, _ in rows for x0, x1, _, _ in cols
    )


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n^3`` matrix product in ``dtype``: the practical peak of this CPU."""
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def cpu_description() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "capability": None, "model": None}
    info["capability"] = torch.backends.cpu.get_cpu_capability()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["model"] = line.split(":", 1)[1].strip()
            elif line.startswith("cpu MHz"):
                info["mhz"] = float(line.split(":", 1)[1])
    except OSError:
        pass
    info["bf16_native"] = bf16_supported(torch.device("cpu"))
    return info


def tiling_tolerance(trained: Path | None) -> dict[str, Any]:
    """Max and mean |tiled - whole frame| on 300x400 packed inputs, per model and margin.

    Tiles of 256 packed pixels cut the input into several windows whatever the margin; the
    difference depends on the margin, not on the tile size.
    """
    from darkraw.nn.infer import load_model

    models = {
        f"random_w{w}": build_model(ModelConfig(width=w), torch.Generator().manual_seed(0))
        for w in (4, 32)
    }
    if trained is not None:
        models[f"trained:{trained.name}"] = load_model(trained)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    wave = 0.3 + 0.2 * np.sin(yy / 23.0) * np.cos(xx / 31.0)
    inputs = {
        "random": rng.random((4, 300, 400), dtype=np.float32),
        "smooth": np.clip(wave + 0.05 * rng.standard_normal((4, 300, 400)), 0, 1).astype(
            np.float32
        ),
    }
    out: dict[str, Any] = {}
    for model_name, model in models.items():
        for input_name, planes in inputs.items():
            whole = run_network(model, planes, InferenceOptions(tile=0, precision=FP32, ensemble=1))
            for overlap in (32, 64, 112):
                options = InferenceOptions(tile=256, overlap=overlap, precision=FP32, ensemble=1)
                tiled = run_network(model, planes, options)
                diff = np.abs(tiled - whole)
                key = f"{model_name}/{input_name}/overlap_{overlap}"
                out[key] = {"max": float(diff.max()), "mean": float(diff.mean())}
                print(f"{key}: {out[key]}", file=sys.stderr, flush=True)
    return out


RUNTIME_RESULTS = ROOT / "benchmarks" / "results" / "runtime_speed.json"

#: The raw denoiser's paths ``--runtime`` times (besides the SID ``naive`` pass).
DENOISER_PATHS = ("denoiser_torch", "denoiser_onnx", "denoiser_int8", "denoiser_bf16")
#: ``--precision`` of each ONNX path.
_PATH_PRECISION = {"denoiser_onnx": "fp32", "denoiser_int8": "int8", "denoiser_bf16": "bf16"}


def denoiser_child(name: str, runs: int) -> dict[str, Any]:
    """Time one path of the bundled raw denoiser on a whole frame's input in this process."""
    from darkraw.nn.denoiser_config import macs_per_packed_pixel
    from darkraw.nn.enhance import DefaultDenoiser, load_network
    from darkraw.nn.inputs import denoiser_input
    from darkraw.nn.rawdenoise import DenoiseOptions, default_overlap, run_denoiser
    from darkraw.synth.noiselevel import RawNoise

    if name == "denoiser_torch":
        from darkraw.nn.infer import resolve_model

        network: Any = resolve_model("default")
        options = DenoiseOptions(tile=512)
    else:
        from darkraw.nn.runtime import openvino_available

        if name == "denoiser_bf16" and not openvino_available():
            return {"skipped": "OpenVINO is not installed (pip install 'darkraw[openvino]')"}
        network = load_network("default", device="cpu", precision=_PATH_PRECISION[name])
        # "default" is the pair of the Bayer network and its X-Trans twin: the frame is Bayer.
        network = network.bayer if isinstance(network, DefaultDenoiser) else network
        options = DenoiseOptions()
    config = network.config
    grid = config.pad_multiple
    overlap = default_overlap(network) if options.overlap is None else options.overlap
    noise = RawNoise((2e-3,) * 4, (1e-4,) * 4, "benchmark")
    planes = np.clip(frame()[:4] * 0.3, 0, 1).astype(np.float32)
    x = denoiser_input(planes, noise, with_map=config.noise_input == "map")
    spans = tile_grid(*PACKED, options.tile, overlap, grid)
    padded = sum(
        (-(-(y1 - y0) // grid) * grid) * (-(-(x1 - x0) // grid) * grid)
        for y0, y1, _, _ in spans[0]
        for x0, x1, _, _ in spans[1]
    )
    executed = 2 * macs_per_packed_pixel(config) * padded / 1e9
    start = time.perf_counter()
    run_denoiser(network, x, options)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_denoiser(network, x, options)
        times.append(time.perf_counter() - start)
    return {
        "runtime": type(network).__name__,
        "precision": getattr(network, "precision", "torch auto"),
        "providers": list(getattr(network, "providers", ())),
        "tile": options.tile,
        "overlap": overlap,
        "warmup_s": warmup,
        "times_s": times,
        "median_s": statistics.median(times),
        "executed_gflop": executed,
        "useful_gflop": 2 * macs_per_packed_pixel(config) * PACKED[0] * PACKED[1] / 1e9,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def whole_command(runs: int, work: Path) -> dict[str, Any]:
    """``darkraw enhance`` on one 12-megapixel DNG in fresh processes, and on a batch of 8."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from enhance_speed import compile_package, dark_frame, timed_command

    compile_package()  # as pip install leaves it: no command compiles darkraw's modules
    source = dark_frame(work / "frame.dng")
    log = work / "command.log"
    # The default (bf16 in OpenVINO, or int8, or fp32, as the CPU and the install decide), int8
    # and fp32, interleaved so that all see the machine in the same state.
    times: dict[str, list[float]] = {"auto": [], "int8": [], "fp32": []}
    rss: list[float] = []
    for i in range(runs):
        for precision, measured in times.items():
            out = work / f"single_{precision}_{i}.png"
            args = ["enhance", str(source), "-o", str(out), "--precision", precision]
            wall, _, peak = timed_command(args, log)
            measured.append(wall)
            rss.append(peak)
    single_rss = max(rss)
    folder = work / "batch"
    folder.mkdir()
    for i in range(8):
        os.link(source, folder / f"frame_{i}.dng")
    wall, cpu, batch_rss = timed_command(["enhance", str(folder), "-o", str(work / "out")], log)
    cores = len(os.sched_getaffinity(0))
    return {
        "single_times_s": times["auto"],
        "single_median_s": statistics.median(times["auto"]),
        "single_int8_times_s": times["int8"],
        "single_int8_median_s": statistics.median(times["int8"]),
        "single_fp32_times_s": times["fp32"],
        "single_fp32_median_s": statistics.median(times["fp32"]),
        "single_peak_rss_mib": single_rss,
        "batch_of_8_wall_s": wall,
        "batch_per_file_s": wall / 8,
        "batch_cpu_s": cpu,
        "batch_cores_busy": cpu / (wall * cores),
        "batch_peak_rss_mib": batch_rss,
    }


def runtime_benchmark(runs: int, note: str) -> None:
    """Issue 24's figures in one run; see the module's docstring."""
    import tempfile

    results: dict[str, Any] = {"cpu": cpu_description(), "note": note, "runs": runs}
    results["peak_fp32_matmul_gflops"] = matmul_gflops()
    if results["cpu"]["bf16_native"]:
        results["peak_bf16_matmul_gflops"] = matmul_gflops(torch.bfloat16)
    for name in ("naive", *DENOISER_PATHS):
        print(f"{name} ...", file=sys.stderr, flush=True)
        result = run_child(name, runs)
        if "median_s" in result:
            result["executed_gflops"] = result["executed_gflop"] / result["median_s"]
            result["share_of_fp32_peak"] = (
                result["executed_gflops"] / results["peak_fp32_matmul_gflops"]
            )
            if result.get("precision") == "bf16" and "peak_bf16_matmul_gflops" in results:
                result["share_of_bf16_peak"] = (
                    result["executed_gflops"] / results["peak_bf16_matmul_gflops"]
                )
        results[name] = result
        print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as work:
        print("whole command ...", file=sys.stderr, flush=True)
        results["command"] = whole_command(runs, Path(work))
    naive = results["naive"].get("median_s")
    if naive:
        results["command"]["speedup_vs_naive_sid_pass"] = (
            naive / results["command"]["single_median_s"]
        )
    print(json.dumps(results, indent=2))
    RUNTIME_RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RUNTIME_RESULTS}", file=sys.stderr)


def run_child(name: str, runs: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        return {"failed": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration")
    parser.add_argument("--only", nargs="+", choices=sorted(SETUPS), help="configurations")
    parser.add_argument("--note", default="", help="machine state to record with the results")
    parser.add_argument("--no-peak", action="store_true", help="skip the matmul peak")
    parser.add_argument(
        "--tolerance", action="store_true", help="measure tiled vs whole-frame output only"
    )
    parser.add_argument(
        "--trained", type=Path, help="with --tolerance: a trained model file or checkpoint"
    )
    parser.add_argument(
        "--runtime", action="store_true", help="the raw denoiser's runtimes and whole command"
    )
    parser.add_argument(
        "--child", choices=sorted([*SETUPS, *DENOISER_PATHS]), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        run = denoiser_child if args.child in DENOISER_PATHS else child
        print(json.dumps(run(args.child, args.runs)))
        return
    if args.runtime:
        runtime_benchmark(args.runs, args.note)
        return

    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.tolerance:
        results["tiling_tolerance"] = tiling_tolerance(args.trained)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        return
    configs = results.setdefault("configurations", {})
    results["frame"] = {"packed": list(PACKED), "output": [2 * PACKED[0], 2 * PACKED[1]]}
    results["cpu"] = cpu_description()
    flops = {w: whole_frame_gflop(w) for w in (32, 16)}
    megapixels = 4 * PACKED[0] * PACKED[1] / 1e6
    results["whole_frame_gflop"] = {str(w): f for w, f in flops.items()}
    results["gflop_per_output_megapixel"] = {str(w): f / megapixels for w, f in flops.items()}
    if not args.no_peak:
        cores = os.cpu_count() or 1
        ghz = results["cpu"].get("mhz", 0) / 1000
        # FMA pipes x fp32 lanes x 2: two 256-bit pipes on AVX2 (Zen 3), two 512-bit on
        # AVX-512 (Zen 5); a bf16 dot product (vdpbf16ps) does twice the fp32 work per lane.
        fp32_cycle = 64 if "AVX512" in results["cpu"]["capability"] else 32
        results["peak"] = {
            "matmul_4096_gflops": matmul_gflops(),
            "nominal_gflops": cores * ghz * fp32_cycle,
            "nominal_derivation": f"{cores} cores x {ghz:.3f} GHz x {fp32_cycle} FLOP/cycle "
            "(2 FMA pipes x fp32 lanes x 2)",
        }
        if results["cpu"]["bf16_native"]:
            results["peak"]["matmul_4096_bf16_gflops"] = matmul_gflops(torch.bfloat16)
            results["peak"]["nominal_bf16_gflops"] = 2 * cores * ghz * fp32_cycle
    for name in args.only or MAIN:
        print(f"{name} ...", file=sys.stderr, flush=True)
        result = run_child(name, args.runs)
        if "median_s" in result:
            width = result["setup"]["width"]
            result["useful_gflops"] = flops[width] / result["median_s"]
            result["executed_gflops"] = result["executed_gflop"] / result["median_s"]
            peak = results.get("peak", {})
            key = (
                "matmul_4096_bf16_gflops"
                if result["compute"].startswith("bf16")
                else "matmul_4096_gflops"
            )
            if key in peak:
                result["share_of_matmul_peak"] = result["executed_gflops"] / peak[key]
        result["note"] = args.note
        configs[name] = result
        print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)
        # Written after each configuration, so an interrupted sitting keeps what it measured.
        write_results(results)
    print(f"wrote {RESULTS}", file=sys.stderr)


def write_results(results: dict[str, Any]) -> None:
    configs = results["configurations"]
    naive = configs.get("naive", {}).get("median_s")
    for result in configs.values():
        if naive and "median_s" in result:
            result["speedup_vs_naive"] = naive / result["median_s"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
