"""The batch overlaps one file's writing with the next file's computation, and still reports
files in order, goes on past bad ones and writes in the main thread."""

from __future__ import annotations

import threading
import time

import numpy as np

import darkraw.batch as batch
from darkraw.batch import enhance_batch
from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions
from darkraw.raw.dng import write_dng
from darkraw.synth.simulate import darken_mosaic

from conftest import mosaic_from_rgb, smooth_scene

FAST = ClassicOptions(denoiser=Denoiser.NONE)


def dark_dngs(folder, count):
    folder.mkdir()
    for i in range(count):
        mosaic, meta = mosaic_from_rgb(smooth_scene(24, 32, seed=i), "RGGB")
        dark, dark_meta = darken_mosaic(mosaic, meta, 20, np.random.default_rng(i))
        write_dng(folder / f"f{i}.dng", dark, dark_meta)
    return sorted(folder.iterdir())


def test_the_next_file_is_computed_while_this_one_is_written(tmp_path, monkeypatch):
    files = dark_dngs(tmp_path / "in", 3)
    events: list[tuple[str, str, float]] = []
    render, write = batch._render, batch._write

    def slow_render(raw, *args):
        events.append(("render start", raw.path.name, time.monotonic()))
        return render(raw, *args)

    def slow_write(dst, *args):
        assert threading.current_thread() is threading.main_thread()
        events.append(("write start", dst.name, time.monotonic()))
        time.sleep(0.3)
        write(dst, *args)
        events.append(("write end", dst.name, time.monotonic()))

    monkeypatch.setattr(batch, "_render", slow_render)
    monkeypatch.setattr(batch, "_write", slow_write)
    lines: list[str] = []
    report = enhance_batch(files, tmp_path / "out", FAST, log=lines.append, progress=False)
    assert [p.name for p in report.written] == ["f0.png", "f1.png", "f2.png"]
    when = {(kind, name): t for kind, name, t in events}
    assert when["render start", "f1.dng"] < when["write end", "f0.png"]
    assert when["render start", "f2.dng"] < when["write end", "f1.png"]
    assert [line.split(" -> ")[0] for line in lines] == [str(f) for f in files]


def test_a_bad_file_in_the_middle_fails_alone_and_reports_in_order(tmp_path):
    files = dark_dngs(tmp_path / "in", 3)
    files[1].write_bytes(b"not a raw file")
    lines: list[str] = []
    report = enhance_batch(files, tmp_path / "out", FAST, log=lines.append, progress=False)
    assert [p.name for p in report.written] == ["f0.png", "f2.png"]
    assert [p for p, _ in report.failed] == [files[1]]
    assert [line.split(" -> ")[0] for line in lines] == [str(files[0]), str(files[2])]


def test_existing_outputs_are_skipped_between_computed_files(tmp_path):
    files = dark_dngs(tmp_path / "in", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "f1.png").write_bytes(b"keep")
    lines: list[str] = []
    report = enhance_batch(files, out, FAST, log=lines.append, progress=False)
    assert [p.name for p in report.written] == ["f0.png", "f2.png"]
    assert [p.name for p in report.skipped] == ["f1.png"]
    assert (out / "f1.png").read_bytes() == b"keep"
    assert "f1.png: exists, skipped" in lines[1]


def test_a_black_offset_the_denoiser_takes_out_is_on_the_files_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    mosaic, meta = mosaic_from_rgb(smooth_scene(64, 96), "RGGB")
    meta = meta.replace(black_tile=((64.0, 64.0), (64.0, 64.0)), white_level=16383.0)
    scene = mosaic.astype(np.float64) / float(mosaic.max()) * (16383 - 64) * 0.002
    rng = np.random.default_rng(0)
    # The frame's black reads 1.5 DN below the file's black level, dark regions included.
    dark = rng.poisson(scene) + rng.normal(0, 2, scene.shape) + 64 - 1.5
    dark[:16] = rng.normal(0, 2, dark[:16].shape) + 64 - 1.5
    write_dng(folder / "low.dng", np.clip(np.rint(dark), 0, 16383).astype(np.uint16), meta)
    lines: list[str] = []
    report = enhance_batch(
        [folder], tmp_path / "out", log=lines.append, progress=False, model="default"
    )
    assert report.ok, report.failed
    assert "black offset -" in lines[0]
