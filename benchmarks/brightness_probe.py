"""Where does the network's darkening of the GoPro files come from?

On the darkened HERO7 file (issue 6's acceptance benchmark) the default model's output is darker
than the clean rendering. This runs the model on three versions of the same dark frame and
compares the mean of each output channel (8-bit sRGB levels) with the reference's:

- ``calibrated``: the acceptance frame (the Sony A7S2's calibrated noise, colour bias included);
- ``no bias``: the same draw of noise with the profile's per-channel colour bias set to zero;
- ``noise-free``: the light alone (the simple model with a negligible gain and no read noise).

If the colour bias caused the darkening, ``no bias`` would close the gap; if the noise as a whole
did, ``noise-free`` would.

Usage:
    python benchmarks/brightness_probe.py [--model default|PATH] [--files HERO7_GOPR9231.DNG]
        [--out benchmarks/results/brightness_probe.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

import numpy as np
from default_model_vs_classic import ONE_PASS, as_user_file, clean_and_reference, write_rows

from darkraw.nn.infer import enhance_raw_network, sid_network
from darkraw.synth.noise import NoiseProfile
from darkraw.synth.simulate import NoiseModel, SimulationConfig, simulate_dark
from darkraw.training.evaluate import score


def levels(image: np.ndarray) -> list[float]:
    """Mean of each channel of a ``(3, H, W)`` image in [0, 1], in 8-bit levels."""
    return [round(float(v) * 255, 1) for v in image.reshape(3, -1).mean(1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sid", help="'sid' or a SID model/checkpoint")
    parser.add_argument("--files", default="HERO7_GOPR9231.DNG")
    parser.add_argument("--ratios", default="100,300")
    parser.add_argument("--out", default="benchmarks/results/brightness_probe.json")
    args = parser.parse_args()
    model = sid_network(args.model)
    calibrated = SimulationConfig(camera="SonyA7S2")
    light_only = SimulationConfig(model=NoiseModel.SIMPLE, gain=1e-3, read_noise_dn=0.0)
    profile = calibrated.profile()
    variants: list[tuple[str, SimulationConfig, NoiseProfile | None]] = [
        ("calibrated", calibrated, profile),
        ("no bias", calibrated, dataclasses.replace(profile, color_bias=((0.0,) * 4,))),
        ("noise-free", light_only, None),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files.split(","):
            clean, reference = clean_and_reference(name)
            reference_levels = levels(reference)
            for ratio in (float(r) for r in args.ratios.split(",")):
                for label, config, variant_profile in variants:
                    # The benchmark's seed, so "calibrated" is its frame exactly.
                    rng = np.random.default_rng([0, int(ratio)])
                    dark = simulate_dark(
                        clean.raw_lin, clean.meta, ratio, config, rng, profile=variant_profile
                    )
                    back = as_user_file(dark, tmp)
                    output = enhance_raw_network(
                        back.mosaic, back.meta, model, ratio, ONE_PASS
                    ).image
                    s = score(output, reference)
                    row = {
                        "file": name,
                        "ratio": ratio,
                        "input": label,
                        "psnr": round(s.psnr8, 2),
                        "ssim": round(s.ssim8, 4),
                        "output_mean_rgb": levels(output),
                        "reference_mean_rgb": reference_levels,
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"written: {write_rows(args.out, args.model, rows)}")


if __name__ == "__main__":
    main()
