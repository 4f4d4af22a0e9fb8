"""Make a raw denoiser with a wider first level from a trained one, to fine-tune from.

The first level runs at the packed planes' full resolution; an X-Trans network's carries nine
planes (and their noise maps) in the 16 channels a Bayer network gives four. This adds channels
to each of that level's five feature spaces (the encoder's two convolutions, the transposed
convolution from below, the decoder's two convolutions) without changing what the network
computes: the new channels' incoming weights are fresh (He-uniform from ``--seed``), every
weight that reads them is zero, and the old channels do not read them. Training then grows the
zero weights. Everything below the first level is copied unchanged. The result is a starting
point for ``darkraw train`` (``init_from``), not a finished network.

Usage:
    python scripts/widen_denoiser.py --first-width 32 -o runs/xtrans_wide_init.safetensors \\
        [--model xtrans] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import resolve_model, save_model_file


def widen(model: RawDenoiser, first_width: int, seed: int = 0) -> RawDenoiser:
    """``model`` with ``first_width`` channels in its first level (see the module's text)."""
    config = model.config
    old = config.widths[0]
    if first_width <= old:
        raise SystemExit(f"--first-width must be above the first level's {old} channels")
    wide = RawDenoiser(
        dataclasses.replace(config, first_width=first_width), torch.Generator().manual_seed(seed)
    )
    sd = model.state_dict()
    fresh = wide.state_dict()
    # Below the first level every shape is the same: those weights are the trained ones.
    new = {k: (sd[k] if sd[k].shape == v.shape else v).detach().clone() for k, v in fresh.items()}
    last = len(model.decoder) - 1
    up, dec0, dec1 = f"upsample.{last}", f"decoder.{last}.0", f"decoder.{last}.2"
    n = old

    def keep_rows(name: str) -> None:
        """The old output channels of ``name`` as they were; the new ones keep their fresh
        weights and a zero bias."""
        new[f"{name}.bias"][n:] = 0
        new[f"{name}.bias"][:n] = sd[f"{name}.bias"]

    # Encoder's first convolution: reads the input, which keeps its channels.
    new["encoder.0.0.weight"][:n] = sd["encoder.0.0.weight"]
    keep_rows("encoder.0.0")
    # Encoder's second: old channels read old ones only.
    new["encoder.0.2.weight"][:n] = 0
    new["encoder.0.2.weight"][:n, :n] = sd["encoder.0.2.weight"]
    keep_rows("encoder.0.2")
    # The level below reads the skip through the pooling: not its new channels.
    new["encoder.1.0.weight"].zero_()
    new["encoder.1.0.weight"][:, :n] = sd["encoder.1.0.weight"]
    # Transposed convolution up (weight: in, out, 2, 2): the new outputs are fresh.
    new[f"{up}.weight"][:, :n] = sd[f"{up}.weight"]
    keep_rows(up)
    # Decoder's first convolution reads [upsampled, skip], each now first_width wide.
    w = sd[f"{dec0}.weight"]
    new[f"{dec0}.weight"][:n] = 0
    new[f"{dec0}.weight"][:n, :n] = w[:, :n]
    new[f"{dec0}.weight"][:n, first_width : first_width + n] = w[:, n:]
    keep_rows(dec0)
    new[f"{dec1}.weight"][:n] = 0
    new[f"{dec1}.weight"][:n, :n] = sd[f"{dec1}.weight"]
    keep_rows(dec1)
    # The output layer does not read the new channels (yet).
    new["out.weight"].zero_()
    new["out.weight"][:, :n] = sd["out.weight"]
    new["out.bias"] = sd["out.bias"].clone()
    wide.load_state_dict(new)
    return wide.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="xtrans")
    parser.add_argument("--first-width", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    model = resolve_model(args.model)
    if not isinstance(model, RawDenoiser):
        raise SystemExit(f"{args.model} is not a raw denoiser")
    widened = widen(model, args.first_width, args.seed)
    x = torch.rand(2, model.config.in_channels, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        change = float((model(x) - widened(x)).abs().max())
    if change > 1e-5:
        raise SystemExit(f"widening changed the network's output by up to {change:.2e}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    note = (
        f"{args.model} widened to a first level of {args.first_width} channels by "
        f"scripts/widen_denoiser.py (the same function); to be fine-tuned"
    )
    save_model_file(args.output, widened, dtype=torch.float32, card={"notes": [note]})
    print(f"wrote {args.output}: output unchanged (largest difference {change:.1e})")


if __name__ == "__main__":
    main()
