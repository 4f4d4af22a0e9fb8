"""How the black-offset rules do end to end: the raw denoiser given no offset, the frame's
darkest level, and the learnt estimate (darkraw.nn.blackoffset), on the accuracy benchmark's
three small raw files and six photos.

The frames are ``benchmarks/denoiser_vs_classic.py``'s, darkened as it darkens them (each
frame's own camera setting, ``--seed``), run once (no ensemble) and rendered by LibRaw; scores
are PSNR / SSIM / mean CIEDE2000 against the clean references, per group, with each rule's mean
offset error (DN of the dark frame against the offset the frame was given). ``--model-file``
runs a learnt model other than the bundled one (``scripts/train_black_offset.py`` writes them).

Usage:
    python benchmarks/learnt_black_offset.py [--seed 0] [--rules none darkest learnt]
        [--model-file F] [--out benchmarks/results/learnt_black_offset_rules.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from darkraw.nn.blackoffset import BlackOffsetModel, read_black_offset_model
from darkraw.nn.infer import resolve_model
from darkraw.nn.rawdenoise import DenoiseOptions, enhance_with_denoiser
from darkraw.raw.dng import write_dng
from darkraw.raw.rawio import read_raw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import denoiser_vs_classic as bench

RAW_NAMES = ["RAW_KODAK_DC50.KDC", "halide_bayer_small.png", "aisp_vivoX90_x90_3_4.npy"]


def run(rules: list[str], seed: int, model: BlackOffsetModel | None) -> dict[str, object]:
    denoiser = resolve_model("default")
    frames = [bench.raw_frame(n) for n in RAW_NAMES] + bench.photo_frames(6, seed)
    groups: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in bench.GROUPS:
            _, ratio = bench.GROUPS[group]
            scores: dict[str, list[list[float]]] = {rule: [] for rule in rules}
            for frame in frames:
                drawn = bench.darkened(frame.raw_lin, frame.meta, group, seed, frame.name)
                dark = read_raw(write_dng(Path(tmp) / "dark.dng", drawn.mosaic_dn, drawn.meta))
                given = np.array(getattr(drawn.params, "color_bias", (0.0,) * 4))
                for rule in rules:
                    result = enhance_with_denoiser(
                        dark.mosaic,
                        dark.meta,
                        denoiser,
                        ratio,
                        DenoiseOptions(gamma=frame.gamma, ensemble=1, black_offset=rule),
                        black_model=model,
                    )
                    image = bench.libraw_of(frame, result.mosaic_dn, dark, Path(tmp))
                    s = bench.scores(image, frame.reference)
                    error = float(np.mean(np.abs(np.array(result.black_offset) - given)))
                    scores[rule].append([s["psnr"], s["ssim"], s["de2000"], error])
            groups[group] = {
                rule: [round(float(v), 3) for v in np.mean(values, axis=0)]
                for rule, values in scores.items()
            }
            print(group, groups[group], flush=True)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="+", default=["none", "darkest", "learnt"])
    parser.add_argument("--model-file", type=Path, default=None)
    parser.add_argument("--out", default="benchmarks/results/learnt_black_offset_rules.json")
    args = parser.parse_args()
    start = time.perf_counter()
    model = None if args.model_file is None else read_black_offset_model(args.model_file)
    result = {
        "seed": args.seed,
        "model_file": str(args.model_file or "bundled"),
        "columns": ["psnr", "ssim", "de2000", "offset_error_dn"],
        "groups": run(args.rules, args.seed, model),
    }
    result["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
