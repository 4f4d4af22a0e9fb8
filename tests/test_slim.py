"""``pip install darkraw`` without extras: enhancing needs neither torch nor OpenCV, and the
commands that need torch say in one line what to install. Each test runs darkraw in a fresh
interpreter where those packages cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from darkraw.raw.dng import write_dng
from darkraw.synth.simulate import darken_mosaic

from conftest import mosaic_from_rgb, smooth_scene

#: What the base install lacks.
MISSING = ("torch", "torchmetrics", "cv2", "bm3d", "scipy", "matplotlib", "onnx")


def run_without_extras(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        f"""
        import sys
        for name in {MISSING!r}:
            sys.modules[name] = None
        from darkraw.cli import main
        code = main({args!r})
        loaded = [m for m in ("torch", "cv2") if sys.modules.get(m) is not None]
        print("loaded:", ",".join(loaded), file=sys.stderr)
        sys.exit(code)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def dark_dng(path: Path) -> Path:
    mosaic, meta = mosaic_from_rgb(smooth_scene(48, 64), "GRBG")
    dark, dark_meta = darken_mosaic(mosaic, meta, 50, np.random.default_rng(0))
    return write_dng(path, dark, dark_meta)


def test_enhance_runs_the_default_denoiser_without_torch_or_opencv(tmp_path):
    dng = dark_dng(tmp_path / "dark.dng")
    done = run_without_extras(["enhance", str(dng), "-o", str(tmp_path / "out.png")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.png").stat().st_size > 0
    assert done.stderr.strip().splitlines()[-1] == "loaded:"


def test_dng_output_without_torch(tmp_path):
    dng = dark_dng(tmp_path / "dark.dng")
    done = run_without_extras(["enhance", str(dng), "-o", str(tmp_path / "clean.dng")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "clean.dng").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["train", "run.yaml"],
        ["evaluate", "--data", "list.txt"],
        ["export-onnx", "--model", "default", "-o", "m.onnx"],
    ],
)
def test_commands_that_need_torch_name_the_extra_in_one_line(tmp_path, args):
    done = run_without_extras(args, tmp_path)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("loaded:")]
    assert done.returncode == 1
    assert lines == [f"darkraw: error: darkraw {args[0]} needs torch: pip install 'darkraw[train]'"]


def test_the_sid_network_without_torch_names_the_extra(tmp_path):
    dng = dark_dng(tmp_path / "dark.dng")
    args = ["enhance", str(dng), "--model", "sid", "-o", str(tmp_path / "o.png")]
    done = run_without_extras(args, tmp_path)
    assert done.returncode == 1
    assert "needs torch: pip install 'darkraw[train]'" in done.stderr
    assert not (tmp_path / "o.png").exists()


def test_importing_darkraw_loads_neither_torch_nor_opencv():
    script = (
        "import sys, darkraw, darkraw.cli, darkraw.nn.enhance, darkraw.batch; "
        "print([m for m in ('torch', 'cv2') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_simulate_and_info_run_without_torch_or_opencv(tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    gradient = np.linspace(0, 255, 48 * 64 * 3).reshape(48, 64, 3).astype(np.uint8)
    Image.fromarray(gradient).save(photo)
    done = run_without_extras(["simulate", str(photo), "-o", str(tmp_path / "pairs")], tmp_path)
    assert done.returncode == 0, done.stderr
    dark = sorted((tmp_path / "pairs").rglob("*.dng"))
    assert dark
    done = run_without_extras(["info", str(dark[0])], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mean level" in done.stdout
