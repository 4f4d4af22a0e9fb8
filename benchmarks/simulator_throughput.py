"""Is the on-the-fly simulator fast enough to feed training, and does its memory stay flat?

Measures, on the development photos (../shared/data/clean):
1. the time to make one training pair (packed crop, calibrated SonyA7S2 noise and the seed's
   reverse pipeline), in the training process;
2. the data loader's throughput in pairs/s with 0 and 2 workers;
3. one training step of the full-width SID U-Net on the same crop (bf16 autocast +
   channels_last, forward + backward + Adam), and the steps/s of training fed by the live
   loader with 0, 1 and 2 workers against training on one fixed batch (no data cost at all);
4. resident memory while iterating the dataset over every photo once (one process), against
   what loading every photo as float32 up front, as SID's reference code does, would take.

Usage: python benchmarks/simulator_throughput.py [--patch 512] [--quick]
Writes benchmarks/results/simulator_throughput_<patch>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from darkraw.nn.model import ModelConfig, build_model, to_channels_last
from darkraw.nn.precision import Precision, autocast_dtype
from darkraw.synth.simulate import NoiseModel, SimulationConfig
from darkraw.synth.sources import collect_sources
from darkraw.training.dataset import PairConfig, SyntheticPairs

ROOT = Path(__file__).resolve().parents[1]
CLEAN = ROOT / ".." / "shared" / "data" / "clean"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pair_times(files: list[Path], patch: int, model: str, n: int) -> list[float]:
    ds = SyntheticPairs(
        files, PairConfig(patch=patch, simulation=SimulationConfig(model=NoiseModel(model)))
    )
    times = []
    for i in range(n):
        t = time.perf_counter()
        ds[i * 7 % len(files)]
        times.append(time.perf_counter() - t)
    return times


def loader_rate(files: list[Path], patch: int, workers: int, n: int) -> float:
    ds = SyntheticPairs(files, PairConfig(patch=patch), length=n + 4 * max(workers, 1))
    loader = DataLoader(
        ds, batch_size=1, num_workers=workers, prefetch_factor=4 if workers else None
    )
    it = iter(loader)
    for _ in range(max(workers, 1)):
        next(it)  # start-up of the worker processes is not throughput
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - t)


#: What `darkraw train` does with precision auto here: bf16 + channels_last where the CPU has
#: native bf16 (AVX-512 BF16 / AMX), otherwise fp32 in NCHW (faster to train than channels_last
#: in fp32 on AVX2 CPUs).
AMP = autocast_dtype(Precision.AUTO, torch.device("cpu"))


def make_step(patch: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    if AMP is not None:
        to_channels_last(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(inputs: torch.Tensor, target: torch.Tensor) -> None:
        if AMP is not None:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=AMP or torch.bfloat16, enabled=AMP is not None):
            out = model(inputs)
        loss = torch.nn.functional.l1_loss(out.float(), target)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        opt.step()

    return step


def step_times(patch: int, n: int) -> list[float]:
    step = make_step(patch)
    x = torch.rand(1, 4, patch, patch)
    y = torch.rand(1, 3, 2 * patch, 2 * patch)
    for _ in range(2):
        step(x, y)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t)
    return times


def fed_rate(files: list[Path], patch: int, workers: int, n: int) -> float:
    """Training steps/s with pairs from the live loader (sharing the 2 cores with training)."""
    step = make_step(patch)
    ds = SyntheticPairs(files, PairConfig(patch=patch), length=n + 8)
    loader = DataLoader(
        ds, batch_size=1, num_workers=workers, prefetch_factor=4 if workers else None
    )
    it = iter(loader)
    for _ in range(2):
        item = next(it)
        step(item["input"], item["target"])
    t = time.perf_counter()
    for _ in range(n):
        item = next(it)
        step(item["input"], item["target"])
    return n / (time.perf_counter() - t)


def rss_walk(files: list[Path], patch: int) -> dict[str, float]:
    ds = SyntheticPairs(files, PairConfig(patch=patch), length=len(files))
    samples = []
    for i in range(len(ds)):
        ds[i]
        samples.append(rss_mib())
    first_tenth = samples[: max(1, len(samples) // 10)]
    decoded = 0
    for path in files:
        with Image.open(path) as im:
            decoded += im.width * im.height * 3 * 4
    return {
        "items": len(samples),
        "rss_after_first_10pct_mib": max(first_tenth),
        "rss_peak_mib": max(samples),
        "rss_end_mib": samples[-1],
        "load_everything_float32_mib": decoded / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=512, help="packed crop side (SID: 512)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    if not CLEAN.is_dir():
        raise SystemExit(f"development photos not found at {CLEAN}")
    torch.set_num_threads(2)
    files = collect_sources([CLEAN])
    n = 5 if args.quick else 20
    precision = "bf16 + channels_last" if AMP is not None else "fp32 NCHW (no native bf16)"
    result: dict[str, object] = {"patch": args.patch, "photos": len(files), "precision": precision}
    print(f"{len(files)} photos, packed crop {args.patch}x{args.patch}")
    for model in ("calibrated", "seed"):
        times = pair_times(files, args.patch, model, n)
        result[f"pair_s_{model}"] = statistics.median(times)
        print(f"one pair ({model} noise): median {statistics.median(times):.3f} s")
    raws = sorted((CLEAN.parent / "raw").glob("*.DNG"))
    if raws:
        times = pair_times(raws, args.patch, "calibrated", n)
        result["pair_s_raw_dng"] = statistics.median(times)
        print(
            f"one pair from a 12 MP raw DNG (read + render the clean crop): "
            f"median {statistics.median(times):.3f} s"
        )
    steps = step_times(args.patch, max(3, n // 4))
    result["train_step_s"] = statistics.median(steps)
    print(f"train step, full-width SID U-Net, {precision}: {statistics.median(steps):.3f} s")
    for workers in (0, 2):
        rate = loader_rate(files, args.patch, workers, 2 * n)
        result[f"loader_pairs_per_s_{workers}w"] = rate
        print(f"loader, {workers} workers: {rate:.2f} pairs/s")
    result["fixed_batch_steps_per_s"] = 1 / statistics.median(steps)
    for workers in (0, 1, 2):
        rate = fed_rate(files, args.patch, workers, max(4, n // 2))
        result[f"train_steps_per_s_{workers}w"] = rate
        print(
            f"training fed by the loader, {workers} workers: {rate:.2f} steps/s "
            f"(fixed batch: {1 / statistics.median(steps):.2f})"
        )
    # In a fresh process, so that the figure is the dataset's alone (no model, no torch kernels).
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        walk = pool.apply(rss_walk, (files, args.patch))
    result.update(walk)
    print(
        f"RSS over all {walk['items']} photos: {walk['rss_after_first_10pct_mib']:.0f} MiB after "
        f"the first 10 %, peak {walk['rss_peak_mib']:.0f} MiB, end {walk['rss_end_mib']:.0f} MiB; "
        f"loading every photo as float32 would take {walk['load_everything_float32_mib']:.0f} MiB"
    )
    out = ROOT / "benchmarks" / "results" / f"simulator_throughput_{args.patch}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
