"""How does the network's lead over the classic pipeline depend on the camera's noise level?

Issue 6's acceptance benchmark draws one system gain K per frame (1.39 DN/e- at x100, 0.19 at
x300 with its seed). This fixes K instead, over the Sony A7S2 profile's range (0.09-6.0: low to
high ISO), darkens each file with the same draw of everything else, and scores the network and
the classic pipeline (its default denoiser) against the clean rendering, as the acceptance
benchmark does.

Usage:
    python benchmarks/noise_level_sweep.py [--model default|PATH]
        [--files RAW_KODAK_DC50.KDC,aisp_vivoX90_x90_3_4.npy] [--ratios 100,300]
        [--gains 0.1,0.19,0.4,0.8,1.4,3,6] [--out benchmarks/results/noise_level_sweep.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

import numpy as np
from default_model_vs_classic import (
    ONE_PASS,
    as_user_file,
    clean_and_reference,
    render_classic,
    write_rows,
)

from darkraw.nn.infer import enhance_raw_network, sid_network
from darkraw.synth.simulate import SimulationConfig, simulate_dark
from darkraw.training.evaluate import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sid", help="'sid' or a SID model/checkpoint")
    parser.add_argument("--files", default="RAW_KODAK_DC50.KDC,aisp_vivoX90_x90_3_4.npy")
    parser.add_argument("--ratios", default="100,300")
    parser.add_argument("--gains", default="0.1,0.19,0.4,0.8,1.4,3,6")
    parser.add_argument("--out", default="benchmarks/results/noise_level_sweep.json")
    args = parser.parse_args()
    model = sid_network(args.model)
    simulation = SimulationConfig(camera="SonyA7S2")
    profile = simulation.profile()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files.split(","):
            clean, reference = clean_and_reference(name)
            for ratio in (float(r) for r in args.ratios.split(",")):
                for k in (float(g) for g in args.gains.split(",")):
                    # The acceptance benchmark's seed: only K differs from its frame. A profile
                    # narrowed to one K still draws it (simulate_dark's k= would skip the draw
                    # and shift every later one).
                    fixed = dataclasses.replace(profile, k_min=k, k_max=k)
                    rng = np.random.default_rng([0, int(ratio)])
                    dark = simulate_dark(
                        clean.raw_lin, clean.meta, ratio, simulation, rng, profile=fixed
                    )
                    back = as_user_file(dark, tmp)
                    classic = render_classic(back, ratio)
                    network = enhance_raw_network(
                        back.mosaic, back.meta, model, ratio, ONE_PASS
                    ).image
                    c, n = score(classic.image, reference), score(network, reference)
                    row = {
                        "file": name,
                        "ratio": ratio,
                        "K": k,
                        "classic_denoiser": classic.denoiser.value,
                        "classic_psnr": round(c.psnr8, 2),
                        "classic_ssim": round(c.ssim8, 4),
                        "network_psnr": round(n.psnr8, 2),
                        "network_ssim": round(n.ssim8, 4),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"written: {write_rows(args.out, args.model, rows)}")


if __name__ == "__main__":
    main()
