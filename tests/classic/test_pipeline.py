import numpy as np
import pytest

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import (
    AUTO_TARGET_MEAN,
    ClassicOptions,
    GammaCurve,
    WhiteBalance,
    amplify,
    auto_ratio,
    color_correct,
    color_correct_planes,
    demosaic,
    gamma_decode,
    gamma_encode,
    gray_world_gains,
    pack,
    render_planes,
    run_classic,
    subtract_black_level,
    uncorrect_planes,
    white_balance,
)
from darkraw.raw.cfa import BayerPattern, color_index_map, plane_colors
from darkraw.raw.dng import write_dng
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw, render_with_libraw

from conftest import WB, XTRANS, mosaic_from_rgb, psnr, shared_data, smooth_scene

NO_DENOISE = ClassicOptions(ratio=1.0, denoiser=Denoiser.NONE)


def test_subtract_black_level_per_position():
    meta = RawMetadata.for_bayer("RGGB", 2, 4, black_level=(100, 200, 300, 400), white_level=1100)
    mosaic = np.array([[100, 200, 600, 700], [300, 400, 1100, 1100]], dtype=np.uint16)
    out = subtract_black_level(mosaic, meta)
    np.testing.assert_allclose(out, [[0, 0, 0.5, 500 / 900], [0, 0, 1, 1]], rtol=1e-6)


def test_below_black_stays_negative_so_noise_keeps_zero_mean():
    meta = RawMetadata.for_bayer("RGGB", 2, 2, black_level=512, white_level=16383)
    out = subtract_black_level(np.full((2, 2), 500, np.uint16), meta)
    assert np.all(out < 0)


@pytest.mark.parametrize("curve", list(GammaCurve))
def test_gamma_round_trip_and_known_values(curve):
    x = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(gamma_decode(gamma_encode(x, curve), curve), x, atol=1e-7)
    assert gamma_encode(np.array(1.0), curve) == pytest.approx(1.0)
    assert np.all(np.diff(gamma_encode(x, curve)) > 0)
    if curve is GammaCurve.SRGB:
        assert gamma_encode(np.array(0.18), curve) == pytest.approx(0.4613561, abs=1e-6)
    else:
        assert gamma_encode(np.array(0.01), curve) == pytest.approx(0.045)


@pytest.mark.parametrize("pattern", list(BayerPattern))
def test_demosaic_constant_colour_is_exact(pattern):
    meta = RawMetadata.for_bayer(pattern, 10, 14)
    color = np.array([0.2, 0.5, 0.7], dtype=np.float32)
    mosaic = color[color_index_map(pattern, 10, 14)]
    rgb = demosaic(mosaic, meta)
    np.testing.assert_allclose(rgb, np.broadcast_to(color[:, None, None], rgb.shape), atol=1e-6)


@pytest.mark.parametrize("pattern", list(BayerPattern))
def test_demosaic_keeps_samples_and_reconstructs_smooth_scene(pattern):
    scene = smooth_scene(64, 80).astype(np.float32)
    idx = color_index_map(pattern, 64, 80)
    mosaic = np.take_along_axis(scene, idx[None], 0)[0]
    rgb = demosaic(mosaic, RawMetadata.for_bayer(pattern, 64, 80))
    np.testing.assert_array_equal(np.take_along_axis(rgb, idx[None], 0)[0], mosaic)
    assert psnr(rgb[:, 4:-4, 4:-4], scene[:, 4:-4, 4:-4]) > 40


def test_demosaic_xtrans_and_odd_sizes():
    scene = smooth_scene(37, 41).astype(np.float32)
    idx = np.tile(XTRANS, (7, 7))[:37, :41]
    mosaic = np.take_along_axis(scene, idx[None], 0)[0]
    meta = RawMetadata(
        cfa_tile=tuple(map(tuple, XTRANS)),
        black_tile=tuple(tuple([0.0] * 6) for _ in range(6)),
        white_level=1.0,
        height=37,
        width=41,
    )
    rgb = demosaic(mosaic, meta)
    assert rgb.shape == (3, 37, 41)
    assert psnr(rgb[:, 6:-6, 6:-6], scene[:, 6:-6, 6:-6]) > 30


def test_white_balance_clips_like_libraw():
    planes = np.full((4, 2, 2), 0.6, dtype=np.float32)
    out = white_balance(planes, (2.0, 1.0, 1.5))
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.6, 0.9, 0.6], rtol=1e-6)


def test_gray_world_equalizes_channel_means():
    planes = np.stack([np.full((3, 3), v, np.float32) for v in (0.1, 0.4, 0.2, 0.4)])
    assert gray_world_gains(planes) == pytest.approx((4.0, 1.0, 2.0))


def test_gray_world_is_not_biased_by_read_noise_below_black():
    # A dark blue channel in strong zero-mean noise: clipping the noise at zero would lift its
    # mean and give blue too small a gain.
    rng = np.random.default_rng(0)
    means = (0.02, 0.08, 0.01, 0.08)
    planes = np.stack([m + rng.normal(0.0, 0.05, (256, 256)) for m in means]).astype(np.float32)
    assert gray_world_gains(planes) == pytest.approx((4.0, 1.0, 8.0), rel=0.05)


def test_color_correct_identity_and_matrix():
    rgb = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32) * 0.5
    np.testing.assert_allclose(color_correct(rgb, None), rgb)
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    np.testing.assert_allclose(color_correct(rgb, swap), rgb[[1, 0, 2]])
    with pytest.raises(ValueError, match=r"\(3, H, W\), got \(4, 5\)"):
        color_correct(rgb[0], None)


@pytest.mark.parametrize("num_planes", [4, 9])
def test_color_correct_planes_matches_color_correct_on_flat_colour(num_planes):
    rgb = np.array([0.2, 0.5, 0.3], dtype=np.float32)
    colors = np.asarray(plane_colors(num_planes))
    planes = np.broadcast_to(rgb[colors][:, None, None], (num_planes, 3, 5)).copy()
    matrix = np.array([[1.6, -0.4, -0.2], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]])
    expected = color_correct(rgb[:, None, None], matrix)[:, 0, 0]
    out = color_correct_planes(planes, matrix)
    assert out.dtype == np.float32 and out.shape == planes.shape
    np.testing.assert_allclose(
        out, np.broadcast_to(expected[colors][:, None, None], out.shape), rtol=1e-6
    )
    np.testing.assert_allclose(color_correct_planes(planes * 3, None), np.clip(planes * 3, 0, 1))


@pytest.mark.parametrize("num_planes", [4, 9])
def test_uncorrect_planes_inverts_colour_correction_and_white_balance(num_planes):
    rng = np.random.default_rng(0)
    # Values for which neither step clips (each clips to [0, 1]).
    planes = (0.2 + 0.1 * rng.random((num_planes, 6, 7))).astype(np.float32)
    matrix = np.array([[1.6, -0.4, -0.2], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]])
    gains = (2.0, 1.0, 1.5)
    forward = color_correct_planes(white_balance(planes, gains), matrix)
    np.testing.assert_allclose(uncorrect_planes(forward, matrix, gains), planes, atol=1e-6)
    np.testing.assert_allclose(
        uncorrect_planes(white_balance(planes, gains), None, gains), planes, atol=1e-7
    )


def test_render_planes_is_the_classic_pipeline_after_denoising():
    mosaic, meta = mosaic_from_rgb(smooth_scene(20, 26), "GBRG")
    expected = run_classic(mosaic, meta.replace(flip=5), NO_DENOISE)
    planes = pack(subtract_black_level(mosaic, meta), meta)
    got = render_planes(planes, meta.replace(flip=5), expected.wb_gains)
    np.testing.assert_array_equal(got, expected.image)


@pytest.mark.parametrize("flip", [0, 1, 2, 3, 4, 5, 6, 7])
def test_orient_matches_libraw(tmp_path, flip):
    mosaic = np.zeros((24, 32), dtype=np.uint16)
    mosaic[:6, :4] = 16383
    mosaic[-2:, 10:20] = 8000
    meta = RawMetadata.for_bayer("RGGB", 24, 32, flip=flip)
    path = write_dng(tmp_path / "o.dng", mosaic, meta)
    ours = run_classic(mosaic, meta, NO_DENOISE).image
    libraw = render_with_libraw(path)
    assert ours.shape == libraw.shape
    mask_ours, mask_lr = ours.mean(0) > 0.5, libraw.mean(0) > 0.5
    assert (mask_ours & mask_lr).sum() >= 0.8 * mask_lr.sum() > 0


def test_amplify_and_auto_ratio():
    raw = np.full((40, 40), 0.001, dtype=np.float32)
    raw[0, 0] = 1.0  # a lamp: excluded from the mean
    assert auto_ratio(raw) == pytest.approx(AUTO_TARGET_MEAN / 0.001, rel=1e-3)
    assert auto_ratio(np.zeros((8, 8))) == 1000.0
    assert auto_ratio(np.full((8, 8), 0.5)) == 1.0
    np.testing.assert_allclose(amplify(raw, 10), raw * 10)
    with pytest.raises(ValueError, match="positive"):
        amplify(raw, -1)


@pytest.mark.parametrize("pattern", list(BayerPattern))
def test_classic_inverts_unprocessing_for_every_layout(pattern):
    scene = smooth_scene(48, 64)
    mosaic, meta = mosaic_from_rgb(scene, pattern)
    out = run_classic(mosaic, meta, NO_DENOISE).image
    expected = gamma_encode(scene)
    assert psnr(out[:, 4:-4, 4:-4], expected[:, 4:-4, 4:-4]) > 38


def test_classic_gray_world_when_file_has_no_white_balance():
    scene = np.full((3, 32, 32), 0.4)
    mosaic, meta = mosaic_from_rgb(scene, "RGGB", wb=WB)
    meta = meta.replace(wb_gains=None)
    result = run_classic(mosaic, meta, ClassicOptions(ratio=1.0, denoiser=Denoiser.NONE))
    assert result.wb_gains == pytest.approx(WB, rel=1e-2)
    none = run_classic(mosaic, meta, ClassicOptions(1.0, Denoiser.NONE, WhiteBalance.NONE))
    assert none.wb_gains == (1.0, 1.0, 1.0)


def test_classic_close_to_libraw_on_our_dng(tmp_path):
    mosaic, meta = mosaic_from_rgb(smooth_scene(96, 128), "GBRG")
    path = write_dng(tmp_path / "s.dng", mosaic, meta)
    raw = read_raw(path)
    ours = run_classic(raw.mosaic, raw.meta, NO_DENOISE).image
    assert psnr(ours[:, 8:-8, 8:-8], render_with_libraw(path)[:, 8:-8, 8:-8]) > 35


def test_classic_close_to_libraw_on_real_file():
    path = shared_data("raw", "Fusion_GPBK7066.DNG")
    raw = read_raw(path)
    ours = run_classic(raw.mosaic, raw.meta, NO_DENOISE).image
    ref = render_with_libraw(path)
    assert psnr(np.round(ours * 255), np.round(ref * 255), 255) > 38


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize(("h", "w"), [(8, 12), (7, 11)])
def test_rggb_view_mirrors_any_layout_to_rggb_and_back(pattern, h, w):
    from darkraw.classic.pipeline import rggb_view
    from darkraw.raw.cfa import BayerPattern, color_index_map
    from darkraw.raw.metadata import RawMetadata

    meta = RawMetadata.for_bayer(pattern, h, w, black_level=(10.0, 20.0, 30.0, 40.0), flip=5)
    mosaic = np.random.default_rng(0).uniform(50, 1000, (h, w)).astype(np.float32)
    view = rggb_view(mosaic, meta)
    assert view.meta.cfa_name == "RGGB" and view.meta.flip == 0
    assert view.mosaic.shape == (h + h % 2, w + w % 2)
    assert view.flips == BayerPattern.parse(pattern).rggb_flips
    # Each pixel keeps its colour and its black level through the mirroring.
    colors = view.mirror(color_index_map(pattern, h, w)[None].astype(np.float32))[0]
    np.testing.assert_array_equal(colors, color_index_map("RGGB", *view.mosaic.shape))
    np.testing.assert_array_equal(
        view.undo(subtract_black_level(view.mosaic, view.meta)[None])[0],
        subtract_black_level(mosaic, meta),
    )
    image = np.random.default_rng(1).random((3, h, w)).astype(np.float32)
    np.testing.assert_array_equal(view.undo(view.mirror(image)), image)
