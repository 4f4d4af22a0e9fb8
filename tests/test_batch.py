"""A batch reports files in order, goes on past bad ones, skips existing outputs and prints what
the raw denoiser did to each file."""

from __future__ import annotations

import numpy as np
import pytest

from darkraw.batch import enhance_batch
from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions
from darkraw.errors import OutputError
from darkraw.nn.rawdenoise import DenoiseOptions
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
        [folder],
        tmp_path / "out",
        log=lines.append,
        progress=False,
        model="default",
        denoise=DenoiseOptions(black_offset="darkest"),  # exact on a frame this small
    )
    assert report.ok, report.failed
    assert "black offset -" in lines[0]


def test_the_network_is_kept_only_where_the_caller_asks(tmp_path):
    from darkraw.nn.enhance import is_denoiser

    files = dark_dngs(tmp_path / "in", 1)
    kept: list[object] = []
    report = enhance_batch(
        files, tmp_path / "out", log=lambda _: None, progress=False, model="default", keep=kept
    )
    assert report.ok and len(kept) == 1 and is_denoiser(kept[0])
    classic = enhance_batch(
        files, tmp_path / "classic", FAST, log=lambda _: None, progress=False, keep=kept
    )
    assert classic.ok and len(kept) == 1  # the classic pipeline loads no network


def test_a_picture_that_fails_to_render_fails_its_file_alone_in_order(tmp_path, monkeypatch):
    # The default network's pictures are rendered in a second thread while the next file goes
    # through the network; a failure there is the file's own, reported in the files' order.
    import darkraw.nn.rawdenoise as rawdenoise
    from darkraw.errors import RawReadError

    files = dark_dngs(tmp_path / "in", 3)
    render = rawdenoise.render_mosaic_with_libraw

    def failing_on_the_second(source, *args, **kwargs):
        if source is not None and source.name == "f1.dng":
            raise RawReadError(source, "LibRaw could not render it (test)")
        return render(source, *args, **kwargs)

    monkeypatch.setattr(rawdenoise, "render_mosaic_with_libraw", failing_on_the_second)
    lines: list[str] = []
    report = enhance_batch(
        files, tmp_path / "out", log=lines.append, progress=False, model="default"
    )
    assert [p.name for p in report.written] == ["f0.png", "f2.png"]
    assert [(p, problem) for p, problem in report.failed] == [
        (files[1], "LibRaw could not render it (test)")
    ]
    assert [line.split(" -> ")[0] for line in lines] == [str(files[0]), str(files[2])]
    assert not (tmp_path / "out" / "f1.png").exists()


def test_a_started_file_writes_nothing_until_its_write(tmp_path):
    from darkraw.batch import start_file
    from darkraw.nn.enhance import load_network
    from darkraw.nn.rawdenoise import DenoisedResult

    (source,) = dark_dngs(tmp_path / "in", 1)
    out = tmp_path / "out" / "x.png"
    out.parent.mkdir()
    started = start_file(source, out, model=load_network("default"))
    result = started.render()
    assert isinstance(result, DenoisedResult) and result.rgb16 is not None
    assert list(out.parent.iterdir()) == []
    started.write(result)
    assert [p.name for p in out.parent.iterdir()] == ["x.png"]


def test_a_dng_of_the_clean_mosaic_renders_no_picture(tmp_path, monkeypatch):
    import darkraw.nn.rawdenoise as rawdenoise
    from darkraw.batch import enhance_file
    from darkraw.nn.enhance import load_network
    from darkraw.nn.rawdenoise import DenoisedFrame
    from darkraw.raw.rawio import read_raw

    (source,) = dark_dngs(tmp_path / "in", 1)
    model = load_network("default")
    png = enhance_file(source, tmp_path / "x.png", model=model)

    def no_rendering(*args, **kwargs):
        raise AssertionError("a DNG output rendered a picture")

    monkeypatch.setattr(rawdenoise, "render_mosaic_with_libraw", no_rendering)
    frame = enhance_file(source, tmp_path / "x.dng", model=model)
    assert isinstance(frame, DenoisedFrame)
    # The same clean mosaic as the picture's, in the DNG (rounded to whole DN).
    np.testing.assert_array_equal(frame.mosaic_dn, png.mosaic_dn)
    np.testing.assert_array_equal(read_raw(tmp_path / "x.dng").mosaic, np.rint(png.mosaic_dn))


def test_every_batch_renders_in_the_same_long_lived_thread(tmp_path, monkeypatch):
    # LibRaw's OpenMP team belongs to the thread that renders: one thread for the process
    # makes it once, not once per batch from a thread that then ends. The last file, with no
    # network work to overlap, is rendered in the calling thread.
    import threading

    import darkraw.nn.rawdenoise as rawdenoise

    files = dark_dngs(tmp_path / "in", 3)
    render = rawdenoise.render_mosaic_with_libraw
    threads: list[threading.Thread] = []

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread())
        return render(*args, **kwargs)

    monkeypatch.setattr(rawdenoise, "render_mosaic_with_libraw", recorded)
    for run in ("a", "b"):
        report = enhance_batch(
            files, tmp_path / run, log=lambda _: None, progress=False, model="default"
        )
        assert report.ok
    main = threading.main_thread()
    assert len(threads) == 6 and threads[2] is main and threads[5] is main
    rendering = {threads[0], threads[1], threads[3], threads[4]}
    assert len(rendering) == 1 and main not in rendering
    assert threads[0].is_alive()


def test_the_denoisers_pictures_render_from_the_decoding_that_was_read(
    tmp_path, imreads, monkeypatch
):
    # Each file is decoded once: LibRaw renders the clean mosaic in the handle read_raw kept,
    # even when a rendering starts late, after the next files were read. The classic pipeline
    # keeps none.
    import time

    import darkraw.nn.rawdenoise as rawdenoise
    import darkraw.raw.rawio as rawio

    render = rawdenoise.render_mosaic_with_libraw

    def late(*args, **kwargs):
        time.sleep(0.3)
        return render(*args, **kwargs)

    monkeypatch.setattr(rawdenoise, "render_mosaic_with_libraw", late)
    files = dark_dngs(tmp_path / "in", 4)
    report = enhance_batch(
        files, tmp_path / "net", log=lambda _: None, progress=False, model="default"
    )
    assert report.ok and sorted(imreads) == [str(f) for f in files]
    assert all(rawio._DECODED.take(f) is None for f in files)
    enhance_batch(files, tmp_path / "classic", FAST, log=lambda _: None, progress=False)
    assert all(rawio._DECODED.take(f) is None for f in files)


def test_a_folders_subfolders_are_mirrored_under_the_output_folder(tmp_path):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    days = [dark_dngs(shoot / day, 1)[0] for day in ("day1", "day2")]
    top = dark_dngs(shoot / "top", 1)[0].rename(shoot / "top.dng")
    out = tmp_path / "out"
    report = enhance_batch([shoot], out, FAST, log=lambda _: None, progress=False)
    assert report.written == [out / "day1" / "f0.png", out / "day2" / "f0.png", out / "top.png"]
    assert not report.failed
    # A file given as itself goes to the output folder's top, wherever it lies.
    again = enhance_batch([days[1], top], tmp_path / "flat", FAST, log=lambda _: None)
    assert again.written == [tmp_path / "flat" / "f0.png", tmp_path / "flat" / "top.png"]


def test_a_mirrored_subfolder_that_cannot_be_made_fails_before_any_frame(tmp_path):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    dark_dngs(shoot / "day1", 1)
    dark_dngs(shoot / "day2", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "day2").write_bytes(b"a file where a folder is needed")
    with pytest.raises(OutputError, match=r"day2: cannot create output folder \(it is a file\)"):
        enhance_batch([shoot], out, FAST, log=lambda _: None, progress=False)
    assert not list(out.rglob("*.png"))


def test_a_folders_only_file_in_a_subfolder_is_written_in_that_subfolder(tmp_path):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    dark_dngs(shoot / "day1", 1)
    out = tmp_path / "out"
    report = enhance_batch([shoot], out, FAST, log=lambda _: None, progress=False)
    assert report.written == [out / "day1" / "f0.png"]


def test_a_file_reached_twice_is_enhanced_once(tmp_path):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    (f0,) = dark_dngs(shoot / "day1", 1)
    out = tmp_path / "out"
    again = shoot / "day1" / ".." / "day1" / "f0.dng"
    report = enhance_batch([shoot, again, f0], out, FAST, log=lambda _: None, progress=False)
    assert report.written == [out / "day1" / "f0.png"] and not report.failed
    # Named first, it goes where a file named goes: the output folder's top.
    report = enhance_batch([f0, shoot], tmp_path / "o2", FAST, log=lambda _: None)
    assert report.written == [tmp_path / "o2" / "f0.png"]
