"""How long ``darkraw enhance`` takes on a full 12-megapixel frame, by model, in one run.

A dark 2848x4256 Bayer frame (a Sony a7S II's size, SID's camera) is made from a smooth
synthetic scene with Poisson-Gaussian noise at x100 and written as a DNG. Each model then
enhances it through the whole command line (``python -m darkraw enhance ... --ratio 100``), in a
fresh process each time, so that the figure includes starting Python, importing torch, reading
the file, the network, rendering and writing the PNG. The models run in turn, ``--runs`` rounds
(so that the machine's drift over minutes weighs on each alike); the median of each model's runs
is reported, their ratio, each round's ratio and the median of those, each run's CPU time (user
and system, from ``os.wait4``: the same command taking more CPU time in one run than another is
the machine running slower, these virtual machines' hours differ by 10-45 %), each model's peak
RSS (the largest of its runs) and the CPU (``lscpu``'s model name).

darkraw's modules are compiled to bytecode first (:func:`compile_package`), as ``pip install``
leaves them, so that no run compiles them: from a source checkout run with
``PYTHONDONTWRITEBYTECODE`` set (as these machines have it), every command compiled them again,
0.04-0.05 s of each.

Usage:
    python benchmarks/enhance_speed.py [--models default,sid] [--runs 3] [--size 2848x4256]
        [--out benchmarks/results/enhance_speed.json]
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from darkraw.raw.dng import write_dng
from darkraw.raw.metadata import RawMetadata

HEIGHT, WIDTH = 2848, 4256


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def compile_package() -> str:
    """Compile the darkraw the commands will import to bytecode (``__pycache__`` beside its
    sources, where ``pip install`` puts it; a checkout's are ignored by git), and say where.

    Raises:
        RuntimeError: darkraw is not importable, or a module failed to compile.
    """
    spec = importlib.util.find_spec("darkraw")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("darkraw is not importable")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not compileall.compile_dir(folder, quiet=1):
        raise RuntimeError(f"compiling {folder} failed")
    return str(folder)


def dark_frame(path: Path, height: int = HEIGHT, width: int = WIDTH) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = 0.3 + 0.25 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
    electrons = scene * 15871 / 100.0
    dark = rng.poisson(electrons).astype(np.float32) + rng.normal(0, 2.0, scene.shape)
    mosaic = np.clip(np.rint(dark + 512), 0, 16383).astype(np.uint16)
    meta = RawMetadata.for_bayer(
        "RGGB", height, width, black_level=512, white_level=16383, wb_gains=(2.0, 1.0, 1.6)
    )
    return write_dng(path, mosaic, meta)


def _size(text: str) -> tuple[int, int]:
    """``HxW`` as two even positive sizes (a Bayer frame of whole 2x2 tiles)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}") from None
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise argparse.ArgumentTypeError(f"expected even sizes of at least 2, got {text!r}")
    return height, width


def timed_command(args: list[str], log: Path) -> tuple[float, float, float]:
    """``python -m darkraw ARGS`` as a user runs it (its own exit included): wall seconds, CPU
    seconds (user + system) and peak RSS in MiB of that process alone (``wait4``), its output
    in ``log``.

    Raises:
        RuntimeError: the command failed (its output in the message).
    """
    start = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "darkraw", *args], stdout=sink, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"darkraw {' '.join(args)} failed:\n{log.read_text()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,sid")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/enhance_speed.json")
    parser.add_argument(
        "--size",
        type=_size,
        default=(HEIGHT, WIDTH),
        metavar="HxW",
        help=f"the frame's height and width in pixels (default {HEIGHT}x{WIDTH}; 6336x9504 is a "
        "61-Mpixel frame)",
    )
    args = parser.parse_args()
    height, width = args.size
    results: dict[str, object] = {"cpu": cpu_name(), "frame": f"{width}x{height}", "models": {}}
    results["bytecode"] = f"compiled beforehand: {compile_package()}"
    names = args.models.split(",")
    times: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        source = dark_frame(Path(tmp) / "dark.dng", height, width)
        # Interleaved (one run of each model in turn), so that the machine's drift over minutes
        # weighs on every model alike and each round gives a ratio of its own.
        for run in range(args.runs):
            for model in names:
                out = Path(tmp) / f"{model}_{run}.png"
                command = ["enhance", str(source), "-o", str(out), "--model", model, "--ratio"]
                log = Path(tmp) / "command.log"
                elapsed, cpu_s, peak_mib = timed_command([*command, "100"], log)
                print(log.read_text().strip(), flush=True)
                times[model].append(elapsed)
                cpu[model].append(round(cpu_s, 2))
                peaks[model].append(peak_mib)
    for model in names:
        entry = {
            "median_s": round(statistics.median(times[model]), 2),
            "runs_s": times[model],
            "cpu_s": cpu[model],
            "peak_rss_mib": round(max(peaks[model])),
        }
        results["models"][model] = entry  # type: ignore[index]
        print(model, json.dumps(entry), flush=True)
    # Every child is a timed command: the largest is the largest of their own peaks.
    results["peak_rss_mib_any_child"] = round(max(max(v) for v in peaks.values()))
    models = results["models"]
    assert isinstance(models, dict)
    if "default" in models and "sid" in models:
        results["speedup"] = round(models["sid"]["median_s"] / models["default"]["median_s"], 2)
        rounds = [s / d for s, d in zip(times["sid"], times["default"], strict=True)]
        results["speedup_per_round"] = [round(r, 2) for r in rounds]
        results["speedup_median_of_rounds"] = round(statistics.median(rounds), 2)
        print(
            f"default is {results['speedup']}x faster than sid on {results['cpu']} "
            f"(median of the rounds' ratios {results['speedup_median_of_rounds']}x)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
