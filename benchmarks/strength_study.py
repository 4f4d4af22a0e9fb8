"""Which ``--strength`` should be the default? The raw denoiser at several strengths on the
acceptance benchmark's frames and groups (``benchmarks/denoiser_vs_classic.py``: its frames,
darkening, DNG round trip, references and scores are imported from it, not copied) and on its
demo crop, with the network run as ``darkraw enhance`` runs it (ONNX Runtime), in one pass
(``ensemble=1``), as the recorded figures were measured.

Only the denoiser runs; the classic pipeline's and SID's figures for the same frames are in the
acceptance benchmark's results (``benchmarks/results/denoiser_phase4.json``).

Usage:
    python benchmarks/strength_study.py [--strengths 1,1.25,1.5] [--groups a_sony_x100,...]
        [--files ...] [--photos 6] [--seed 0] [--precision fp32|int8]
        [--out benchmarks/results/strength_study.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import denoiser_vs_classic as bench  # noqa: E402

from darkraw.demo import SAMPLE_RATIO, sample_path  # noqa: E402
from darkraw.nn.enhance import DefaultDenoiser, load_network  # noqa: E402
from darkraw.nn.rawdenoise import DenoiseOptions, enhance_with_denoiser  # noqa: E402
from darkraw.nn.runtime import OnnxDenoiser  # noqa: E402
from darkraw.raw.rawio import read_raw  # noqa: E402


def demo_scores(network: OnnxDenoiser, strengths: list[float]) -> dict[str, dict[str, float]]:
    """The demo crop at each strength, against LibRaw's rendering of the clean crop."""
    reference = bench.demo_reference()
    dark = read_raw(sample_path())
    out = {}
    for strength in strengths:
        result = enhance_with_denoiser(
            dark.mosaic,
            dark.meta,
            network,
            SAMPLE_RATIO,
            DenoiseOptions(strength=strength, ensemble=1),
        )
        out[f"{strength:g}"] = bench.scores(result.image, reference)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strengths", default="1,1.25,1.5")
    parser.add_argument("--groups", default=",".join(bench.GROUPS))
    parser.add_argument("--files", default=",".join(bench.FILES))
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "int8"], help="the export that runs"
    )
    parser.add_argument("--out", default="benchmarks/results/strength_study.json")
    args = parser.parse_args()
    strengths = [float(s) for s in args.strengths.split(",")]
    network = load_network("default", device="cpu", precision=args.precision)
    # "default" is the pair of the Bayer network and its X-Trans twin: the frames are Bayer.
    network = network.bayer if isinstance(network, DefaultDenoiser) else network
    if not isinstance(network, OnnxDenoiser):
        raise SystemExit("the bundled denoiser's ONNX export is missing or stale")
    frames = [
        bench.raw_frame(n) for n in args.files.split(",") if (bench.DATA / "raw" / n).exists()
    ]
    frames += bench.photo_frames(args.photos, args.seed)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for group in args.groups.split(","):
            _, ratio = bench.GROUPS[group]
            for frame in frames:
                dark = bench.as_user_file(
                    frame.raw_lin, frame.meta, group, args.seed, Path(tmp), frame.name
                )
                row: dict[str, object] = {"group": group, "frame": frame.name}
                for strength in strengths:
                    options = DenoiseOptions(gamma=frame.gamma, strength=strength, ensemble=1)
                    result = enhance_with_denoiser(
                        dark.mosaic,
                        dark.meta,
                        network,
                        ratio,
                        options,
                        black_range=bench.black_range(group, dark),
                    )
                    row[f"{strength:g}"] = bench.scores(result.image, frame.reference)
                rows.append(row)
                print(json.dumps(row), flush=True)
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for group in dict.fromkeys(str(r["group"]) for r in rows):
        mine = [r for r in rows if r["group"] == group]
        groups[group] = {
            f"{s:g}": {
                key: round(float(np.mean([r[f"{s:g}"][key] for r in mine])), 4)  # type: ignore[index]
                for key in ("psnr", "ssim", "de2000")
            }
            for s in strengths
        }
        groups[group]["frames"] = len(mine)  # type: ignore[assignment]
    summary: dict[str, object] = {
        "what": "the raw denoiser (ONNX Runtime, LibRaw rendering) at each strength",
        "precision": args.precision,
        "seed": args.seed,
        "strengths": strengths,
        "groups": groups,
        "demo": demo_scores(network, strengths),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"groups": groups, "demo": summary["demo"]}, indent=1))


if __name__ == "__main__":
    main()
