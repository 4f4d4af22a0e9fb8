"""Convert ELD's measured camera noise parameters into darkraw's profile file.

Reads the JSON files of a folder (by default ../shared/data/noise_profiles/: Wei et al., CVPR
2020, camera calibrations of 14-bit raw noise) and writes them in darkraw's own layout (see
darkraw.synth.noise.NoiseProfile) to src/darkraw/data/noise_profiles.json, or to --out. Only the
numbers are taken, and each converted profile must pass darkraw's checks. Nothing is written
when the folder holds no profile or one of them fails.

    python scripts/import_eld_profiles.py [SOURCE_DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "noise_profiles"
TARGET = ROOT / "src" / "darkraw" / "data" / "noise_profiles.json"


def fit(entry: dict[str, float]) -> dict[str, float]:
    return {"slope": entry["slope"], "bias": entry["bias"], "sigma": entry["sigma"]}


def convert(raw: dict[str, Any]) -> dict[str, Any]:
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


def convert_folder(source: Path) -> dict[str, Any]:
    """darkraw's profiles of every ELD profile (``*.json``) in ``source``, by camera name.

    Raises:
        ValueError: one line naming the file: no profiles, or one that is not ELD's layout or
            fails darkraw's checks.
    """
    from darkraw.synth.noise import profile_from_dict

    if not source.is_dir():
        raise ValueError(f"{source}: not a folder of ELD profiles")
    files = sorted(p for p in source.glob("*.json") if p.is_file())
    if not files:
        raise ValueError(f"{source}: no ELD profiles (*.json) here; nothing written")
    out = {}
    for path in files:
        try:
            profile = convert(json.loads(path.read_text()))
        except (OSError, ValueError, RecursionError) as err:
            raise ValueError(f"{path}: cannot read it ({' '.join(str(err).split())})") from None
        except (KeyError, TypeError, AttributeError) as err:
            problem = f"not an ELD profile ({type(err).__name__}: {err})"
            raise ValueError(f"{path}: {problem}") from None
        profile_from_dict(path.stem, profile)
        out[path.stem] = profile
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert ELD's camera noise calibrations into darkraw's profile file.",
    )
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=SOURCE,
        help=f"folder of ELD's per-camera JSON files (default: {SOURCE})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=TARGET,
        help=f"the file to write (default: the bundled {TARGET.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    try:
        profiles = convert_folder(args.source)
    except ValueError as err:
        print(f"import_eld_profiles: error: {err}", file=sys.stderr)
        return 1
    from darkraw.errors import DarkrawError
    from darkraw.raw.fileio import atomic_output

    try:
        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(profiles, indent=1) + "\n")
    except DarkrawError as err:
        print(f"import_eld_profiles: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"import_eld_profiles: error: {args.out}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {', '.join(profiles)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
