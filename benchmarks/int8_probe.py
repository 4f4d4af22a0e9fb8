"""Would int8 inference bring the full-width network under 4 s per frame on this CPU?

The 4 s target for a full SID frame needs about 280 useful GFLOP/s (1129 GFLOP), more than this
CPU's fp32 matmul peak (about 180 GFLOP/s on 2 Zen 3 cores, `inference_speed.py`), so fp32 cannot
reach it; bf16 is emulated here (no AVX-512). The one remaining lever is int8. This probe times
one 3x3 convolution of every level of the U-Net (32 to 512 channels, at the size a 768x768
packed tile gives each level), with PyTorch's x86 int8 backend (static per-channel quantisation,
quantise and dequantise included, as a whole quantised network would pay them only at its ends)
and in fp32 channels_last (what `darkraw enhance` runs). Every level holds about the same share
of the network's arithmetic, so the mean of the per-level speed-ups, applied to the measured
tiled fp32 time, estimates an int8 network's time.

Usage:
    python benchmarks/int8_probe.py [--out benchmarks/results/int8_probe.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SPEED = ROOT / "benchmarks" / "results" / "inference_speed.json"

#: (channels, side) of each U-Net level for a 768x768 packed tile.
LEVELS = [(32, 768), (64, 384), (128, 192), (256, 96), (512, 48)]


class _Conv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.dequant(self.act(self.conv(self.quant(x)))))


def best_time(fn: Any, x: torch.Tensor, repeats: int = 5) -> float:
    with torch.no_grad():
        fn(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return min(times)


def level(channels: int, side: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.rand(1, channels, side, side).contiguous(memory_format=torch.channels_last)
    fp32 = _Conv(channels).eval()
    # Module.to takes memory_format at runtime; torch's overloads leave it out.
    plain = nn.Sequential(fp32.conv, fp32.act).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # torch.ao.quantization's eager-mode functions are unannotated.
    fp32.qconfig = torch.ao.quantization.get_default_qconfig("x86")  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        # Eager-mode quantisation is deprecated in favour of torchao, which is not installed
        # here; for a timing probe the eager kernels are the same ones.
        warnings.simplefilter("ignore")
        prepared = torch.ao.quantization.prepare(fp32)  # type: ignore[no-untyped-call]
        with torch.no_grad():
            prepared(x)
        int8 = torch.ao.quantization.convert(prepared)  # type: ignore[no-untyped-call]
        t_fp32, t_int8 = best_time(plain, x), best_time(int8, x)
    gflop = 2 * channels * channels * 9 * side * side / 1e9
    return {
        "channels": channels,
        "side": side,
        "fp32_s": t_fp32,
        "int8_s": t_int8,
        "fp32_gflops": gflop / t_fp32,
        "int8_gops": gflop / t_int8,
        "speedup": t_fp32 / t_int8,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/int8_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.backends.quantized.engine = "x86"
    rows = [level(c, s) for c, s in LEVELS]
    for row in rows:
        print(
            f"{row['channels']:4d} ch at {row['side']:4d}: fp32 {row['fp32_gflops']:6.1f} GFLOP/s,"
            f" int8 {row['int8_gops']:6.1f} GOP/s, speed-up x{row['speedup']:.2f}"
        )
    speedup = statistics.mean(r["speedup"] for r in rows)
    result: dict[str, Any] = {"levels": rows, "mean_speedup": speedup}
    if SPEED.exists():
        tiled = json.loads(SPEED.read_text())["configurations"].get("tiled", {})
        if "median_s" in tiled:
            result["tiled_fp32_median_s"] = tiled["median_s"]
            result["projected_int8_s"] = tiled["median_s"] / speedup
    print(f"mean speed-up x{speedup:.2f}", end="")
    if "projected_int8_s" in result:
        print(
            f"; tiled fp32 {result['tiled_fp32_median_s']:.1f} s -> "
            f"int8 about {result['projected_int8_s']:.1f} s per frame"
        )
    else:
        print()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
