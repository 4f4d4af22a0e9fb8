"""Convert ELD's measured camera noise parameters into darkraw's profile file.

Reads the JSON files in ../shared/data/noise_profiles/ (Wei et al., CVPR 2020, camera
calibrations of 14-bit raw noise) and writes src/darkraw/data/noise_profiles.json in darkraw's
own layout (see darkraw.synth.noise.NoiseProfile). Only the numbers are taken.
Run from the repository root: python scripts/import_eld_profiles.py [SOURCE_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SOURCE = Path("../shared/data/noise_profiles")
TARGET = Path("src/darkraw/data/noise_profiles.json")


def fit(entry: dict[str, float]) -> dict[str, float]:
    return {"slope": entry["slope"], "bias": entry["bias"], "sigma": entry["sigma"]}


def convert(raw: dict) -> dict:
    fits = []
    for key in sorted(k for k in raw if k.startswith("Profile-")):
        prof = raw[key]
        fits.append(
            {
                "tukey_scale": fit(prof["G_scale"]),
                "gauss_scale": fit(prof["g_scale"]),
                "row_scale": fit(prof["R_scale"]),
            }
        )
    return {
        "k_min": raw["Kmin"],
        "k_max": raw["Kmax"],
        "white_level": 16383,
        "tukey_shapes": raw["G_shape"],
        "color_bias": raw["color_bias"],
        "fits": fits,
    }


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    out = {p.stem: convert(json.loads(p.read_text())) for p in sorted(source.glob("*.json"))}
    TARGET.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {TARGET}: {', '.join(out)}")


if __name__ == "__main__":
    main()
