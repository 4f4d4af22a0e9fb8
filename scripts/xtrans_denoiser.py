"""Make an X-Trans raw denoiser (nine packed planes) from a trained Bayer one, to train from.

An X-Trans frame packs into nine planes (R, R, G, G, G, G, G, B, B; :func:`darkraw.raw.cfa.
pack_xtrans`), a Bayer frame into four (R, G1, B, G2). Everything between the first and the last
convolution keeps its shape and is copied from the Bayer network. The first convolution (which
also reads the kind of each packed pixel's 3x3 block, :func:`darkraw.nn.inputs.
xtrans_block_kind`) is fresh (He-uniform from ``--seed``) and the output layer zero, so the
network starts as the identity, as a new one does. ``--shared`` instead reads each X-Trans
plane (and its noise map) with the Bayer weights of its colour, shared among the planes of that
colour, and writes each plane with its colour's Bayer output weights: on a flat field it then
computes what the Bayer network computes, but each plane's correction starts as its colour's,
which leaves most of a sample's own noise in it, and training from there was slow
(``configs/denoiser_xtrans.yaml``). The result is a starting point for ``darkraw train``
(``init_from``), not a finished network.

Usage:
    python scripts/xtrans_denoiser.py -o runs/xtrans_init.safetensors [--model default]
        [--shared] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import load_model, save_model_file
from darkraw.nn.modelfiles import model_source
from darkraw.raw.cfa import BAYER_PLANE_COLORS, XTRANS_PLANE_COLORS


def colour_shares() -> torch.Tensor:
    """``(9, 4)``: how much of each Bayer plane's input weight each X-Trans plane takes."""
    shares = torch.zeros(9, 4)
    for x, colour in enumerate(XTRANS_PLANE_COLORS):
        bayer = [b for b, c in enumerate(BAYER_PLANE_COLORS) if c == colour]
        members = sum(1 for c in XTRANS_PLANE_COLORS if c == colour)
        for b in bayer:
            shares[x, b] = 1.0 / members
    return shares


def to_xtrans(bayer: RawDenoiser, *, shared: bool = False, seed: int = 0) -> RawDenoiser:
    """The X-Trans network made from ``bayer`` as the module docstring says: ``shared`` takes
    the first and last layers from the Bayer weights by colour, else they are fresh (from
    ``seed``) and zero."""
    config = dataclasses.replace(bayer.config, planes=9)
    xtrans = RawDenoiser(config, torch.Generator().manual_seed(seed))
    state = {k: v.clone() for k, v in bayer.state_dict().items()}
    if not shared:
        own = xtrans.state_dict()
        for name in ("encoder.0.0.weight", "encoder.0.0.bias", "out.weight", "out.bias"):
            state[name] = own[name]
        xtrans.load_state_dict(state)
        return xtrans
    shares = colour_shares()
    first = "encoder.0.0.weight"
    w = state[first]  # (width, 4 planes [+ 4 maps], 3, 3)
    groups = [w[:, :4]]
    if bayer.config.noise_input == "map":
        groups.append(w[:, 4:8])
    shared = [torch.einsum("oikl,xi->oxkl", g, shares) for g in groups]
    # The block-kind channel (darkraw.nn.inputs.xtrans_block_kind) starts unread.
    state[first] = torch.cat([*shared, torch.zeros_like(w[:, :1])], 1)
    # Each X-Trans plane is written as its colour's Bayer plane(s) are: their mean.
    means = (shares > 0).float()
    means = means / means.sum(dim=1, keepdim=True)
    state["out.weight"] = torch.einsum("xi,iokl->xokl", means, state["out.weight"])
    state["out.bias"] = means @ state["out.bias"]
    xtrans.load_state_dict(state)
    return xtrans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--model", default="default", help="the Bayer denoiser to start from")
    parser.add_argument(
        "--shared", action="store_true", help="first and last layers from the Bayer weights"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds a fresh first convolution")
    args = parser.parse_args()
    bayer = load_model(model_source(args.model))
    if not isinstance(bayer, RawDenoiser) or bayer.config.planes != 4:
        raise SystemExit(f"{args.model}: not a Bayer raw denoiser")
    xtrans = to_xtrans(bayer, shared=args.shared, seed=args.seed)
    how = "first and last layers shared by colour" if args.shared else "inner levels"
    note = f"{args.model}'s {how} made X-Trans by scripts/xtrans_denoiser.py; to be trained"
    save_model_file(args.output, xtrans, dtype=torch.float32, card={"notes": [note]})
    print(f"wrote {args.output}: {xtrans.config}")


if __name__ == "__main__":
    main()
