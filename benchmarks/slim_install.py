"""What ``pip install darkraw`` (no extras) gives on a fresh machine: its size, that it enhances
the demo without torch or OpenCV, and that ``darkraw train`` names the extra to install.

A new virtual environment is made in a temporary folder and this checkout is installed into it
(``pip install <repo>``, from the package index as a user would). Reported: the environment's
size on disk (``du``, pip included), the largest packages, whether torch or OpenCV got in, the
demo's exit code and time, and ``darkraw train``'s message.

Usage:
    python benchmarks/slim_install.py [--out benchmarks/results/slim_install.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def du_mib(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1024


def run(args: list[str], cwd: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    return done.returncode, (done.stdout + done.stderr).strip(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/slim_install.json")
    parser.add_argument("--keep", type=Path, default=None, help="make the environment here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="darkraw-slim-"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    code, text, seconds = run([str(python), "-m", "pip", "install", "-q", str(REPO)], work)
    if code:
        raise SystemExit(f"pip install failed:\n{text[-2000:]}")
    site = next((venv / "lib").glob("python3*/site-packages"))
    sizes = sorted(((du_mib(p), p.name) for p in site.iterdir()), reverse=True)
    darkraw = str(venv / "bin" / "darkraw")
    demo = run([darkraw, "demo", "--out", str(work / "demo")], work)
    (work / "run.yaml").write_text("task: denoise\n")
    train = run([darkraw, "train", "run.yaml"], work)
    imports = run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print([m for m in ('torch', 'cv2', "
            "'scipy', 'matplotlib') if u.find_spec(m)])",
        ],
        work,
    )
    result = {
        "environment_mib": round(du_mib(venv), 1),
        "install_s": round(seconds, 1),
        "largest_packages_mib": {name: round(mib, 1) for mib, name in sizes[:10]},
        "heavy_packages_present": imports[1],
        "demo": {"exit": demo[0], "seconds": round(demo[2], 2), "output": demo[1][-600:]},
        "train": {"exit": train[0], "output": train[1]},
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
