import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

import darkraw.raw.fileio
from darkraw import cli
from darkraw.cli import build_parser, main
from darkraw.raw.dng import write_dng
from darkraw.raw.fileio import read_image
from darkraw.synth.simulate import darken_mosaic

from conftest import ENHANCE_CLASSIC, mosaic_from_rgb, smooth_scene

#: Taken before the tests' fixture puts a stand-in in its place (conftest.py).
REAL_GLIBC_MALLOPT = cli._glibc_mallopt


@pytest.fixture
def dark_dng(tmp_path):
    mosaic, meta = mosaic_from_rgb(smooth_scene(64, 96), "RGGB")
    dark, dark_meta = darken_mosaic(mosaic, meta, 50, np.random.default_rng(0))
    return write_dng(tmp_path / "dark.dng", dark, dark_meta)


def only_files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_enhance_writes_png_with_auto_ratio(tmp_path, dark_dng, capsys):
    out = tmp_path / "out.png"
    assert main([*ENHANCE_CLASSIC, str(dark_dng), "-o", str(out), "--denoise", "nlm"]) == 0
    img = read_image(out)
    assert img.shape == (3, 64, 96)
    assert 0.2 < img.mean() < 0.8  # brightened from a near-black frame
    assert "ratio auto" in capsys.readouterr().out


def test_enhance_tiff_is_16_bit(tmp_path, dark_dng):
    out = tmp_path / "out.tif"
    assert (
        main(
            [*ENHANCE_CLASSIC, str(dark_dng), "-o", str(out), "--ratio", "50", "--denoise", "none"]
        )
        == 0
    )
    arr = tifffile.imread(out)
    assert arr.dtype == np.uint16 and arr.shape == (64, 96, 3)
    assert len(np.unique(arr)) > 256


def test_batch_goes_on_past_bad_files(tmp_path, dark_dng, capsys):
    fake = tmp_path / "fake.ARW"
    Image.new("RGB", (32, 32)).save(fake, format="JPEG")
    missing = tmp_path / "missing.dng"
    out = tmp_path / "results"
    code = main(
        [
            *ENHANCE_CLASSIC,
            str(fake),
            str(dark_dng),
            str(missing),
            "-o",
            str(out),
            "--denoise",
            "none",
        ]
    )
    assert code == 1
    assert only_files(out) == ["dark.png"]
    err = capsys.readouterr().err
    assert "1 written, 0 skipped, 2 failed" in err
    assert f"{fake}: not a raw photo" in err
    assert f"{missing}: no such file" in err
    assert "Traceback" not in err


def test_folder_input_and_skip_existing(tmp_path, dark_dng, capsys):
    out = tmp_path / "results"
    assert main([*ENHANCE_CLASSIC, str(tmp_path), "-o", str(out), "--denoise", "none"]) == 0
    first = (out / "dark.png").stat().st_mtime_ns
    assert main([*ENHANCE_CLASSIC, str(tmp_path), "-o", str(out), "--denoise", "none"]) == 0
    assert (out / "dark.png").stat().st_mtime_ns == first
    assert "skipped" in capsys.readouterr().out
    assert (
        main([*ENHANCE_CLASSIC, str(dark_dng), "-o", str(out), "--overwrite", "--denoise", "none"])
        == 0
    )


def test_unwritable_output_gives_one_line_and_no_partial_file(tmp_path, dark_dng, capsys):
    # A missing folder is created (issue 26); one whose path runs through a file cannot be.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = blocker / "out.png"
    assert main([*ENHANCE_CLASSIC, str(dark_dng), "-o", str(out), "--denoise", "none"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"darkraw: error: {out}: cannot create output folder {blocker} (it is a file)"]
    assert only_files(tmp_path) == ["blocker", "dark.dng"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder(tmp_path, dark_dng, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["enhance", str(dark_dng), "-o", str(ro / "x.png")]) == 1
        assert only_files(ro) == []
    finally:
        ro.chmod(0o700)


def test_full_disk_leaves_no_partial_file(tmp_path, dark_dng, monkeypatch, capsys):
    def half_written_then_full(path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(darkraw.raw.fileio, "write_png", half_written_then_full)
    out = tmp_path / "full.png"
    assert main([*ENHANCE_CLASSIC, str(dark_dng), "-o", str(out), "--denoise", "none"]) == 1
    assert not out.exists()
    assert only_files(tmp_path) == ["dark.dng"]
    assert "No space left on device" in capsys.readouterr().err


def test_info_table_and_json(tmp_path, dark_dng, capsys):
    assert main(["info", str(dark_dng)]) == 0
    table = capsys.readouterr().out
    assert "CFA pattern" in table and "RGGB" in table
    assert main(["info", "--json", str(dark_dng)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cfa"] == "RGGB" and data["width"] == 96 and data["height"] == 64
    assert data["wb_gains"] == pytest.approx([2.1, 1.0, 1.6], rel=1e-3)


def test_info_runtime_says_what_runs_the_default_model(dark_dng, capsys, monkeypatch):
    import darkraw.nn.enhance as enhance

    monkeypatch.setattr(enhance, "cpu_bf16_fast", lambda: False)
    monkeypatch.setattr(enhance, "cpu_int8_fast", lambda: False)
    monkeypatch.setattr(enhance, "openvino_available", lambda: False)
    monkeypatch.setattr(enhance, "x86_cpu", lambda: True)
    assert main(["info", "--runtime", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["default_model"] == "int8 (CPUExecutionProvider)"
    monkeypatch.setattr(enhance, "x86_cpu", lambda: False)
    assert main(["info", "--runtime", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["default_model"] == "fp32 (CPUExecutionProvider)"
    assert data["default_passes"].startswith("8 up to 1.5625, 4 up to 3.125, 2 up to 6.25 Mpixel")
    assert data["default_xtrans"].startswith("its X-Trans twin (--model xtrans)")
    assert data["demosaic"] == "AHD on Bayer files, Markesteijn 1-pass on X-Trans ones"
    assert data["libraw"].count(".") == 2
    assert isinstance(data["native_bf16"], bool) and data["onnxruntime"]
    # With files too, the machine comes first, then the files' table; in JSON one document.
    assert main(["info", "--runtime", str(dark_dng)]) == 0
    out = capsys.readouterr().out
    assert out.index("default model runs in") < out.index("CFA pattern")
    assert main(["info", "--runtime", "--json", str(dark_dng)]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["runtime"]["default_model"] == data["default_model"]
    assert [f["cfa"] for f in both["files"]] == ["RGGB"]
    with pytest.raises(SystemExit) as exc:
        main(["info"])
    assert exc.value.code == 2 and "INPUT" in capsys.readouterr().err


def test_info_runtime_names_the_extras_missing(capsys, monkeypatch):
    import darkraw.nn.runtime as runtime

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert not runtime.openvino_available()
    assert main(["info", "--runtime"]) == 0
    out = capsys.readouterr().out
    assert "not installed (pip install 'darkraw[openvino]')" in out
    assert "compiled models kept in" in out and "nowhere (OpenVINO is not installed)" in out


def test_info_runtime_says_where_compiled_models_are_kept(capsys, monkeypatch, tmp_path):
    import darkraw.nn.runtime as runtime

    if not runtime.openvino_available():
        pytest.skip("OpenVINO is not installed (darkraw[openvino])")
    assert main(["info", "--runtime", "--json"]) == 0  # DARKRAW_CACHE_DIR empty (conftest)
    assert json.loads(capsys.readouterr().out)["compiled_models"] == (
        "nowhere (DARKRAW_CACHE_DIR is set empty)"
    )
    monkeypatch.setenv("DARKRAW_CACHE_DIR", str(tmp_path / "models"))
    assert main(["info", "--runtime", "--json"]) == 0
    kept = json.loads(capsys.readouterr().out)["compiled_models"]
    assert kept.startswith(f"{tmp_path / 'models'} (set DARKRAW_CACHE_DIR to move it")


def test_info_bad_file_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.dng"
    bad.write_bytes(b"II*\x00garbage")
    assert main(["info", str(bad)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_bare_mosaic_options(tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.full((16, 16), 300, np.uint16))
    assert main(["info", str(tmp_path / "m.npy"), "--pattern", "GBRG"]) == 1
    assert "--pattern and --white-level" in capsys.readouterr().err
    args = ["info", str(tmp_path / "m.npy"), "--pattern", "GBRG", "--white-level", "1023"]
    assert main(args) == 0


def test_usage_errors_exit_2(dark_dng):
    with pytest.raises(SystemExit) as exc:
        main(["enhance", str(dark_dng), "-o", "x.png", "--ratio", "-3"])
    assert exc.value.code == 2


def test_demo(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--denoise", "nlm"]) == 0
    comparison = read_image(tmp_path / "demo" / "comparison.png")
    classic = read_image(tmp_path / "demo" / "sample_classic.png")
    network = read_image(tmp_path / "demo" / "sample_network.png")
    assert network.shape == classic.shape
    assert comparison.shape[2] > 2 * classic.shape[2] * comparison.shape[1] / classic.shape[1]
    assert classic.mean() > 0.15 and network.mean() > 0.15
    captured = capsys.readouterr()
    assert "sample_network.png" in captured.out
    assert "demo:" not in captured.err  # the step line shows on a terminal only


def test_demo_says_which_step_runs(tmp_path):
    from darkraw import progress
    from darkraw.demo import run_demo

    lines: list[str] = []
    with progress.listening(lines.append):
        run_demo(tmp_path, "nlm")
    assert lines[0] == "the network, measuring the noise"
    assert "the classic pipeline, denoising (NLM), plane 4/4" in lines
    assert lines[-1] == "writing"


def test_demo_hands_each_file_over_as_soon_as_it_is_written(tmp_path):
    from darkraw.demo import run_demo

    seen: list[tuple[str, bool, bool]] = []

    def written(name, path):
        seen.append((name, path.exists(), (tmp_path / "sample_classic.png").exists()))

    paths = run_demo(tmp_path, "nlm", on_written=written)
    # The network's picture before the classic pipeline has run at all.
    assert seen == [("network", True, False), ("classic", True, True), ("comparison", True, True)]
    assert list(paths) == ["network", "classic", "comparison"]


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "darkraw", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "darkraw" in result.stdout


def test_outputs_get_the_usual_permissions(tmp_path, dark_dng):
    out = tmp_path / "perm.png"
    old = os.umask(0o022)
    try:
        assert main([*ENHANCE_CLASSIC, str(dark_dng), "-o", str(out), "--denoise", "none"]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_truncated_dng_single_input(tmp_path, dark_dng, capfd):
    cut = tmp_path / "cut.dng"
    cut.write_bytes(dark_dng.read_bytes()[:5000])
    out = tmp_path / "cut.png"
    assert main(["enhance", str(cut), "-o", str(out)]) == 1
    err = capfd.readouterr().err  # file-descriptor level: LibRaw's own C messages too
    assert f"{cut}: corrupt or truncated raw data" in err
    assert "Traceback" not in err and "Unexpected end of file" not in err
    assert not out.exists()


def test_empty_folder_is_reported_by_name(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["enhance", str(empty), "-o", str(tmp_path / "out")]) == 1
    assert f"{empty}: no raw files found here" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def photos(tmp_path):
    """Two small sRGB photos in a folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        rgb = np.moveaxis(smooth_scene(48, 64, seed=i), 0, -1)
        Image.fromarray(np.rint(rgb * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_simulate_flat_writes_dngs_and_summary(tmp_path, photos, capsys):
    from darkraw.raw.rawio import read_raw

    out = tmp_path / "pairs"
    args = ["simulate", str(photos), "-o", str(out), "--ratios", "100,300", "--seed", "3"]
    assert main(args) == 0
    assert only_files(out) == [
        "p0_clean.dng",
        "p0_reference.png",
        "p0_x100.dng",
        "p0_x300.dng",
        "p1_clean.dng",
        "p1_reference.png",
        "p1_x100.dng",
        "p1_x300.dng",
        "pairs.tsv",
        "simulate.json",
    ]
    clean = read_raw(out / "p0_clean.dng").meta.exposure_time
    assert clean / read_raw(out / "p0_x300.dng").meta.exposure_time == pytest.approx(300)
    assert "2 inputs, 0 failed: 8 files written, 0 skipped" in capsys.readouterr().err

    assert main(args) == 0
    assert "0 failed: 0 files written, 8 skipped" in capsys.readouterr().err


def test_simulate_sid_layout(tmp_path, photos):
    out = tmp_path / "sid"
    args = ["simulate", str(photos), "-o", str(out), "--layout", "sid", "--split", "val"]
    assert main([*args, "--model", "simple", "--bursts", "2"]) == 0
    lines = (out / "Sony_val_list.txt").read_text().splitlines()
    assert len(lines) == 2 * 3 * 2
    assert lines[0] == "./short/20001_00_0.1s.dng ./long/20001_00_10s.dng ISO200 F8"
    assert "./short/20002_01_0.033s.dng ./long/20002_00_10s.dng ISO200 F8" in lines
    assert (out / "Sony_train_list.txt").read_text() == ""


def test_a_single_input_that_fails_is_one_line(tmp_path, photos, capsys):
    bad = photos / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    missing, empty = tmp_path / "missing.png", tmp_path / "empty"
    empty.mkdir()
    for command in ("simulate", "enhance"):
        for item in (bad, missing, empty):
            assert main([command, str(item), "-o", str(tmp_path / "out")]) == 1
            lines = capsys.readouterr().err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"darkraw: error: {item}: "), lines
    assert main(["simulate", str(missing), str(empty), "-o", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[2:] == [
        "2 inputs, 2 failed: 0 files written, 0 skipped",
        f"  failed: {missing}: no such file or folder",
        f"  failed: {empty}: no photos or raw files found",
    ]


def test_simulate_bad_input_exit_1(tmp_path, photos, capsys):
    bad = photos / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "pairs"
    assert main(["simulate", str(photos), "-o", str(out), "--ratios", "100"]) == 1
    err = capsys.readouterr().err
    assert "3 inputs, 1 failed: 6 files written, 0 skipped" in err
    assert f"failed: {bad}: cannot read the photo" in err
    assert "Traceback" not in err
    assert (out / "p1_x100.dng").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ratios", "0.5"], "ratios must be numbers >= 1"),
        (["--ratios", "100,x"], "comma-separated numbers"),
        (["--model", "fancy"], "invalid choice: 'fancy'"),
        (["--seed", "-1"], "expected a number >= 0"),
        (["--bursts", "0"], "expected a number >= 1"),
    ],
)
def test_simulate_bad_arguments_exit_2(tmp_path, photos, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", str(photos), "-o", str(tmp_path / "x"), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_simulate_unknown_camera_or_sid_ratio_is_a_one_line_usage_error(tmp_path, photos, capsys):
    out = str(tmp_path / "x")
    assert main(["simulate", str(photos), "-o", out, "--camera", "Nokia3310"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown camera 'Nokia3310'" in err[0]
    assert main(["simulate", str(photos), "-o", out, "--layout", "sid", "--ratios", "500"]) == 2
    assert "caps ratios at 300" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_simulate_figure(tmp_path, photos, capsys):
    out = tmp_path / "figs"
    assert main(["simulate", str(photos / "p0.png"), "-o", str(out), "--figure"]) == 0
    assert only_files(out) == ["p0_figure3.png"]
    figure = read_image(out / "p0_figure3.png")
    # Five 64-pixel panels and four 6-pixel gaps.
    assert figure.shape[2] == 5 * 64 + 4 * 6
    assert "1 input, 0 failed: 1 file written, 0 skipped" in capsys.readouterr().err


def test_simulate_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("default: calibrated", "default: SonyA7S2", "default: 100,250,300"):
        assert default in text
    assert "Figure 3" in text


@pytest.fixture
def dng_folder(tmp_path):
    folder = tmp_path / "raws"
    folder.mkdir()
    for i, pattern in enumerate(["RGGB", "GBRG"]):
        mosaic, meta = mosaic_from_rgb(smooth_scene(30, 46, seed=i), pattern)
        dark, dark_meta = darken_mosaic(mosaic, meta, 50, np.random.default_rng(i))
        write_dng(folder / f"dark{i}.dng", dark, dark_meta)
    Image.new("RGB", (32, 32)).save(folder / "bad.dng", format="JPEG")
    return folder


def test_enhance_network_batch_goes_on_past_a_bad_file(
    tmp_path, tiny_model_file, dng_folder, capsys
):
    out = tmp_path / "results"
    args = ["enhance", str(dng_folder), "-o", str(out), "--method", "network"]
    assert main([*args, "--model", str(tiny_model_file), "--tile", "16", "--overlap", "0"]) == 1
    assert only_files(out) == ["dark0.png", "dark1.png"]
    assert read_image(out / "dark1.png").shape == (3, 30, 46)
    captured = capsys.readouterr()
    assert "2 written, 0 skipped, 1 failed" in captured.err
    assert f"{dng_folder / 'bad.dng'}: not a raw photo" in captured.err
    assert "network" in captured.out and "Traceback" not in captured.err


@pytest.mark.parametrize("content", [None, b"garbage", b"\x80\x04pickle"])
def test_enhance_network_bad_model_is_one_line_and_writes_nothing(
    tmp_path, dark_dng, capsys, content
):
    model = tmp_path / "model.safetensors"
    if content is not None:
        model.write_bytes(content)
    out = tmp_path / "results"
    assert main(["enhance", str(dark_dng), "-o", str(out), "--model", str(model)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"darkraw: error: {model}: ")
    assert not out.exists()


def test_enhance_default_model_absent_is_one_line(tmp_path, dark_dng, capsys, monkeypatch):
    import darkraw.nn.modelfiles

    monkeypatch.setattr(darkraw.nn.modelfiles, "bundled_model_path", lambda name: tmp_path / "none")
    out = tmp_path / "out.png"
    assert main(["enhance", str(dark_dng), "-o", str(out), "--method", "network"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no default model is bundled" in err[0]
    assert not out.exists()


def test_enhance_with_the_bundled_small_model(tmp_path, dark_dng, capsys):
    out = tmp_path / "out.png"
    assert main(["enhance", str(dark_dng), "-o", str(out), "--model", "small"]) == 0
    assert read_image(out).shape == (3, 64, 96)
    assert "Traceback" not in capsys.readouterr().err


def test_enhance_network_single_file_and_xtrans_refused(
    tmp_path, tiny_model_file, dark_dng, capsys
):

    from conftest import xtrans_meta

    out = tmp_path / "out.tif"
    assert main(["enhance", str(dark_dng), "-o", str(out), "--model", str(tiny_model_file)]) == 0
    assert tifffile.imread(out).shape == (64, 96, 3)
    meta = xtrans_meta()
    xt = write_dng(tmp_path / "xt.dng", np.full((36, 48), 1100, np.uint16), meta)
    assert main(
        ["enhance", str(xt), "-o", str(tmp_path / "xt.png"), "--model", str(tiny_model_file)]
    )
    err = capsys.readouterr().err
    assert f"error: {xt}: the model takes Bayer raw" in err
    assert not (tmp_path / "xt.png").exists()


def test_enhance_an_xtrans_file_with_the_default_models_xtrans_twin(tmp_path, capsys):
    """The default model runs its X-Trans twin on an X-Trans file: a picture rendered by LibRaw
    (the frame is LibRaw's least X-Trans size), and as a DNG the clean X-Trans mosaic."""
    from darkraw.raw.rawio import read_raw

    from conftest import XTRANS, smooth_scene, xtrans_meta

    rgb = smooth_scene(516, 522, seed=3)
    colours = np.tile(XTRANS, (86, 87))
    linear = np.take_along_axis(rgb, colours[None], axis=0)[0]
    rng = np.random.default_rng(0)
    mosaic = 1024 + rng.poisson(linear * (16383 - 1024) / 50) + rng.normal(0, 2, linear.shape)
    meta = xtrans_meta(516, 522, wb_gains=(1.8, 1.0, 1.5))
    xt = write_dng(tmp_path / "xt.dng", np.clip(np.rint(mosaic), 0, 16383).astype(np.uint16), meta)
    png, dng = tmp_path / "xt.png", tmp_path / "xt-clean.dng"
    assert main(["enhance", str(xt), "-o", str(png), "--ratio", "50"]) == 0
    line = capsys.readouterr().out
    assert f"{xt} -> {png}" in line and "model default" in line
    assert "8 passes (the frame in all eight mirrorings and turns)" in line
    assert read_image(png).shape == (3, 516, 522)
    assert main(["enhance", str(xt), "-o", str(dng), "--ratio", "50"]) == 0
    back = read_raw(dng)
    assert back.meta.is_xtrans and back.mosaic.shape == (516, 522)
    assert back.meta.cfa_tile == meta.cfa_tile


@pytest.mark.parametrize(
    "extra",
    [
        ["--tile", "100"],
        ["--overlap", "-16"],
        ["--tile", "x"],
        ["--ensemble", "3"],
        ["--ensemble", "0"],
        ["--ensemble", "x"],
    ],
)
def test_enhance_network_bad_tiles_exit_2(tmp_path, dark_dng, extra):
    with pytest.raises(SystemExit) as exc:
        main(["enhance", str(dark_dng), "-o", str(tmp_path / "o.png"), *extra])
    assert exc.value.code == 2


def test_options_of_the_other_method_or_tile_too_small_exit_2(tmp_path, dark_dng, capsys):
    out = tmp_path / "o.png"
    args = ["enhance", str(dark_dng), "-o", str(out)]
    assert main([*args, "--method", "classic", "--model", "m.safetensors", "--tile", "64"]) == 2
    assert "--model, --tile apply to --method network only" in capsys.readouterr().err
    # The network is the default method, so classic-only options need --method classic.
    assert main([*args, "--denoise", "nlm", "--wb", "gray"]) == 2
    assert "--denoise, --wb apply to --method classic only" in capsys.readouterr().err
    assert main([*args, "--denoise", "nlm"]) == 2
    assert "--denoise applies to --method classic only" in capsys.readouterr().err
    assert main([*args, "--method", "network", "--tile", "64", "--overlap", "32"]) == 2
    assert "leaves no centre" in capsys.readouterr().err
    assert not out.exists()


def test_the_command_lines_choices_are_the_libraries():
    from darkraw.nn.rawdenoise import Renderer
    from darkraw.raw.rawio import Demosaic

    enhance = build_parser()._subparsers._group_actions[0].choices["enhance"]
    choices = {action.dest: action.choices for action in enhance._actions}
    assert choices["demosaic"] == [d.value for d in Demosaic]
    assert sorted(choices["render"]) == sorted(r.value for r in Renderer)


def test_demosaic_reaches_libraws_rendering(tmp_path, dark_dng):
    def enhanced(*extra):
        out = tmp_path / f"o{'_'.join(extra)}.tif"
        assert main(["enhance", str(dark_dng), "-o", str(out), "--ratio", "50", *extra]) == 0
        return read_image(out)

    auto, best, fast = enhanced(), enhanced("--demosaic", "best"), enhanced("--demosaic", "fast")
    np.testing.assert_array_equal(auto, best)  # AHD on a Bayer file
    assert np.abs(fast - best).max() > 1e-3  # PPG


def test_demosaic_is_refused_where_libraw_does_not_render(tmp_path, dark_dng, capsys):
    out = tmp_path / "o.png"
    args = ["enhance", str(dark_dng), "-o", str(out), "--demosaic", "fast"]
    assert main([*args, "--render", "darkraw"]) == 2
    assert "--demosaic chooses LibRaw's demosaicking; it needs --render libraw" in (
        capsys.readouterr().err
    )
    assert main([*args, "--method", "classic"]) == 2
    assert "--demosaic applies to --method network only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*args[:-1], "amaze"])
    assert exc.value.code == 2
    assert not out.exists()


def test_rendering_options_are_refused_for_the_denoisers_dngs(tmp_path, dark_dng, capsys):
    single = ["enhance", str(dark_dng), "-o", str(tmp_path / "o.dng")]
    folder = ["enhance", str(dark_dng), "-o", str(tmp_path / "out"), "--format", "dng"]
    for args, extra in [
        (single, ["--gamma", "srgb"]),
        (single, ["--render", "libraw", "--demosaic", "best"]),
        (folder, ["--demosaic", "fast"]),
    ]:
        assert main([*args, *extra]) == 2
        flags = ", ".join(extra[::2])
        assert f"{flags} appl" in capsys.readouterr().err
    assert not (tmp_path / "o.dng").exists() and not (tmp_path / "out").exists()
    # A picture in a folder named like a DNG still takes them; so does the classic pipeline's DNG.
    named = tmp_path / "pictures.dng"
    named.mkdir()
    assert main(["enhance", str(dark_dng), "-o", str(named), "--gamma", "srgb"]) == 0
    classic = [*single, "--method", "classic", "--denoise", "none", "--gamma", "srgb"]
    assert main(classic) == 0


def test_enhance_precision_fp32_gives_the_exact_network_result(tmp_path, dark_dng, tiny_model_file):
    import darkraw
    from darkraw.nn.infer import InferenceOptions

    out = tmp_path / "exact.tif"
    args = ["enhance", str(dark_dng), "-o", str(out), "--ratio", "50"]
    assert main([*args, "--model", str(tiny_model_file), "--precision", "fp32"]) == 0
    expected = darkraw.enhance(
        dark_dng, model=tiny_model_file, ratio=50, inference=InferenceOptions(precision="fp32")
    )
    # 16-bit TIFF: within half a level of the fp32 result.
    assert np.abs(read_image(out).transpose(1, 2, 0) - expected).max() <= 0.5 / 65535 + 1e-7
    assert main([*args, "--method", "classic", "--precision", "fp32"]) == 2


def test_enhance_ensemble_gives_the_api_result(tmp_path, dark_dng, tiny_model_file):
    import darkraw
    from darkraw.nn.infer import InferenceOptions

    out = tmp_path / "ens.tif"
    args = ["enhance", str(dark_dng), "-o", str(out), "--ratio", "50", "--precision", "fp32"]
    assert main([*args, "--model", str(tiny_model_file), "--ensemble", "4"]) == 0
    options = InferenceOptions(precision="fp32", ensemble=4)
    expected = darkraw.enhance(dark_dng, model=tiny_model_file, ratio=50, inference=options)
    one_pass = InferenceOptions(precision="fp32", ensemble=1)
    plain = darkraw.enhance(dark_dng, model=tiny_model_file, ratio=50, inference=one_pass)
    got = read_image(out).transpose(1, 2, 0)
    assert np.abs(got - expected).max() <= 0.5 / 65535 + 1e-7
    assert np.abs(got - plain).max() > 1e-3


@pytest.mark.parametrize("flag", [[], ["--ensemble", "auto"], ["--ensemble", "AUTO"]])
def test_enhance_runs_the_whole_ensemble_on_a_small_photo_by_default(
    tmp_path, dark_dng, tiny_model_file, flag
):
    import darkraw
    from darkraw.nn.infer import InferenceOptions

    out = tmp_path / "auto.tif"
    args = ["enhance", str(dark_dng), "-o", str(out), "--ratio", "50", "--precision", "fp32"]
    assert main([*args, "--model", str(tiny_model_file), *flag]) == 0
    options = InferenceOptions(precision="fp32", ensemble=8)
    expected = darkraw.enhance(dark_dng, model=tiny_model_file, ratio=50, inference=options)
    assert np.abs(read_image(out).transpose(1, 2, 0) - expected).max() <= 0.5 / 65535 + 1e-7


def test_the_raw_denoiser_runs_eight_passes_on_a_small_frame_and_says_so(
    tmp_path, dark_dng, capsys
):
    import darkraw
    from darkraw.nn.rawdenoise import DenoiseOptions

    args = ["enhance", str(dark_dng), "--ratio", "50", "--precision", "fp32"]
    both, once = tmp_path / "auto.tif", tmp_path / "once.tif"
    assert main([*args, "-o", str(both)]) == 0
    assert "8 passes (the frame in all eight mirrorings and turns)" in capsys.readouterr().out
    assert main([*args, "-o", str(once), "--ensemble", "1"]) == 0
    assert "passes" not in capsys.readouterr().out
    options = DenoiseOptions(precision="fp32", ensemble=8)
    expected = darkraw.enhance(dark_dng, ratio=50, denoise=options)
    got = read_image(both).transpose(1, 2, 0)
    assert np.abs(got - expected).max() <= 0.5 / 65535 + 1e-7
    assert np.abs(got - read_image(once).transpose(1, 2, 0)).max() > 1e-3


def test_the_raw_denoiser_runs_four_passes_when_asked(tmp_path, dark_dng, capsys):
    out = tmp_path / "o.png"
    assert main(["enhance", str(dark_dng), "-o", str(out), "--ensemble", "4"]) == 0
    line = capsys.readouterr().out
    assert "4 passes (the frame, its transpose and both turned half round)" in line
    assert read_image(out).shape == (3, 64, 96)


def test_enhance_uses_the_bundled_network_by_default(tmp_path, dark_dng, capsys):
    out = tmp_path / "out.png"
    assert main(["enhance", str(dark_dng), "-o", str(out), "--ratio", "50"]) == 0
    assert read_image(out).shape == (3, 64, 96)
    assert "model default" in capsys.readouterr().out


def test_two_inputs_with_one_name_are_refused_before_anything_is_written(
    tmp_path, dark_dng, capsys
):
    twins = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        twins.append(tmp_path / folder / "x.dng")
        twins[-1].write_bytes(dark_dng.read_bytes())
    out = tmp_path / "out"
    assert main([*ENHANCE_CLASSIC, *map(str, twins), "-o", str(out), "--denoise", "none"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'x.png'}: both {twins[0]} and {twins[1]} would be written here" in err
    assert not out.exists() or not any(out.iterdir())


def test_strength_above_one_is_taken_up_to_the_bundled_models_limit(tmp_path, capsys):
    from darkraw.nn.rawdenoise import MAX_STRENGTH

    assert MAX_STRENGTH == 2.0
    parser = build_parser()
    args = parser.parse_args(["enhance", "x.dng", "-o", str(tmp_path), "--strength", "1.5"])
    assert args.strength == 1.5
    with pytest.raises(SystemExit):
        parser.parse_args(["enhance", "x.dng", "-o", str(tmp_path), "--strength", "2.5"])
    assert "strength must be from 0 to 2" in capsys.readouterr().err


def test_the_command_line_lets_glibc_keep_freed_memory(monkeypatch):
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    monkeypatch.setattr(cli, "_glibc_mallopt", lambda: mallopt)
    for name in cli._MALLOC_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert main(["info", "--runtime"]) == 0
    # One arena, arrays below 1 GiB from the heap, nothing trimmed (M_ARENA_MAX,
    # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).
    assert calls == [(-8, 1), (-3, 1 << 30), (-1, 2**31 - 1)]
    calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the user's word stands
    assert main(["info", "--runtime"]) == 0
    assert calls == []


def test_glibc_mallopt_is_found_on_glibc():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not running on glibc")
    mallopt = REAL_GLIBC_MALLOPT()
    assert mallopt is not None
    assert mallopt(-6, 0) == 1  # M_PERTURB 0, glibc's default: a real call that changes nothing


def test_the_command_line_stops_numpy_asking_for_huge_pages(monkeypatch, capsys):
    core = getattr(np, "_core", None) or np.core
    setter = core.multiarray._set_madvise_hugepage
    original = setter(True)
    try:
        monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
        assert main(["info", "--runtime"]) == 0
        assert setter(True) is False
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")  # the user's word stands
        assert main(["info", "--runtime"]) == 0
        assert setter(True) is True
    finally:
        setter(original)


def test_the_command_keeps_its_network_until_the_process_ends(tmp_path, dark_dng, monkeypatch):
    from darkraw.nn.enhance import is_denoiser

    # main() in a longer process (these tests) tears each batch's network down after it.
    monkeypatch.setattr(cli, "_KEPT_UNTIL_EXIT", None)
    assert main(["enhance", str(dark_dng), "-o", str(tmp_path / "a.png")]) == 0
    assert cli._KEPT_UNTIL_EXIT is None
    ended: list[int] = []

    def exit_here(code):
        ended.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_here)
    monkeypatch.setattr(sys, "argv", ["darkraw", "enhance", str(dark_dng), "-o", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli.run()
    assert ended == [0]
    kept = cli._KEPT_UNTIL_EXIT
    assert kept is not None and len(kept) == 1 and is_denoiser(kept[0])


def test_the_command_exits_at_once_with_its_output_flushed_and_its_code(tmp_path):
    # darkraw.cli.run ends the process with os._exit after main: nothing buffered may be lost.
    done = subprocess.run(
        [sys.executable, "-m", "darkraw", "info", "--runtime", "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "cpu_threads" in json.loads(done.stdout)
    missing = tmp_path / "missing.dng"
    done = subprocess.run(
        [sys.executable, "-m", "darkraw", "enhance", str(missing), "-o", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    # One file's failure is one line, flushed before the process ends.
    assert done.stderr.splitlines() == [f"darkraw: error: {missing}: no such file"]
