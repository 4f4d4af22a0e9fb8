"""What the default raw denoiser costs on an x86 CPU with AVX2 only (no bf16, no VNNI), measured
on a newer CPU by holding OpenVINO's oneDNN to AVX2 (issue 24's Zen 3 class).

``ONEDNN_MAX_CPU_ISA=AVX2`` makes OpenVINO's oneDNN pick its AVX2 kernels (``jit_avx2_I8``,
``brgconv_avx2_f32``), and each child process is told the CPU has neither native bf16 nor an
8-bit dot product (darkraw's ``cpu_bf16_fast`` and ``cpu_int8_fast`` answer ``False``), so
``--precision auto`` chooses what it would on such a CPU. numpy, LibRaw and zlib-ng keep the
CPU's own instructions: the figures are a lower bound for a real AVX2-only CPU of this clock.

In one run:

- the bundled int8 version in OpenVINO on one window of a 12-Mpixel frame (776x1128 packed),
  held to AVX2 and not: the largest difference between the two outputs (0 when oneDNN's AVX2
  int8 products do not saturate), and each one's time (median of ``--repeats``), beside the
  fp32 export's in OpenVINO held to AVX2;
- the whole command (``python -m darkraw enhance`` on a 12-Mpixel DNG, as ``enhance_speed``
  makes it), in alternating pairs: ``auto`` as it chooses on such a CPU (the int8 version in
  OpenVINO) against fp32 in OpenVINO (what ``auto`` chose before, and still chooses where the
  int8 file is missing): wall time and peak RSS of each process, medians and the pairwise
  median difference; darkraw's modules compiled to bytecode beforehand, as ``pip install``
  leaves them.

Usage:
    python benchmarks/avx2_paths.py [--pairs 5] [--repeats 5]
        [--out benchmarks/results/avx2_paths.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from enhance_speed import compile_package, cpu_name, dark_frame  # noqa: E402

from darkraw.nn.modelfiles import bundled_int8_path, bundled_onnx_path  # noqa: E402

#: The child that runs the command as darkraw would on an AVX2-only CPU: ``auto`` (the int8
#: version in OpenVINO) or, with ``HIDE_INT8=1``, as if the int8 file were missing (fp32).
CHILD = """
import os, sys
from pathlib import Path
import darkraw.__main__ as entry
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", entry.OPENBLAS_IDLE_WAIT)
import darkraw.nn.enhance as enhance
enhance.cpu_bf16_fast = lambda: False
enhance.cpu_int8_fast = lambda: False
if os.environ.get("HIDE_INT8"):
    enhance.bundled_int8_path = lambda name: Path("/nonexistent/denoiser_model_int8.onnx")
from darkraw.cli import run
sys.argv = ["darkraw"] + sys.argv[1:]
run()
"""

#: The child that times the frame's first window (the network's input as darkraw makes it, at
#: ratio 30, what ``auto`` chooses for the frame) in OpenVINO and saves its output.
WINDOW = """
import sys, time, numpy as np, openvino as ov
from darkraw.nn.inputs import denoiser_input
from darkraw.nn.rawdenoise import frame_noise, prepare_frame
from darkraw.raw.rawio import read_raw
path, frame, out, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
raw = read_raw(frame)
planes = prepare_frame(raw.mosaic, raw.meta).planes
noise = frame_noise(planes, raw.meta).amplified(30.0)
x = denoiser_input(planes, noise, with_map=True, ratio=30.0)[None, :, :776, :1128].copy()
core = ov.Core()
model = core.read_model(path)
model.reshape(list(x.shape))
settings = {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY"}
request = core.compile_model(model, "CPU", settings).create_infer_request()
y = np.array(request.infer({0: x})[0])
times = []
for _ in range(repeats):
    start = time.perf_counter()
    request.infer({0: x}, share_inputs=True)
    times.append(time.perf_counter() - start)
np.save(out, y)
print(sorted(times)[len(times) // 2])
"""


def avx2_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", **extra}


def window(path: Path, frame: Path, out: Path, repeats: int, env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", WINDOW, str(path), str(frame), str(out), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def command(frame: Path, out: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and the file's line of one command in a fresh process."""
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, "enhance", str(frame), "-o", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stdout = child.stdout.read() if child.stdout else ""
    stderr = child.stderr.read() if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"darkraw enhance failed: {stderr.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024, stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/avx2_paths.json")
    args = parser.parse_args()
    result: dict[str, object] = {"cpu": cpu_name(), "load_average_start": os.getloadavg()}
    result["bytecode"] = f"compiled beforehand: {compile_package()}"
    with tempfile.TemporaryDirectory(prefix="darkraw-avx2-") as tmp:
        folder = Path(tmp)
        frame = dark_frame(folder / "dark.dng")
        int8, fp32 = bundled_int8_path("default"), bundled_onnx_path("default")
        held = window(int8, frame, folder / "held.npy", args.repeats, avx2_env())
        native = window(int8, frame, folder / "native.npy", args.repeats, dict(os.environ))
        held_fp32 = window(fp32, frame, folder / "fp32.npy", args.repeats, avx2_env())
        difference = np.abs(np.load(folder / "held.npy") - np.load(folder / "native.npy")).max()
        result["window_776x1128"] = {
            "int8_avx2_s": round(held, 4),
            "int8_native_s": round(native, 4),
            "fp32_avx2_s": round(held_fp32, 4),
            "int8_avx2_vs_native_max_abs": float(difference),
        }
        print(json.dumps(result["window_776x1128"]), flush=True)
        runs: dict[str, list[tuple[float, float, str]]] = {"int8": [], "fp32": []}
        for _ in range(args.pairs):
            runs["int8"].append(command(frame, folder / "a.png", avx2_env()))
            runs["fp32"].append(command(frame, folder / "b.png", avx2_env(HIDE_INT8="1")))
            print(json.dumps({k: v[-1][:2] for k, v in runs.items()}), flush=True)
    walls = {k: [w for w, _, _ in v] for k, v in runs.items()}
    result["command"] = {
        name: {
            "median_s": round(statistics.median(walls[name]), 3),
            "runs_s": [round(w, 3) for w in walls[name]],
            "peak_rss_mib": [round(r) for _, r, _ in runs[name]],
            "line": runs[name][-1][2],
        }
        for name in runs
    }
    pairwise = [a - b for a, b in zip(walls["int8"], walls["fp32"], strict=True)]
    result["command_int8_minus_fp32_pairwise_median_s"] = round(statistics.median(pairwise), 3)
    result["self_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, figures in result["command"].items():  # type: ignore[union-attr]
        print(f"{name}: {figures['median_s']} s median ({figures['line']})")
    print(f"int8 - fp32, pairwise median: {result['command_int8_minus_fp32_pairwise_median_s']} s")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
