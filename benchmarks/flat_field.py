"""Does the network leave a flat field flat? Grain left in flat areas (a sky, a wall) is what
SSIM punishes most, and what put the phase-7 default model behind BM3D in SSIM on the Kodak
DC50's sky and the vivo's wall although it was ahead in PSNR.

A flat grey photo (512x512, sRGB levels 0.1-0.75) is unprocessed into the raw of a virtual
camera (white balance 1.9/1.6; the GoPro HERO7's colour matrix, or none: the identity, as for
the Kodak DC50 and the bare mosaics), darkened at x100 and x300 with
the Sony A7S2's calibrated noise at a fixed system gain K, written as a DNG and read back, and
rendered by the network and by the classic pipeline (its default denoiser, BM3D at this size).
For each, on the central 384x384 of the 8-bit output: the standard deviation per channel
(averaged; 0 is a flat output) and the mean level's error against the noise-free rendering.
With several models (``--models``), ``network0_*`` is the first one's, ``network1_*`` the
second's, and so on. Needs no data files.

Usage:
    python benchmarks/flat_field.py [--models default,PATH,...] [--levels 0.1,0.25,0.5,0.75]
        [--gains 0.19,1.4] [--ratios 100,300] [--cameras gopro_hero7,identity]
        [--out benchmarks/results/flat_field.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile

import numpy as np
from default_model_vs_classic import ONE_PASS, as_user_file, render_classic, write_rows

from darkraw.nn.infer import enhance_raw_network, sid_network
from darkraw.synth.simulate import SimulationConfig, simulate_dark
from darkraw.synth.sources import unprocess_photo
from darkraw.synth.unprocess import UnprocessParams, camera_matrix

SIDE = 512
MARGIN = 64


def flat_stats(image: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean per-channel standard deviation and mean error, in 8-bit levels, of the centre."""
    centre = (slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    out = np.round(np.clip(image[centre], 0, 1) * 255).astype(np.float64)
    ref = np.round(np.clip(truth[centre], 0, 1) * 255).astype(np.float64)
    return float(out.std(axis=(1, 2)).mean()), float(out.mean() - ref.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sid", help="comma-separated: 'sid', 'small' or paths")
    parser.add_argument("--levels", default="0.1,0.25,0.5,0.75", help="sRGB grey levels")
    parser.add_argument("--gains", default="0.19,1.4", help="system gains K (DN/e-)")
    parser.add_argument("--ratios", default="100,300")
    parser.add_argument("--cameras", default="gopro_hero7,identity", help="colour matrices")
    parser.add_argument("--out", default="benchmarks/results/flat_field.json")
    args = parser.parse_args()
    models = {name: sid_network(name) for name in args.models.split(",")}
    simulation = SimulationConfig(camera="SonyA7S2")
    profile = simulation.profile()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for camera, level in itertools.product(
            args.cameras.split(","), (float(v) for v in args.levels.split(","))
        ):
            params = UnprocessParams(camera_matrix(camera), (1.9, 1.0, 1.6), brightness=1.0)
            clean = unprocess_photo(np.full((3, SIDE, SIDE), level, np.float32), params)
            for ratio in (float(r) for r in args.ratios.split(",")):
                for k in (float(g) for g in args.gains.split(",")):
                    rng = np.random.default_rng([0, int(ratio), int(k * 100)])
                    dark = simulate_dark(
                        clean.raw_lin, clean.meta, ratio, simulation, rng, profile=profile, k=k
                    )
                    back = as_user_file(dark, tmp)
                    classic = render_classic(back, ratio)
                    c_std, c_err = flat_stats(classic.image, clean.reference)
                    row: dict[str, object] = {
                        "camera": camera,
                        "level": level,
                        "ratio": ratio,
                        "K": k,
                        "classic_denoiser": classic.denoiser.value,
                        "classic_std": round(c_std, 2),
                        "classic_mean_error": round(c_err, 2),
                    }
                    for i, model in enumerate(models.values()):
                        network = enhance_raw_network(
                            back.mosaic, back.meta, model, ratio, ONE_PASS
                        ).image
                        n_std, n_err = flat_stats(network, clean.reference)
                        row[f"network{i}_std"] = round(n_std, 2)
                        row[f"network{i}_mean_error"] = round(n_err, 2)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"written: {write_rows(args.out, ', '.join(models), rows)}")


if __name__ == "__main__":
    main()
