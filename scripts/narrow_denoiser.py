"""Make a raw denoiser with a narrower first level from a trained one, to fine-tune from.

The first level runs at the packed planes' full resolution and is a third of the default
network's multiply-accumulates (``first_width`` in :class:`~darkraw.nn.denoiser_config.
DenoiserConfig`). This keeps, in each of that level's five feature spaces (the encoder's two
convolutions, the transposed convolution from below, the decoder's two convolutions), the
channels that carry most: each channel's mean absolute activation on a real dark frame times the
norm of the weights that read it. Everything below the first level is copied unchanged. The
result is a starting point for ``darkraw train`` (``init_from``), not a finished network.

Usage:
    python scripts/narrow_denoiser.py --first-width 8 -o runs/narrow8_init.safetensors \\
        [--model default] [--frame src/darkraw/data/sample_dark.dng --ratio 100]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import resolve_model, save_model_file
from darkraw.nn.inputs import denoiser_input
from darkraw.nn.rawdenoise import frame_noise, prepare_frame
from darkraw.raw.rawio import read_raw

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "darkraw" / "data" / "sample_dark.dng"


def frame_input(path: Path, ratio: float) -> torch.Tensor:
    """The network's input for a raw file, as ``darkraw enhance`` makes it at strength 1."""
    raw = read_raw(path)
    planes = prepare_frame(raw.mosaic, raw.meta).planes
    noise = frame_noise(planes, raw.meta).amplified(ratio)
    x = denoiser_input(planes, noise, ratio=ratio)
    return torch.from_numpy(np.ascontiguousarray(x))[None]


def channel_activity(model: RawDenoiser, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean absolute activation of each channel of the first level's feature spaces."""
    spaces = {
        "a": model.encoder[0][1],
        "s": model.encoder[0][3],
        "u": model.upsample[-1],
        "d1": model.decoder[-1][1],
        "d2": model.decoder[-1][3],
    }
    found: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: found.__setitem__(name, out.abs().mean(dim=(0, 2, 3)))
        )
        for name, module in spaces.items()
    ]
    with torch.no_grad():
        model.raw_correction(x)
    for hook in hooks:
        hook.remove()
    return found


def keep(score: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` highest-scoring channels, in their original order."""
    return torch.sort(torch.topk(score, n).indices).values


def narrow(model: RawDenoiser, first_width: int, x: torch.Tensor) -> RawDenoiser:
    """``model`` with ``first_width`` channels in its first level (see the module's text)."""
    config = model.config
    width0 = config.widths[0]
    if not 0 < first_width <= width0:
        raise SystemExit(f"--first-width must be in 1..{width0}")
    act = channel_activity(model, x)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    last = len(model.decoder) - 1
    enc1, dec0, dec1 = "encoder.0.2", f"decoder.{last}.0", f"decoder.{last}.2"
    up = f"upsample.{last}"

    def reads(name: str, channels: slice | None = None) -> torch.Tensor:
        w = sd[f"{name}.weight"]
        w = w if channels is None else w[:, channels]
        return w.pow(2).sum(dim=(0, 2, 3))

    s_reads = reads("encoder.1.0") + reads(dec0, slice(width0, 2 * width0))
    chosen = {
        "a": keep(act["a"] * reads(enc1).sqrt(), first_width),
        "s": keep(act["s"] * s_reads.sqrt(), first_width),
        "u": keep(act["u"] * reads(dec0, slice(0, width0)).sqrt(), first_width),
        "d1": keep(act["d1"] * reads(dec1).sqrt(), first_width),
        "d2": keep(act["d2"] * reads("out").sqrt(), first_width),
    }
    a, s, u, d1, d2 = (chosen[k] for k in ("a", "s", "u", "d1", "d2"))
    new = dict(sd)
    new["encoder.0.0.weight"] = sd["encoder.0.0.weight"][a]
    new["encoder.0.0.bias"] = sd["encoder.0.0.bias"][a]
    new[f"{enc1}.weight"] = sd[f"{enc1}.weight"][s][:, a]
    new[f"{enc1}.bias"] = sd[f"{enc1}.bias"][s]
    new["encoder.1.0.weight"] = sd["encoder.1.0.weight"][:, s]
    new[f"{up}.weight"] = sd[f"{up}.weight"][:, u]
    new[f"{up}.bias"] = sd[f"{up}.bias"][u]
    inputs = torch.cat([u, width0 + s])
    new[f"{dec0}.weight"] = sd[f"{dec0}.weight"][d1][:, inputs]
    new[f"{dec0}.bias"] = sd[f"{dec0}.bias"][d1]
    new[f"{dec1}.weight"] = sd[f"{dec1}.weight"][d2][:, d1]
    new[f"{dec1}.bias"] = sd[f"{dec1}.bias"][d2]
    new["out.weight"] = sd["out.weight"][:, d2]
    narrowed = RawDenoiser(dataclasses.replace(config, first_width=first_width))
    narrowed.load_state_dict(new)
    return narrowed.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--first-width", type=int, required=True)
    parser.add_argument("--frame", type=Path, default=SAMPLE)
    parser.add_argument("--ratio", type=float, default=100.0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    model = resolve_model(args.model)
    if not isinstance(model, RawDenoiser):
        raise SystemExit(f"{args.model} is not a raw denoiser")
    x = frame_input(args.frame, args.ratio)
    narrowed = narrow(model, args.first_width, x)
    with torch.no_grad():
        full, small = model(x), narrowed(x)
    change = float((full - small).abs().mean() / x[:, :4].abs().mean())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    note = (
        f"{args.model} narrowed to a first level of {args.first_width} channels by "
        f"scripts/narrow_denoiser.py on {args.frame.name} x{args.ratio:g}; to be fine-tuned"
    )
    save_model_file(args.output, narrowed, dtype=torch.float32, card={"notes": [note]})
    print(f"wrote {args.output}: mean output change {change:.4f} of the input's mean level")


if __name__ == "__main__":
    main()
