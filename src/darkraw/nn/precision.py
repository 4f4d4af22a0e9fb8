"""The arithmetic a network runs in: fp32, or bf16 where the hardware makes it faster.

Training and inference both choose it here, so inference never imports training.
"""

from __future__ import annotations

import contextlib
import enum
import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Precision(enum.Enum):
    """Arithmetic of the forward and backward passes."""

    #: bf16 autocast where the hardware has it (CPUs with AVX-512 BF16 or AMX, recent GPUs).
    AUTO = "auto"
    BF16 = "bf16"
    FP32 = "fp32"
    #: The bundled raw denoiser's quantised version, in ONNX Runtime or OpenVINO (torch
    #: refuses it).
    INT8 = "int8"


def fast_cpu_bf16(cpuinfo: str) -> bool:
    """Whether a CPU, described by ``/proc/cpuinfo``'s text, runs bf16 faster than fp32.

    Measured on the project's 2-core machines (docs/inference.md): a Zen 5 (AVX-512 BF16, no
    AMX) ran the network 1.9x faster in bf16; an Intel Xeon with AVX-512 BF16 but no AMX ran it
    1.6x slower (13.0 s against 8.3 s a frame) and trained 1.6x slower; a Xeon with AMX ran it
    3.3x faster (2.07 s against 6.82 s) and trained 1.6x faster. Intel's fast bf16 is AMX.
    """
    flags: set[str] = set()
    vendor = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "vendor_id" and not vendor:
            vendor = value.strip()
    if "amx_bf16" in flags:
        return True
    return vendor == "AuthenticAMD" and "avx512_bf16" in flags


@functools.cache
def cpuinfo() -> str:
    """This machine's ``/proc/cpuinfo``, read once (the CPU does not change while we run);
    empty where there is none."""
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text()
    return ""


@functools.cache
def _cpu_bf16_fast() -> bool:
    """``fast_cpu_bf16`` of this machine, read once: the CPU does not change while we run."""
    import torch

    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return False
    return fast_cpu_bf16(cpuinfo())


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here (native and faster than fp32, not merely emulated)."""
    if device.type == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return _cpu_bf16_fast()


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` for plain fp32.

    Raises:
        ValueError: ``int8``, which only the raw denoiser's int8 export has (ONNX Runtime or
            OpenVINO runs it).
    """
    if precision is Precision.INT8:
        raise ValueError(
            "precision int8 runs only the bundled raw denoiser's int8 version, without torch; "
            "use auto, bf16 or fp32 here"
        )
    if precision is Precision.FP32:
        return None
    if precision is Precision.BF16 or bf16_supported(device):
        import torch

        return torch.bfloat16
    return None
