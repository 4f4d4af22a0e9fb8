"""Tests of ``render_mosaic_with_libraw``: LibRaw's rendering of a replaced raw mosaic."""

import tempfile

import numpy as np
import pytest
import tifffile
from PIL import Image

from darkraw.errors import DarkrawError, RawReadError
from darkraw.raw.cfa import BayerPattern
from darkraw.raw.dng import write_dng
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import (
    LIBRAW_MIN_XTRANS_SIDE,
    Demosaic,
    read_raw,
    render_mosaic_with_libraw,
    render_with_libraw,
)

from conftest import XTRANS, mosaic_from_rgb, psnr, shared_data, smooth_scene, xtrans_meta

PATTERNS = [p.value for p in BayerPattern]

#: A saturated red and a mid grey, in linear sRGB.
RED = (0.6, 0.04, 0.04)
GREY = (0.3, 0.3, 0.3)


def flat_scene(rgb: tuple[float, float, float], height: int = 32, width: int = 48) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb)[:, None, None], (3, height, width)).copy()


def scene_dng(tmp_path, pattern="RGGB", rgb=None, name="scene.dng", **meta_changes):
    """A small DNG of a smooth scene (or a flat colour), and what read_raw gives back."""
    scene = smooth_scene(32, 48) if rgb is None else flat_scene(rgb)
    mosaic, meta = mosaic_from_rgb(scene, pattern)
    path = write_dng(tmp_path / name, mosaic, meta.replace(**meta_changes))
    return path, read_raw(path)


def margin_dng(tmp_path, mosaic_with_margins, top, left):
    """An RGGB DNG whose ActiveArea leaves ``top`` rows and ``left`` columns of margin."""
    h, w = mosaic_with_margins.shape
    path = tmp_path / "margins.dng"
    identity_xyz = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)
    tifffile.imwrite(
        path,
        mosaic_with_margins,
        photometric=32803,
        planarconfig="contig",
        compression=None,
        metadata=None,
        extratags=[
            (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
            (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
            (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
            (50708, "s", 0, "margin test", True),  # UniqueCameraModel
            (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
            (50711, "H", 1, 1, True),  # CFALayout
            (50714, "I", 1, 512, True),  # BlackLevel
            (50717, "I", 1, 16383, True),  # WhiteLevel
            (50721, "2i", 9, identity_xyz, True),  # ColorMatrix1
            (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
            (50728, "2I", 3, (1, 2, 1, 1, 1, 2), True),  # AsShotNeutral
            (50829, "I", 4, (top, left, h, w), True),  # ActiveArea
        ],
    )
    return path


@pytest.mark.parametrize("half_size", [False, True])
def test_unchanged_mosaic_renders_exactly_as_libraw_renders_the_file(tmp_path, half_size):
    path, raw = scene_dng(tmp_path, "GRBG", flip=6)
    want = render_with_libraw(path, half_size=half_size)
    got = render_mosaic_with_libraw(path, raw.mosaic, raw.meta, half_size=half_size)
    assert got.dtype == np.float32
    assert got.shape == want.shape == ((3, 24, 16) if half_size else (3, 48, 32))
    np.testing.assert_array_equal(got, want)


def test_replaced_mosaic_is_what_gets_rendered(tmp_path):
    path, raw = scene_dng(tmp_path)
    before = render_mosaic_with_libraw(path, raw.mosaic, raw.meta)
    doubled = render_mosaic_with_libraw(path, raw.mosaic.astype(np.float64) * 2, raw.meta)
    assert doubled.mean() > before.mean() + 0.1
    # The file itself is untouched: LibRaw rendered a copy of its data in memory.
    np.testing.assert_array_equal(read_raw(path).mosaic, raw.mosaic)


def test_gamma_one_gives_linear_output(tmp_path):
    path, raw = scene_dng(tmp_path, rgb=GREY)
    encoded = render_mosaic_with_libraw(path, raw.mosaic, raw.meta)
    linear = render_mosaic_with_libraw(path, raw.mosaic, raw.meta, gamma=(1.0, 1.0))
    # Grey 0.3 through the white-balance and colour matrices LibRaw inverts back to ~0.3.
    assert float(np.median(linear)) == pytest.approx(0.3, abs=0.01)
    assert float(np.median(encoded)) > 0.5
    with pytest.raises(ValueError, match=r"gamma must be .*got \(0.0, 4.5\)"):
        render_mosaic_with_libraw(path, raw.mosaic, raw.meta, gamma=(0.0, 4.5))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_bare_mosaic_renders_close_to_the_file_it_came_from(tmp_path, pattern):
    path, raw = scene_dng(tmp_path, pattern)
    from_file = render_mosaic_with_libraw(path, raw.mosaic, raw.meta)
    bare = render_mosaic_with_libraw(None, raw.mosaic, raw.meta)
    assert bare.shape == from_file.shape
    # Measured: all but a handful of values agree within 3 codes of 65535 (the colour matrix
    # read back from the file is rewritten as DNG rationals); a few pixels near edges flip
    # AHD's demosaicking direction, up to 0.02. Mean |diff| <= 2e-5, PSNR >= 69 dB.
    diff = np.abs(bare - from_file)
    assert float(np.quantile(diff, 0.99)) < 1e-4
    assert float(diff.mean()) < 1e-4
    assert psnr(bare, from_file) > 60


def test_temporary_dng_is_removed(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    mosaic, meta = mosaic_from_rgb(smooth_scene(32, 48), "GBRG")
    assert render_mosaic_with_libraw(None, mosaic, meta).shape == (3, 32, 48)
    assert list(scratch.iterdir()) == []


def test_bare_mosaic_file_as_source_renders_through_a_dng(tmp_path):
    mosaic, meta = mosaic_from_rgb(smooth_scene(32, 48), "BGGR")
    np.save(tmp_path / "m.npy", mosaic)
    got = render_mosaic_with_libraw(tmp_path / "m.npy", mosaic, meta)
    np.testing.assert_array_equal(got, render_mosaic_with_libraw(None, mosaic, meta))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_bayer_layout_keeps_red_red(tmp_path, pattern):
    # The file holds grey; the red mosaic put in its place must come out red, both ways.
    path, raw = scene_dng(tmp_path, pattern, rgb=GREY)
    red, red_meta = mosaic_from_rgb(flat_scene(RED), pattern)
    for source in (path, None):
        r, g, b = render_mosaic_with_libraw(source, red, red_meta).mean(axis=(1, 2))
        assert r > 0.6 and r > 4 * g and r > 4 * b, (source, r, g, b)
    grey = render_mosaic_with_libraw(path, raw.mosaic, raw.meta).mean(axis=(1, 2))
    np.testing.assert_allclose(grey, grey.mean(), atol=0.01)


def test_values_beyond_white_are_clipped_not_wrapped(tmp_path):
    path, raw = scene_dng(tmp_path)
    white = np.full(raw.mosaic.shape, raw.meta.white_level)
    saturated = render_mosaic_with_libraw(path, white, raw.meta)
    assert saturated.min() > 0.9
    # 70000 would wrap to 4464 DN (dark) in uint16; -300 to 65236 (saturated).
    for source in (path, None):
        beyond = render_mosaic_with_libraw(source, white + 70000 - white.max(), raw.meta)
        np.testing.assert_array_equal(beyond, saturated)
        below = render_mosaic_with_libraw(source, np.full(white.shape, -300.0), raw.meta)
        assert below.max() == 0


def test_mosaic_goes_back_inside_the_margins(tmp_path):
    top, left = 4, 6
    rng = np.random.default_rng(0)
    full = rng.integers(600, 4000, (40, 56)).astype(np.uint16)
    full[:top] = 60000  # masked rows and columns, kept as they are
    full[:, :left] = 60000
    path = margin_dng(tmp_path, full, top, left)
    raw = read_raw(path)
    assert raw.mosaic.shape == (36, 50)
    np.testing.assert_array_equal(raw.mosaic, full[top:, left:])
    np.testing.assert_array_equal(
        render_mosaic_with_libraw(path, raw.mosaic, raw.meta), render_with_libraw(path)
    )
    # A new scene in the visible area renders as the same mosaic without margins does: a
    # mosaic written at the buffer's corner instead would be shifted by (4, 6) pixels.
    scene, _ = mosaic_from_rgb(smooth_scene(36, 50, seed=3), "RGGB", wb=(2.0, 1.0, 2.0))
    in_file = render_mosaic_with_libraw(path, scene, raw.meta)
    bare = render_mosaic_with_libraw(None, scene, raw.meta)
    assert psnr(in_file, bare) > 60  # measured: identical
    shifted = np.roll(scene, (top, left), axis=(0, 1))
    assert psnr(render_mosaic_with_libraw(None, shifted, raw.meta), bare) < 30


def test_wrong_shape_names_both_shapes(tmp_path):
    path, raw = scene_dng(tmp_path)
    with pytest.raises(ValueError, match=r"\(32, 40\).*\(32, 48\)"):
        render_mosaic_with_libraw(path, raw.mosaic[:, :40], raw.meta)
    # Consistent with its metadata, but not with the file's visible area.
    small_meta = raw.meta.replace(height=30, width=40)
    with pytest.raises(ValueError, match=r"\(30, 40\).*\(32, 48\).*scene\.dng"):
        render_mosaic_with_libraw(path, raw.mosaic[:30, :40], small_meta)


def test_non_finite_mosaic_is_refused(tmp_path):
    path, raw = scene_dng(tmp_path)
    bad = raw.mosaic.astype(np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        render_mosaic_with_libraw(path, bad, raw.meta)


def test_file_errors_are_one_line_and_name_the_file(tmp_path):
    mosaic, meta = mosaic_from_rgb(smooth_scene(32, 48), "RGGB")
    with pytest.raises(RawReadError, match=r"gone\.dng: no such file"):
        render_mosaic_with_libraw(tmp_path / "gone.dng", mosaic, meta)
    jpeg = tmp_path / "photo.ARW"
    Image.new("RGB", (48, 32), (200, 10, 10)).save(jpeg, format="JPEG")
    with pytest.raises(RawReadError, match=r"photo\.ARW: not a raw photo.*source=None"):
        render_mosaic_with_libraw(jpeg, mosaic, meta)


def test_linear_dng_holds_no_mosaic_to_replace(tmp_path):
    path = tmp_path / "linear.dng"
    tifffile.imwrite(
        path,
        np.full((32, 48, 3), 3000, np.uint16),
        photometric=34892,  # LinearRaw: LibRaw decodes colour planes, no flat raw_image
        planarconfig="contig",
        compression=None,
        metadata=None,
        extratags=[(50706, "B", 4, (1, 4, 0, 0), True), (50717, "I", 1, 16383, True)],
    )
    meta = RawMetadata.for_bayer("RGGB", 32, 48)
    with pytest.raises(RawReadError, match=r"linear\.dng: holds no single-plane mosaic"):
        render_mosaic_with_libraw(path, np.zeros((32, 48)), meta)


def test_too_small_bare_mosaic_is_a_one_line_error():
    meta = RawMetadata.for_bayer("RGGB", 16, 20, white_level=1023)
    with pytest.raises(DarkrawError, match=r"22x22 pixels and larger, got 16x20"):
        render_mosaic_with_libraw(None, np.zeros((16, 20)), meta)


def test_kodak_file_renders_its_own_mosaic_as_libraw_does():
    path = shared_data("raw", "RAW_KODAK_DC50.KDC")
    raw = read_raw(path)
    np.testing.assert_array_equal(
        render_mosaic_with_libraw(path, raw.mosaic, raw.meta), render_with_libraw(path)
    )


def test_white_point_adjustment_is_off_unless_asked():
    """LibRaw lowers its white point to a peak between 0.75 and 1 of white; the denoiser's
    renderer does not, so a picture's brightness does not hang on its brightest pixel."""
    path = shared_data("raw", "RAW_KODAK_DC50.KDC")
    raw = read_raw(path)
    capped = np.minimum(raw.mosaic, 0.85 * raw.meta.white_level)
    plain = render_mosaic_with_libraw(path, capped, raw.meta)
    adjusted = render_mosaic_with_libraw(path, capped, raw.meta, adjust_maximum=True)
    assert adjusted.mean() > 1.03 * plain.mean()
    np.testing.assert_array_equal(plain, render_mosaic_with_libraw(path, capped, raw.meta))


def xtrans_dng(tmp_path):
    """An X-Trans DNG of a smooth scene, of the least size LibRaw renders, read back."""
    side = LIBRAW_MIN_XTRANS_SIDE
    rgb = smooth_scene(side, side + 6)
    colours = np.tile(XTRANS, (side // 6 + 1, side // 6 + 2))[:side, : side + 6]
    linear = np.take_along_axis(rgb, colours[None], axis=0)[0]
    mosaic = np.rint(1024 + linear * (16383 - 1024)).astype(np.uint16)
    meta = xtrans_meta(side, side + 6, wb_gains=(1.8, 1.0, 1.5))
    path = write_dng(tmp_path / "x.dng", mosaic, meta)
    return path, read_raw(path)


@pytest.mark.parametrize("layout", ["bayer", "xtrans"])
def test_auto_demosaic_is_ahd_on_bayer_files_and_one_pass_on_xtrans(tmp_path, layout):
    path, raw = scene_dng(tmp_path) if layout == "bayer" else xtrans_dng(tmp_path)
    rendered = {
        d.value: render_mosaic_with_libraw(path, raw.mosaic, raw.meta, demosaic=d) for d in Demosaic
    }
    # best is LibRaw's own choice (AHD; Markesteijn's three passes on X-Trans).
    np.testing.assert_array_equal(rendered["best"], render_with_libraw(path, adjust_maximum=False))
    assert np.abs(rendered["fast"] - rendered["best"]).max() > 1e-3  # another algorithm ran
    assert psnr(rendered["fast"], rendered["best"]) > 30  # of the same picture
    same = "best" if layout == "bayer" else "fast"
    np.testing.assert_array_equal(rendered["auto"], rendered[same])


def test_demosaic_names_are_checked():
    assert (
        Demosaic.parse("fast") is Demosaic.FAST and Demosaic.parse(Demosaic.BEST) is Demosaic.BEST
    )
    with pytest.raises(ValueError, match="demosaicking 'amaze'; expected one of auto, best, fast"):
        Demosaic.parse("amaze")
    assert Demosaic.AUTO.resolved(xtrans=True) is Demosaic.FAST
    assert Demosaic.AUTO.resolved(xtrans=False) is Demosaic.BEST
    assert Demosaic.FAST.resolved(xtrans=False) is Demosaic.FAST
    assert Demosaic.BEST.describe() == "AHD on Bayer files, Markesteijn 3-pass on X-Trans ones"
    assert Demosaic.FAST.describe() == "PPG on Bayer files, Markesteijn 1-pass on X-Trans ones"
