"""Output paths, folder scans and messages of the command line (issue 26, items 2, 6, 11-16).

Each test makes its own tiny files and runs ``darkraw.cli.main`` in the process, except the
broken-pipe test, which needs a real pipe and a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

import darkraw.batch
from darkraw.cli import build_parser, main
from darkraw.raw.dng import write_dng
from darkraw.synth.simulate import darken_mosaic

from conftest import ENHANCE_CLASSIC, mosaic_from_rgb, smooth_scene

BARE = ["--pattern", "RGGB", "--white-level", "1023"]
FAST = [*ENHANCE_CLASSIC, "--denoise", "none"]


def mosaic_png(path: Path, seed: int = 0) -> Path:
    """A 16-bit single-channel PNG: a bare mosaic."""
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(64, 1023, (24, 32), dtype=np.uint16))
    return path


def dark_dng(path: Path, seed: int = 0) -> Path:
    mosaic, meta = mosaic_from_rgb(smooth_scene(24, 32, seed=seed), "RGGB")
    dark, dark_meta = darken_mosaic(mosaic, meta, 50, np.random.default_rng(seed))
    return write_dng(path, dark, dark_meta)


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def no_computing(monkeypatch):
    """Fail the test if a frame is rendered: output checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a frame was computed before the output was checked")

    monkeypatch.setattr(darkraw.batch, "run_classic", refuse)


# --- item 2: no output is ever an input -------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "through ..", "symlink", "hard link"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_output_that_is_the_input_is_refused(tmp_path, capsys, how, overwrite):
    folder = tmp_path / "in"
    folder.mkdir()
    mosaic = mosaic_png(folder / "mosaic.png")
    before = mosaic.read_bytes()
    out = {
        "same path": mosaic,
        "through ..": folder / ".." / "in" / "mosaic.png",
        "symlink": tmp_path / "link.png",
        "hard link": tmp_path / "hard.png",
    }[how]
    if how == "symlink":
        out.symlink_to(mosaic)
    elif how == "hard link":
        os.link(mosaic, out)
    assert main([*FAST, str(mosaic), "-o", str(out), *BARE, *overwrite]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"darkraw: error: {out}: ") and "input" in lines[0]
    assert mosaic.read_bytes() == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_written_into_itself_keeps_its_mosaics(tmp_path, capsys, overwrite):
    folder = tmp_path / "in"
    folder.mkdir()
    mosaic_png(folder / "m1.png")
    tifffile.imwrite(folder / "m2.tif", np.full((24, 32), 300, np.uint16))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main([*FAST, str(folder), "-o", str(folder), *BARE, *overwrite]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert lines == [
        f"darkraw: error: {folder / 'm1.png'}: is an input; darkraw never writes "
        "over an input (choose another output)"
    ]
    # Nothing written: not even m2.png, whose name no input has.
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# --- item 6: the ratio is bounded -------------------------------------------------------------


@pytest.mark.parametrize("ratio", ["100000", "1e30", "10000.5", "0.5", "0", "nan", "inf"])
def test_ratio_out_of_range_is_a_usage_error_naming_the_limit(tmp_path, capsys, ratio):
    dng = dark_dng(tmp_path / "d.dng")
    with pytest.raises(SystemExit) as exc:
        main([*FAST, str(dng), "-o", str(tmp_path / "o.png"), "--ratio", ratio])
    assert exc.value.code == 2
    assert "ratio must be between 1 and 10000" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(("text", "value"), [("1", 1.0), ("10000", 10000.0), ("auto", None)])
def test_ratio_limits_themselves_are_accepted(text, value):
    args = build_parser().parse_args(["enhance", "x.dng", "-o", "x.png", "--ratio", text])
    assert args.ratio == value


# --- item 11: outputs inside the input folder are not inputs ----------------------------------


def test_rerun_with_the_output_folder_inside_the_input_folder(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    mosaic_png(folder / "m1.png", 1)
    mosaic_png(folder / "m2.png", 2)
    out = folder / "out"
    args = [*FAST, str(folder), "-o", str(out), *BARE]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["m1.png", "m2.png"]
    capsys.readouterr()
    assert main(args) == 0
    err = error_lines(capsys.readouterr().err)
    assert err == [
        "0 written, 2 skipped, 0 failed (folder scans left out 2 files in the output folder)"
    ]


def test_raw_files_in_an_output_folder_inside_the_input_folder_are_still_read(tmp_path, capsys):
    folder = tmp_path / "in"
    out = folder / "out"
    out.mkdir(parents=True)
    mosaic_png(folder / "m.png")
    dark_dng(out / "d.dng")
    args = [*FAST, str(folder), "-o", str(out), *BARE]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["d.dng", "d.png", "m.png"]
    capsys.readouterr()
    assert main(args) == 0
    err = error_lines(capsys.readouterr().err)
    assert err == [
        "0 written, 2 skipped, 0 failed (folder scans left out 2 files in the output folder)"
    ]


# --- item 12: every output location is checked before any computing ---------------------------


def test_a_single_output_gets_its_missing_folder(tmp_path):
    dng = dark_dng(tmp_path / "d.dng")
    out = tmp_path / "new" / "deeper" / "x.png"
    assert main([*FAST, str(dng), "-o", str(out)]) == 0
    assert out.is_file()


@pytest.mark.parametrize("several", [False, True])
def test_an_output_under_a_file_fails_before_computing(tmp_path, capsys, no_computing, several):
    dng = dark_dng(tmp_path / "d.dng")
    inputs = [str(dng), str(dark_dng(tmp_path / "e.dng", 1))] if several else [str(dng)]
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = blocker / "out" if several else blocker / "x.png"
    assert main([*FAST, *inputs, "-o", str(out)]) == 1
    lines = error_lines(capsys.readouterr().err)
    expected = (
        f"darkraw: error: {out}: cannot create output folder (Not a directory)"
        if several
        else f"darkraw: error: {out}: cannot create output folder {blocker} (it is a file)"
    )
    assert lines == [expected]
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize("single", [True, False])
def test_a_write_protected_folder_fails_before_computing(
    tmp_path, capsys, monkeypatch, no_computing, single
):
    """Root writes anyway, so the kernel's answer is faked; the real one is below."""
    dng = dark_dng(tmp_path / "d.dng")
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    out = folder / "x.png" if single else folder
    assert main([*FAST, str(dng), "-o", str(out)]) == 1
    lines = error_lines(capsys.readouterr().err)
    where = f"{out}: cannot write in {folder}" if single else f"{folder}: cannot write here"
    assert lines == [f"darkraw: error: {where} (permission denied)"]
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_a_really_read_only_folder_fails_before_computing(tmp_path, capsys, no_computing):
    dng = dark_dng(tmp_path / "d.dng")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main([*FAST, str(dng), "-o", str(folder / "x.png")]) == 1
        assert "permission denied" in capsys.readouterr().err
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_a_read_only_folder_whose_outputs_all_exist_is_still_skipped(tmp_path, monkeypatch):
    dng = dark_dng(tmp_path / "d.dng")
    out = tmp_path / "out"
    assert main([*FAST, str(dng), "-o", str(out)]) == 0
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    assert main([*FAST, str(dng), "-o", str(out)]) == 0


def test_an_output_that_is_a_folder_fails_before_computing(tmp_path, capsys, no_computing):
    dng = dark_dng(tmp_path / "d.dng")
    out = tmp_path / "out"
    (out / "d.png").mkdir(parents=True)
    assert main([*FAST, str(dng), "-o", str(out), "--overwrite"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert lines == [f"darkraw: error: {out / 'd.png'}: is a folder, not an image file"]


# --- item 13: unknown output formats and files where a folder is needed -----------------------


@pytest.mark.parametrize("name", ["out.heic", "out.webp", "out.npy", "out.NEF"])
def test_an_unknown_image_extension_is_an_error_listing_the_formats(tmp_path, capsys, name):
    dng = dark_dng(tmp_path / "d.dng")
    out = tmp_path / name
    assert main([*FAST, str(dng), "-o", str(out)]) == 1
    lines = error_lines(capsys.readouterr().err)
    suffix = Path(name).suffix.lower()
    assert lines == [
        f"darkraw: error: {out}: darkraw does not write {suffix} images; name a .png, .jpg, "
        ".jpeg, .tif, .tiff or .dng file, or a folder"
    ]
    assert not out.exists()


def test_an_existing_folder_with_an_image_like_name_is_still_a_folder(tmp_path):
    dng = dark_dng(tmp_path / "d.dng")
    out = tmp_path / "shots.webp"
    out.mkdir()
    assert main([*FAST, str(dng), "-o", str(out)]) == 0
    assert (out / "d.png").is_file()


@pytest.mark.parametrize("several", [True, False])
def test_an_existing_file_as_output_says_what_is_wrong(tmp_path, capsys, no_computing, several):
    inputs = [dark_dng(tmp_path / "d.dng")]
    if several:
        inputs.append(dark_dng(tmp_path / "e.dng", 1))
    out = tmp_path / "notes"
    out.write_text("keep me")
    assert main([*FAST, *map(str, inputs), "-o", str(out)]) == 1
    lines = error_lines(capsys.readouterr().err)
    problem = (
        "is a file; several inputs need a folder"
        if several
        else "is a file; name a .png, .jpg, .jpeg, .tif, .tiff or .dng image, or a folder"
    )
    assert lines == [f"darkraw: error: {out}: {problem}"]
    assert out.read_text() == "keep me"


# --- item 14: hidden files in folders are left out, and counted -------------------------------


def test_hidden_files_in_a_folder_are_left_out_and_counted(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    dark_dng(folder / "d.dng")
    (folder / "._d.dng").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (folder / ".DS_Store").write_bytes(b"junk without a raw extension: not counted")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.ARW").write_bytes(b"junk")
    out = tmp_path / "out"
    assert main([*FAST, str(folder), "-o", str(out)]) == 0
    lines = error_lines(capsys.readouterr().err)
    assert lines == ["1 written, 0 skipped, 0 failed (folder scans left out 2 hidden files)"]
    assert sorted(p.name for p in out.iterdir()) == ["d.png"]


def test_a_hidden_file_named_on_the_command_line_is_read(tmp_path, capsys):
    hidden = dark_dng(tmp_path / ".d.dng")
    out = tmp_path / "x.png"
    assert main([*FAST, str(hidden), "-o", str(out)]) == 0
    assert out.is_file()


# --- item 15: info ----------------------------------------------------------------------------


def test_info_into_a_closed_pipe_exits_quietly(tmp_path):
    dng = dark_dng(tmp_path / "d.dng")
    read_end, write_end = os.pipe()
    os.close(read_end)  # what `| head` does once it has its lines
    try:
        result = subprocess.run(
            [sys.executable, "-m", "darkraw", "info", str(dng), str(dng)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as if the signal had ended it


def test_info_reads_folders_as_enhance_does(tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    dark_dng(folder / "a.dng")
    dark_dng(folder / "sub" / "b.dng", 1)
    (folder / "._a.dng").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not raw")
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"{folder / 'a.dng'}" in out and f"{folder / 'sub' / 'b.dng'}" in out
    assert "._a.dng" not in out and "notes.txt" not in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["info", str(empty)]) == 1
    assert error_lines(capsys.readouterr().err) == [
        f"darkraw: error: {empty}: no raw files found here"
    ]


def test_info_on_a_bare_mosaic_without_metadata_prints_only_the_error(tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.full((16, 16), 300, np.uint16))
    assert main(["info", str(tmp_path / "m.npy")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(error_lines(captured.err)) == 1


# --- item 16: one error prefix, help for every command ----------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["enhance", "x.dng", "-o", "x.png", "--ratio", "x"],
        ["enhance", "x.dng"],
        ["info"],
        ["demo", "--denoise", "magic"],
        ["no-such-command"],
    ],
)
def test_usage_errors_carry_the_one_prefix(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("darkraw: error: "), err
    assert not any(": error: " in line for line in err[:-1])


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ("info", "Print what raw files say about themselves"),
        ("demo", "the dark raw sample that comes with darkraw"),
    ],
)
def test_info_and_demo_have_descriptions(capsys, command, phrase):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert phrase in text
