"""darkraw.classic.filters: the numpy paths agree with OpenCV's, and darkraw runs without OpenCV."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from darkraw.classic import filters
from darkraw.classic.denoise import (
    Denoiser,
    denoise_planes,
    denoiser_available,
    estimate_noise,
    resolve_denoiser,
)
from darkraw.classic.filters import box_mean, filter2d, max_filter, resize_area
from darkraw.classic.pipeline import ClassicOptions, demosaic, run_classic
from darkraw.errors import DarkrawError
from darkraw.synth.noiselevel import estimate_raw_noise

from conftest import mosaic_from_rgb, smooth_scene, xtrans_meta

SHAPES = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 3), (2, 5), (4, 4), (5, 5), (6, 9), (17, 32)]
TOL = 1e-5


@pytest.fixture
def numpy_only(monkeypatch):
    """Neither OpenCV nor bm3d importable, as after a plain ``pip install darkraw``."""
    monkeypatch.setattr(filters, "USE_OPENCV", False)
    monkeypatch.setitem(sys.modules, "bm3d", None)


def both_paths(fn, *args):
    """``fn(*args)`` through OpenCV, then through numpy."""
    pytest.importorskip("cv2")
    assert filters.opencv() is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(filters, "USE_OPENCV", False)
        assert filters.opencv() is None
        ours = fn(*args)
    return fn(*args), ours


def random_plane(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kshape", [(3, 3), (5, 5), (4, 4), (2, 3)])
def test_filter2d_matches_opencv_even_on_images_smaller_than_the_kernel(shape, kshape):
    kernel = np.random.default_rng(1).normal(size=kshape).astype(np.float32)
    kernel[0, -1] = 0.0  # a skipped tap
    expected, ours = both_paths(filter2d, random_plane(shape), kernel)
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_allclose(ours, expected, atol=TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 11])  # shifted sums, cumulative sums
def test_box_mean_matches_opencv_blur(shape, size):
    expected, ours = both_paths(box_mean, random_plane(shape), size)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_max_filter_matches_opencv_dilate(shape, size):
    image = random_plane(shape)
    flags = (image > 0.8).astype(np.uint8)
    for plane in (image, flags):
        expected, ours = both_paths(max_filter, plane, size)
        assert ours.dtype == plane.dtype
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 5), (17, 32), (64, 63), (212, 318)])
@pytest.mark.parametrize("factor", [1.0, 0.5, 0.37, 2 / 3, 0.01])
def test_resize_area_matches_opencv(shape, factor):
    h, w = shape
    size = (max(1, round(w * factor)), max(1, min(h, round(h * factor * 1.1))))
    expected, ours = both_paths(resize_area, random_plane(shape), size)
    assert ours.shape == (size[1], size[0]) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=TOL)


def test_hand_checked_values(numpy_only):
    impulse = np.zeros((5, 5), np.float32)
    impulse[2, 2] = 1.0
    kernel = np.arange(9, dtype=np.float32).reshape(3, 3)
    # Correlation: an impulse comes out as the kernel turned half a turn.
    np.testing.assert_array_equal(filter2d(impulse, kernel)[1:4, 1:4], kernel[::-1, ::-1])
    # Reflect-101: [1, 2, 3] is read as 2 1 2 3 2 (and a single row as itself above and below).
    row = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(box_mean(row, 3), [[5 / 3, 2.0, 7 / 3]], rtol=1e-6)
    flags = np.array([[1, 0, 0, 0, 1, 0, 0]], np.uint8)
    np.testing.assert_array_equal(max_filter(flags, 3), [[1, 1, 0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(max_filter(flags.astype(bool), 3), [[1, 1, 0, 1, 1, 1, 0]])
    line = np.array([[3.0, 6.0, 9.0, 12.0]], np.float32)
    np.testing.assert_allclose(resize_area(line, (2, 1)), [[4.5, 10.5]], rtol=1e-6)
    # Three pixels into two: cells of 1.5 pixels, the middle one shared.
    np.testing.assert_allclose(resize_area(line[:, :3], (2, 1)), [[4.0, 8.0]], rtol=1e-6)


@pytest.mark.parametrize("use_opencv", [True, False])
def test_bad_arguments_are_refused(monkeypatch, use_opencv):
    monkeypatch.setattr(filters, "USE_OPENCV", use_opencv)
    plane = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"\(H, W\).*\(2, 4, 4\)"):
        filter2d(np.zeros((2, 4, 4), np.float32), np.ones((3, 3)))
    with pytest.raises(ValueError, match="positive integer"):
        box_mean(plane, 0)
    with pytest.raises(ValueError, match="positive integer"):
        max_filter(plane, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only shrinks"):
        resize_area(plane, (5, 4))


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_demosaic_without_opencv_matches(pattern):
    dn, meta = mosaic_from_rgb(smooth_scene(22, 30), pattern)
    mosaic = dn.astype(np.float32) / 16383
    expected, ours = both_paths(demosaic, mosaic, meta)
    np.testing.assert_allclose(ours, expected, atol=TOL)


def test_xtrans_demosaic_without_opencv_matches():
    rng = np.random.default_rng(2)
    mosaic = rng.random((36, 48)).astype(np.float32)
    expected, ours = both_paths(demosaic, mosaic, xtrans_meta())
    np.testing.assert_allclose(ours, expected, atol=TOL)


def test_noise_estimates_without_opencv_match():
    rng = np.random.default_rng(3)
    clean = np.stack([smooth_scene(64, 80, seed=s)[0] for s in range(4)]).astype(np.float32)
    noisy = clean + rng.normal(0, np.sqrt(0.002 * clean + 1e-5)).astype(np.float32)
    noisy[0, :4, :] = 1.0  # a clipped strip, so that the near-clip flags matter
    expected, ours = both_paths(estimate_raw_noise, np.clip(noisy, 0, 1))
    np.testing.assert_allclose(ours.shot, expected.shot, rtol=1e-4)
    np.testing.assert_allclose(ours.read, expected.read, rtol=1e-4, atol=1e-12)
    expected, ours = both_paths(estimate_noise, noisy)
    assert ours.shot == pytest.approx(expected.shot, rel=1e-4)
    assert ours.read == pytest.approx(expected.read, rel=1e-4, abs=1e-12)


def test_classic_pipeline_without_opencv_matches():
    dn, meta = mosaic_from_rgb(smooth_scene(24, 32) * 0.05, "BGGR")
    options = ClassicOptions(ratio=8.0, denoiser=Denoiser.NONE)
    expected, ours = both_paths(run_classic, dn, meta, options)
    np.testing.assert_allclose(ours.image, expected.image, atol=TOL)
    assert ours.wb_gains == pytest.approx(expected.wb_gains)


@pytest.mark.parametrize("method", ["nlm", "bm3d", "auto"])
def test_classic_denoiser_without_its_package_names_the_extra(numpy_only, method):
    assert not denoiser_available(method)
    planes = np.random.default_rng(4).random((4, 16, 16)).astype(np.float32)
    with pytest.raises(DarkrawError, match=r"pip install 'darkraw\[classic\]'") as err:
        denoise_planes(planes, method)
    assert "\n" not in str(err.value)
    with pytest.raises(DarkrawError, match=r"darkraw\[classic\]"):
        run_classic((planes[0] * 1000).astype(np.uint16), _meta(16), ClassicOptions(1.0, method))
    np.testing.assert_array_equal(denoise_planes(planes, "none"), planes)


def test_auto_takes_the_denoiser_that_is_installed(monkeypatch):
    pytest.importorskip("cv2")
    pytest.importorskip("bm3d")
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "bm3d", None)
        assert resolve_denoiser("auto", 1000) is Denoiser.NLM
    monkeypatch.setattr(filters, "USE_OPENCV", False)
    assert resolve_denoiser("auto", 10**8) is Denoiser.BM3D


def test_demo_renders_the_classic_pane_undenoised_without_the_extra(
    numpy_only, monkeypatch, tmp_path
):
    import darkraw.demo as demo

    seen = []

    def fake_enhance(mosaic, meta, network, ratio, source):
        return SimpleNamespace(
            image=run_classic(mosaic, meta, ClassicOptions(ratio, Denoiser.NONE)).image
        )

    def fake_run_classic(mosaic, meta, options):
        seen.append(options.denoiser)
        return run_classic(mosaic, meta, options)

    monkeypatch.setattr(demo, "load_network", lambda model: model)
    monkeypatch.setattr(demo, "enhance_mosaic", fake_enhance)
    monkeypatch.setattr(demo, "run_classic", fake_run_classic)
    with pytest.warns(demo.ClassicNotDenoisedWarning, match=r"darkraw\[classic\]"):
        paths = demo.run_demo(tmp_path)
    assert seen == [Denoiser.NONE, Denoiser.NONE] and paths["comparison"].exists()
    with pytest.raises(DarkrawError, match=r"darkraw\[classic\]"):
        demo.run_demo(tmp_path, denoiser="nlm")


def _meta(size):
    _, meta = mosaic_from_rgb(smooth_scene(size, size), "RGGB")
    return meta
