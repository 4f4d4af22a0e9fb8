"""Broken networks, one-line errors, SIGTERM and the Python API (issue 26, items 3, 7, 10, 18).

Each test makes its own tiny files. The signal tests run ``darkraw`` in a child process whose
image writer stalls half-way, so that the signal is sure to arrive during a write.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

import darkraw
from darkraw.cli import main
from darkraw.errors import CheckpointError, DarkrawError
from darkraw.nn.checkpoint import content_digest, read_safetensors
from darkraw.nn.denoiser import DenoiserConfig, build_denoiser
from darkraw.nn.infer import load_model, save_model_file
from darkraw.nn.model import ModelConfig, build_model, fc_parameter_names
from darkraw.raw.cfa import BayerPattern, pack_bayer
from darkraw.raw.dng import write_dng
from darkraw.synth.simulate import darken_mosaic

from conftest import ENHANCE_CLASSIC, mosaic_from_rgb, smooth_scene, tiny_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SRC = Path(__file__).resolve().parents[1] / "src"


def dark_dng(path: Path, seed: int = 0, height: int = 48, width: int = 64) -> Path:
    mosaic, meta = mosaic_from_rgb(smooth_scene(height, width, seed=seed), "RGGB")
    dark, dark_meta = darken_mosaic(mosaic, meta, 50, np.random.default_rng(seed))
    return write_dng(path, dark, dark_meta)


def two_dngs(folder: Path) -> Path:
    folder.mkdir()
    for i in range(2):
        dark_dng(folder / f"frame{i}.dng", seed=i)
    return folder


def lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip()]


def errors(err: str) -> list[str]:
    return [line for line in lines(err) if line.startswith("darkraw: error:")]


# --- item 3: broken weights give an error or a warning, not a black or white picture -----------


def sid_model_file(path: Path, fc: float | None = None) -> Path:
    """A tiny SID network, its global-colour (fc) layers set to ``fc``, saved in fp32."""
    model = build_model(ModelConfig(width=4, fc_hidden=8), torch.Generator().manual_seed(0))
    if fc is not None:
        names = set(fc_parameter_names(model))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in names:
                    param.fill_(fc)
    return save_model_file(path, model, dtype=torch.float32)


def denoiser_model_file(path: Path, value: float, which: str) -> Path:
    """A tiny raw denoiser whose ``out`` layer (``which="out"``: one sign) or every layer
    (``"all"``: alternating signs, so that infinities meet and make NaN) holds ``value``."""
    model = build_denoiser(DenoiserConfig(width=4, levels=2), torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if which == "out" and name.startswith("out"):
                param.fill_(value)
            elif which == "all":
                signs = torch.arange(param.numel()).reshape(param.shape) % 2 * -2 + 1
                param.copy_(signs * value)
    return save_model_file(path, model, dtype=torch.float32)


@pytest.mark.parametrize("fc", [1e30, 3e38, -3e38], ids=["fc 1e30", "fc 3e38", "fc -3e38"])
def test_a_sid_model_with_extreme_weights_fails_each_file_naming_the_model(tmp_path, capsys, fc):
    folder = two_dngs(tmp_path / "in")
    model = sid_model_file(tmp_path / "extreme.safetensors", fc)
    out = tmp_path / "out"
    assert main(["enhance", str(folder), "-o", str(out), "--model", str(model)]) == 1
    err = capsys.readouterr().err
    found = errors(err)
    assert len(found) == 2, err  # one per file: the batch went on past the first
    for line, name in zip(found, ("frame0.dng", "frame1.dng"), strict=True):
        assert name in line and str(model) in line and "NaN or infinite" in line, line
    assert "0 written, 0 skipped, 2 failed" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_a_sound_sid_model_still_writes_without_a_warning(tmp_path, capsys):
    model = sid_model_file(tmp_path / "sound.safetensors")
    out = tmp_path / "out.png"
    assert (
        main(["enhance", str(dark_dng(tmp_path / "d.dng")), "-o", str(out), "--model", str(model)])
        == 0
    )
    assert out.is_file()
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("value", [1e30, 3e38])
def test_a_raw_denoiser_giving_nan_fails_naming_the_model(tmp_path, capsys, value):
    folder = two_dngs(tmp_path / "in")
    model = denoiser_model_file(tmp_path / "nan.safetensors", value, "all")
    out = tmp_path / "out"
    assert main(["enhance", str(folder), "-o", str(out), "--model", str(model)]) == 1
    err = capsys.readouterr().err
    found = errors(err)
    assert len(found) == 2 and all(str(model) in line for line in found), err
    assert "0 written, 0 skipped, 2 failed" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_a_constant_result_is_a_warning_once_per_file(tmp_path, capsys):
    folder = two_dngs(tmp_path / "in")
    # The out layer at 1e30: the clean planes are clipped to white (or black) everywhere.
    model = denoiser_model_file(tmp_path / "white.safetensors", 1e30, "out")
    out = tmp_path / "out"
    assert main(["enhance", str(folder), "-o", str(out), "--model", str(model)]) == 0
    err = capsys.readouterr().err
    warned = [line for line in lines(err) if line.startswith("darkraw: warning:")]
    assert len(warned) == 2, err
    for line, name in zip(warned, ("frame0.dng", "frame1.dng"), strict=True):
        assert name in line and str(model) in line and "one colour" in line, line
    assert sorted(p.name for p in out.iterdir()) == ["frame0.png", "frame1.png"]


def test_the_api_raises_and_warns_as_the_command_line_reports(tmp_path):
    from darkraw.errors import NetworkOutputError
    from darkraw.nn.enhance import ConstantOutputWarning

    dng = dark_dng(tmp_path / "d.dng")
    broken = sid_model_file(tmp_path / "broken.safetensors", 3e38)
    with pytest.raises(NetworkOutputError, match="NaN or infinite") as err:
        darkraw.enhance(dng, model=broken)
    assert isinstance(err.value, DarkrawError) and "\n" not in str(err.value)
    assert str(broken) in str(err.value)
    white = denoiser_model_file(tmp_path / "white.safetensors", 1e30, "out")
    network = load_model(white)
    for _ in range(2):  # every call warns, not only the first
        with pytest.warns(ConstantOutputWarning, match="one colour"):
            darkraw.enhance(dng, model=network)


# --- item 7: one line instead of a traceback ----------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [["float32"], {"a": 1}, 16, None], ids=["list", "object", "number", "null"]
)
def test_a_model_file_whose_dtype_is_not_a_string_is_one_line(tmp_path, capsys, dtype):
    good = sid_model_file(tmp_path / "good.safetensors")
    state, metadata = read_safetensors(good, "model file")
    metadata["dtype"] = json.dumps(dtype)
    # Sealed again, so that only the dtype is wrong.
    metadata["sha256"] = json.dumps(content_digest(state, metadata))
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=metadata)
    with pytest.raises(CheckpointError, match="unknown storage dtype"):
        load_model(bad)
    dng = dark_dng(tmp_path / "d.dng")
    code = main(["enhance", str(dng), "-o", str(tmp_path / "x.png"), "--model", str(bad)])
    assert code == 1
    (line,) = lines(capsys.readouterr().err)
    assert line.startswith(f"darkraw: error: {bad}: unknown storage dtype")
    assert not (tmp_path / "x.png").exists()


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG of 100 bytes whose header declares ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def test_a_decompression_bomb_in_simulate_is_one_failed_file(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    rgb = (smooth_scene(48, 64) * 255).round().astype(np.uint8)
    Image.fromarray(np.moveaxis(rgb, 0, -1)).save(folder / "a_good.png")
    bomb = png_header(folder / "b_bomb.png", 20000, 20000)  # 400 Mpixel: over Pillow's limit
    out = tmp_path / "out"
    assert main(["simulate", str(folder), "-o", str(out), "--ratios", "100"]) == 1
    err = capsys.readouterr().err
    (line,) = errors(err)
    assert line.startswith(f"darkraw: error: {bomb}: ") and "too many pixels" in line, line
    assert "2 inputs, 1 failed" in err
    assert (out / "a_good_clean.dng").is_file() and (out / "a_good_x100.dng").is_file()
    assert not list(out.glob("b_bomb*"))


LONG = "a" * 5000


@pytest.mark.parametrize(
    "where",
    ["enhance image", "enhance folder", "enhance nested", "simulate folder", "train out_dir"],
)
def test_a_5000_character_output_path_is_one_line(tmp_path, capsys, photo_folder, where):
    dng = dark_dng(tmp_path / "d.dng")
    photo = next(iter(sorted(photo_folder.iterdir())))
    argv = {
        "enhance image": [*ENHANCE_CLASSIC, str(dng), "-o", str(tmp_path / f"{LONG}.png")],
        "enhance folder": [*ENHANCE_CLASSIC, str(dng), str(dng), "-o", str(tmp_path / LONG)],
        "enhance nested": [*ENHANCE_CLASSIC, str(dng), "-o", str(tmp_path / LONG / "x.png")],
        "simulate folder": ["simulate", str(photo), "-o", str(tmp_path / LONG)],
        "train out_dir": ["train", str(tmp_path / "run.yaml")],
    }[where]
    settings = tiny_settings(photo_folder, tmp_path / LONG)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    assert main(argv) == 1
    found = lines(capsys.readouterr().err)
    assert len(found) == 1 and found[0].startswith("darkraw: error: "), found
    assert "File name too long" in found[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.dng", "run.yaml"]


@pytest.mark.parametrize("patch", [1_000_000, 4112])
def test_a_patch_over_4096_is_refused_naming_the_key(tmp_path, photo_folder, patch):
    from darkraw.config import ConfigError, load_config
    from darkraw.training.train import TrainConfig

    settings = tiny_settings(photo_folder, tmp_path / "run")
    settings["data"]["pairs"] = {"patch": patch}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    # The config alone, not a run: a million asked the kernel for some 24 GB, unchecked.
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, config)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(config))
    assert "data.pairs: patch must be a multiple of 16 from 16 to 4096" in message, message
    assert f"got {patch}" in message


def test_a_patch_of_4096_is_still_a_pair_config():
    from darkraw.training.dataset import PairConfig

    assert PairConfig(patch=4096).patch == 4096


# --- item 10: SIGTERM, and what a killed writer left -------------------------------------------

#: ``darkraw`` with an image writer that writes half a file and then waits to be stopped.
STALLED_WRITER = """
import sys, time
import darkraw.raw.fileio

def stalled_png(path, *args, **kwargs):
    with open(path, "wb") as handle:
        handle.write(b"half an image")
    time.sleep(120)

darkraw.raw.fileio.write_png = stalled_png
from darkraw.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_stalled_write(tmp_path: Path, out: Path) -> subprocess.Popen[str]:
    """``darkraw enhance`` in a child process, stopped inside the write of ``out``."""
    script = tmp_path / "stalled.py"
    script.write_text(STALLED_WRITER)
    dng = dark_dng(tmp_path / "d.dng")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            *ENHANCE_CLASSIC,
            str(dng),
            "-o",
            str(out),
            "--denoise",
            "none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not parts(out):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the write did not start"
        time.sleep(0.01)
    return proc


def parts(out: Path) -> list[str]:
    folder = out.parent
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name) if folder.is_dir() else []


def test_sigterm_during_a_write_leaves_nothing_and_says_so(tmp_path):
    out = tmp_path / "out" / "x.png"
    proc = start_stalled_write(tmp_path, out)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err
    assert "darkraw: terminated; finished outputs are complete, run again to do the rest" in err
    assert parts(out) == [] and not out.exists()


def test_a_later_run_removes_the_part_files_a_killed_writer_left(tmp_path, capsys):
    out = tmp_path / "out" / "x.png"
    proc = start_stalled_write(tmp_path, out)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    (left,) = parts(out)
    folder = out.parent
    # What else may lie there: an unnamed temporary file of an older darkraw, long ago...
    old = folder / ".x.abcd1234.part.png"
    old.write_bytes(b"old")
    os.utime(old, (1e9, 1e9))
    # ... a write of the same output by a process still running, and one of another output.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = folder / f".x.{sleeper.pid}.abcd1234.part.png"
        live.write_bytes(b"live")
        other = folder / f".x.b.{proc.pid}.abcd1234.part.png"
        other.write_bytes(b"another output's")
        dng = tmp_path / "d.dng"
        args = [*ENHANCE_CLASSIC, str(dng), "-o", str(out), "--denoise", "none", "--overwrite"]
        assert main(args) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(p.name for p in folder.iterdir()) == sorted(["x.png", live.name, other.name])
    # The killed writer's file was known by the process id in its name.
    assert left.startswith(f".x.{proc.pid}."), left


def test_part_names_of_one_output_match_no_other():
    from darkraw.raw.fileio import part_pattern

    pattern = part_pattern(Path("out/a.png"))
    assert pattern.fullmatch(".a.123.abcd_123.part.png")
    assert pattern.fullmatch(".a.abcd_123.part.png")
    for name in (
        ".a.b.123.abcd_123.part.png",  # a.b.png's
        ".a.5.123.abcd_123.part.png",  # a.5.png's
        ".a.123.abcd_123.part.jpg",
        ".ab.123.abcd_123.part.png",
        "a.png",
    ):
        assert not pattern.fullmatch(name), name


def test_remove_stale_parts_keeps_what_this_process_writes(tmp_path):
    from darkraw.raw.fileio import remove_stale_parts

    out = tmp_path / "x.png"
    mine = tmp_path / f".x.{os.getpid()}.abcd1234.part.png"
    mine.write_bytes(b"")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = tmp_path / f".x.{ended.pid}.abcd1234.part.png"
    dead.write_bytes(b"")
    assert remove_stale_parts(out) == [dead]
    assert mine.exists() and not dead.exists()


# --- item 18: the Python API takes packed arrays and says what it chose ------------------------


@pytest.fixture
def bare(tmp_path):
    mosaic, meta = mosaic_from_rgb(smooth_scene(30, 46), "GRBG")
    dark, _ = darken_mosaic(mosaic, meta, 50, np.random.default_rng(0))
    return np.round(dark).astype(np.uint16), {"pattern": "GRBG", "white_level": meta.white_level}


def raster_packed(mosaic: np.ndarray) -> np.ndarray:
    """``(h, w, 4)``: the 2x2 tile's positions in raster order (the layout of a packed .npy)."""
    return np.stack([mosaic[r::2, c::2] for r in (0, 1) for c in (0, 1)], axis=-1)


@pytest.mark.parametrize("pattern", [p.value for p in BayerPattern])
def test_a_packed_array_gives_what_its_npy_file_gives(tmp_path, bare, pattern):
    mosaic, _ = bare
    spec = {"pattern": pattern, "white_level": 1023.0, "ratio": 20.0}
    packed = raster_packed(mosaic)
    np.save(tmp_path / "packed.npy", packed)
    from_file = darkraw.enhance(tmp_path / "packed.npy", model="classic", **spec)
    from_packed = darkraw.enhance(packed, model="classic", **spec)
    from_mosaic = darkraw.enhance(mosaic, model="classic", **spec)
    # OpenCV's threads may order a sum differently from one call to the next: 1e-7 apart.
    np.testing.assert_allclose(from_packed, from_file, atol=1e-6)
    np.testing.assert_allclose(from_packed, from_mosaic, atol=1e-6)


def test_a_packed_array_is_not_read_in_the_canonical_plane_order(bare):
    mosaic, spec = bare
    # RGGB's canonical planes are R, G1, B, G2: raster order would be R, G1, G2, B.
    canonical = np.moveaxis(pack_bayer(mosaic, "RGGB"), 0, -1)
    assert not np.array_equal(canonical, raster_packed(mosaic))
    spec = {**spec, "pattern": "RGGB", "ratio": 20.0}
    from_mosaic = darkraw.enhance(mosaic, model="classic", **spec)
    wrong = darkraw.enhance(canonical, model="classic", **spec)
    assert np.abs(wrong - from_mosaic).max() > 0.01


def test_return_info_says_the_ratio_it_chose(bare):
    mosaic, spec = bare
    plain = darkraw.enhance(mosaic, model="classic", **spec)
    image, info = darkraw.enhance(mosaic, model="classic", return_info=True, **spec)
    assert isinstance(plain, np.ndarray)
    np.testing.assert_allclose(image, plain, atol=1e-6)  # OpenCV's threads: 1e-7 apart
    assert info.method == "classic" and 1 <= info.ratio <= 1000
    assert info.noise is None and info.strength is None
    again = darkraw.enhance(mosaic, model="classic", ratio=info.ratio, **spec)
    np.testing.assert_allclose(again, plain, atol=1e-6)
    with pytest.raises(AttributeError):
        info.ratio = 2.0  # type: ignore[misc]


def test_return_info_of_the_networks(tmp_path, bare):
    mosaic, spec = bare
    sid = load_model(sid_model_file(tmp_path / "sid.safetensors"))
    image, info = darkraw.enhance(mosaic, model=sid, ratio=40, return_info=True, **spec)
    assert image.shape == (30, 46, 3) and info.method == "sid" and info.ratio == 40
    assert info.noise is None and info.passes is None
    denoiser = build_denoiser(DenoiserConfig(width=4, levels=2), torch.Generator().manual_seed(0))
    image, info = darkraw.enhance(mosaic, model=denoiser, strength=0.5, return_info=True, **spec)
    assert image.shape == (30, 46, 3) and info.method == "raw_denoiser"
    assert info.strength == 0.5 and info.noise is not None and info.noise_told is not None
    assert info.noise_told == info.noise.scaled(0.5)
    assert info.noise_told.read[1] == pytest.approx(info.noise.read[1] * 0.25)
    assert info.passes == 8  # a small frame: all eight mirrorings and turns


@pytest.mark.parametrize("ratio", [0.5, 0.0, -3.0, 10_000.5, 1e30, float("inf"), float("nan")])
def test_the_api_bounds_the_ratio_naming_the_limit(bare, ratio):
    mosaic, spec = bare
    with pytest.raises(ValueError, match="ratio must be between 1 and 10000"):
        darkraw.enhance(mosaic, model="classic", ratio=ratio, **spec)


@pytest.mark.parametrize("ratio", [1, 10_000])
def test_the_api_takes_the_ratio_limits_themselves(bare, ratio):
    mosaic, spec = bare
    image, info = darkraw.enhance(mosaic, model="classic", ratio=ratio, return_info=True, **spec)
    assert info.ratio == ratio and np.isfinite(image).all()
