"""How closely does a model give back the reference when the input has no noise at all?

The acceptance benchmark (``default_model_vs_classic.py``) scores both methods against the
classic pipeline's rendering of the clean raw file, without denoising. The classic pipeline
given the clean frame reproduces that reference exactly; a network reproduces it only as well
as its demosaicing, colours and tone allow. This script measures that ceiling: each file's clean
mosaic goes through the network at ratio 1 and is scored against the reference (8-bit PSNR and
SSIM, and the mean error per channel in 8-bit levels). A raw-output network
(``docs/training.md``) that returned its input would score infinity here.

Usage:
    python benchmarks/clean_ceiling.py [--model default|PATH] [--files a,b]
        [--out benchmarks/results/clean_ceiling.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from default_model_vs_classic import DATA, FILES, ONE_PASS, clean_and_reference

from darkraw.nn.infer import enhance_raw_network, sid_network
from darkraw.training.evaluate import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sid", help="'sid' or a SID model/checkpoint")
    parser.add_argument("--files", default="", help="comma-separated subset of the files")
    parser.add_argument("--out", default="benchmarks/results/clean_ceiling.json")
    args = parser.parse_args()
    model = sid_network(args.model)
    rows: list[dict[str, object]] = []
    for name in args.files.split(",") if args.files else list(FILES):
        if not (DATA / name).exists():
            print(f"skipped {name}: not in {DATA}")
            continue
        clean, reference = clean_and_reference(name)
        image = enhance_raw_network(clean.raw_lin, clean.meta, model, 1.0, ONE_PASS)
        s = score(image.image, reference)
        bias = (image.image.mean(axis=(1, 2)) - reference.mean(axis=(1, 2))) * 255
        row: dict[str, object] = {
            "file": name,
            "psnr": round(s.psnr8, 2),
            "ssim": round(s.ssim8, 4),
            "mean_error_rgb_levels": [round(float(b), 2) for b in bias],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(args.model), "rows": rows}, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
