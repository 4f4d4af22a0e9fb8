"""Train or check the raw denoiser with one part of its network changed, for experiments on the
deep-shadow defect (``docs/model-card.md``, known limits); the change is not in darkraw itself.

Variants (each keeps the parameters' names and shapes, so model files load unchanged):

- ``reflect``: every 3x3 convolution pads by reflection instead of with zeros;
- ``interp``: each 2x2 stride-2 transposed convolution becomes a bilinear upsampling and a 1x1
  convolution whose weights are the mean of its 2x2 kernel (position-invariant, no grid).

Usage:
    python scripts/denoiser_variant.py train interp CONFIG.yaml [--resume]
    python scripts/denoiser_variant.py flat interp MODEL [MODEL ...]

``train`` runs ``darkraw train CONFIG.yaml`` with the variant; ``flat`` prints the flat-frame
check of ``benchmarks/checkpoint_compare.py`` for each model file or checkpoint, run with it.
Results of the 2026-12-06 runs: ``benchmarks/results/reflect_padding_flat.json`` and
``interp_upsampling_flat.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import darkraw.nn.denoiser as denoiser

ROOT = Path(__file__).resolve().parents[1]


class InterpUp(nn.ConvTranspose2d):
    """A transposed convolution's parameters, used as a bilinear upsampling and a 1x1
    convolution by the mean of each 2x2 kernel."""

    def forward(self, x: torch.Tensor, output_size: Any = None) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        weight = self.weight.mean(dim=(2, 3)).t()[:, :, None, None].to(up.dtype)
        bias = None if self.bias is None else self.bias.to(up.dtype)
        return F.conv2d(up, weight, bias)


def apply_variant(model: nn.Module, variant: str) -> None:
    """Change ``model`` (a :class:`~darkraw.nn.denoiser.RawDenoiser`) in place."""
    if variant == "reflect":
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                module.padding_mode = "reflect"
    elif variant == "interp":
        for module in model.modules():
            if type(module) is nn.ConvTranspose2d:
                module.__class__ = InterpUp
    else:
        raise SystemExit(f"unknown variant {variant!r}: reflect or interp")


def install(variant: str) -> None:
    """Every raw denoiser made from now on in this process has the variant."""
    made = denoiser.RawDenoiser.__init__

    def init(self: denoiser.RawDenoiser, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        apply_variant(self, variant)

    denoiser.RawDenoiser.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["train", "flat"])
    parser.add_argument("variant", choices=["reflect", "interp"])
    parser.add_argument("paths", nargs="+", help="a config (train) or model files (flat)")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    install(args.variant)
    if args.action == "train":
        from darkraw.cli import main as darkraw

        command = ["train", *args.paths] + (["--resume"] if args.resume else [])
        raise SystemExit(darkraw(command))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import checkpoint_compare

    from darkraw.nn.infer import resolve_model

    for path in args.paths:
        print(path, json.dumps(checkpoint_compare.flat_check(resolve_model(path))), flush=True)


if __name__ == "__main__":
    main()
