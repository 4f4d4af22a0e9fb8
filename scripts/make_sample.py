"""Make the bundled dark sample, src/darkraw/data/sample_dark.dng (see docs/sample.md).

A crop of a real GoPro HERO7 raw from the development data, given 1/100 of its light with
Poisson shot noise and Gaussian read noise, and a Sony-like black level of 512 DN.
Run from the repository root: python scripts/make_sample.py [PATH_TO_HERO7_DNG]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from darkraw.raw.dng import write_dng
from darkraw.raw.rawio import read_raw
from darkraw.synth.simulate import darken_mosaic

SOURCE = Path("../shared/data/raw/HERO7_GOPR9231.DNG")
TOP, LEFT, HEIGHT, WIDTH = 900, 1348, 768, 1152
RATIO = 100.0
SEED = 20261124


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    raw = read_raw(source)
    crop = raw.mosaic[TOP : TOP + HEIGHT, LEFT : LEFT + WIDTH]
    meta = raw.meta.replace(height=HEIGHT, width=WIDTH)
    dark, dark_meta = darken_mosaic(
        crop, meta, RATIO, np.random.default_rng(SEED), gain=1.0, read_noise_dn=2.0, black_level=512
    )
    out = write_dng(Path("src/darkraw/data/sample_dark.dng"), dark, dark_meta)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
