"""Tests of ``darkraw.progress``: steps reach a listener of the same thread, parts name them."""

import threading

from darkraw import progress


def heard(work):
    """The lines ``work()`` says to a listener of this thread."""
    lines: list[str] = []
    with progress.listening(lines.append):
        work()
    return lines


def test_steps_reach_the_listener_inside_their_parts():
    def work():
        progress.step("reading")
        with progress.part("a.dng"):
            with progress.part("pass 2/8"):
                progress.step("network, window 3/4")
            progress.step("rendering")

    assert heard(work) == ["reading", "a.dng, pass 2/8, network, window 3/4", "a.dng, rendering"]


def test_nobody_listening_hears_nothing_and_listeners_end_with_their_block():
    lines: list[str] = []
    progress.step("unheard")  # no listener: nothing happens
    with progress.listening(lines.append):
        pass
    progress.step("after")
    assert lines == []


def test_another_threads_steps_are_not_heard():
    def work():
        thread = threading.Thread(target=progress.step, args=("elsewhere",))
        thread.start()
        thread.join()
        progress.step("here")

    assert heard(work) == ["here"]


def test_a_batchs_bar_shows_where_its_file_has_got_to(tmp_path, capsys):
    from darkraw.batch import enhance_batch
    from darkraw.classic.pipeline import ClassicOptions
    from darkraw.raw.dng import write_dng

    from conftest import mosaic_from_rgb, smooth_scene

    path = write_dng(tmp_path / "frame.dng", *mosaic_from_rgb(smooth_scene(48, 64), "RGGB"))
    options = ClassicOptions(ratio=2.0, denoiser="nlm")
    report = enhance_batch([path], tmp_path / "out", options, progress=True, log=lambda _: None)
    assert len(report.written) == 1
    err = capsys.readouterr().err
    assert "frame.dng, denoising (NLM)" in err and "frame.dng, writing" in err
    assert "1/1" in err.rsplit("\r", 1)[-1] and "frame.dng" not in err.rsplit("\r", 1)[-1]
    # Without a bar (not a terminal, or asked) nobody listens.
    report = enhance_batch([path], tmp_path / "out2", options, progress=False, log=lambda _: None)
    assert len(report.written) == 1 and "frame.dng," not in capsys.readouterr().err


def test_a_file_found_in_a_subfolder_is_named_with_it_beside_the_bar(tmp_path, capsys):
    from darkraw.batch import enhance_batch
    from darkraw.classic.pipeline import ClassicOptions
    from darkraw.raw.dng import write_dng

    from conftest import mosaic_from_rgb, smooth_scene

    for day in ("day1", "day2"):
        (tmp_path / "shoot" / day).mkdir(parents=True)
        write_dng(
            tmp_path / "shoot" / day / "f.dng", *mosaic_from_rgb(smooth_scene(48, 64), "RGGB")
        )
    options = ClassicOptions(ratio=2.0, denoiser="none")
    report = enhance_batch(
        [tmp_path / "shoot"], tmp_path / "out", options, progress=True, log=lambda _: None
    )
    assert len(report.written) == 2
    err = capsys.readouterr().err
    assert "day1/f.dng, writing" in err and "day2/f.dng, writing" in err
