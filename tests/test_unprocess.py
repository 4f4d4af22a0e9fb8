import numpy as np
import pytest

from darkraw.cfa import BayerPattern
from darkraw.denoise import Denoiser
from darkraw.fileio import read_image
from darkraw.pipeline import ClassicOptions, GammaCurve, gamma_encode, run_classic
from darkraw.unprocess import (
    UnprocessConfig,
    UnprocessParams,
    inverse_white_balance,
    mosaic,
    sample_unprocess_params,
    unprocess,
)

from conftest import psnr, shared_data, smooth_scene

PARAMS = UnprocessParams(
    rgb_cam=((1.6, -0.4, -0.2), (-0.3, 1.6, -0.3), (0.0, -0.5, 1.5)),
    wb_gains=(2.0, 1.0, 1.7),
    brightness=0.8,
)


def process(raw_lin, meta, params):
    options = ClassicOptions(1 / params.brightness, Denoiser.NONE, gamma=GammaCurve.SRGB)
    return run_classic(raw_lin, meta, options).image


@pytest.mark.parametrize("pattern", list(BayerPattern))
def test_unprocess_then_process_gives_the_photo_back(pattern):
    photo = gamma_encode(smooth_scene(48, 64) * 0.9, GammaCurve.SRGB)
    raw_lin, meta = unprocess(photo, PARAMS, pattern)
    assert raw_lin.shape == (48, 64) and raw_lin.dtype == np.float32
    assert meta.cfa_name == pattern.value
    back = process(raw_lin, meta, PARAMS)
    assert psnr(back[:, 4:-4, 4:-4], photo[:, 4:-4, 4:-4]) > 40


def test_unprocessed_raw_looks_like_raw():
    photo = np.full((3, 8, 8), 0.5, dtype=np.float32)  # neutral gray
    raw_lin, _ = unprocess(photo, PARAMS, "RGGB")
    r, g, b = raw_lin[0, 0], raw_lin[0, 1], raw_lin[1, 1]
    # A gray scene reads green-heavy on a raw sensor: red and blue divided by their gains.
    assert r == pytest.approx(g / 2.0, rel=1e-3) and b == pytest.approx(g / 1.7, rel=1e-3)


def test_highlights_stay_saturated():
    white = np.ones((3, 2, 2), dtype=np.float32)
    out = inverse_white_balance(white, (2.0, 1.0, 1.7), brightness=1.0)
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)
    mid = inverse_white_balance(white * 0.5, (2.0, 1.0, 1.7))
    np.testing.assert_allclose(mid[:, 0, 0], [0.25, 0.5, 0.5 / 1.7], rtol=1e-6)


def test_mosaic_picks_the_filter_colour():
    cam = np.stack([np.full((2, 2), v, np.float32) for v in (1.0, 2.0, 3.0)])
    np.testing.assert_array_equal(mosaic(cam, "GBRG"), [[2, 3], [1, 2]])


def test_sampled_params_are_reproducible_and_in_range():
    config = UnprocessConfig(
        matrices=(PARAMS.rgb_cam, ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    )
    a = sample_unprocess_params(config, np.random.default_rng(0))
    assert a == sample_unprocess_params(config, np.random.default_rng(0))
    assert 1.9 <= a.wb_gains[0] <= 2.4 and 1.5 <= a.wb_gains[2] <= 1.9
    np.testing.assert_allclose(np.sum(a.rgb_cam, axis=1), 1.0, rtol=1e-9)
    with pytest.raises(ValueError, match="red_gain"):
        UnprocessConfig(red_gain=(2.0, 1.0))


def test_round_trip_on_real_photos():
    folder = shared_data("clean", "cbsd68")
    params = sample_unprocess_params(UnprocessConfig(), np.random.default_rng(1))
    for name in ("101085.png", "3096.png"):
        photo = read_image(folder / name)
        raw_lin, meta = unprocess(photo, params)
        back = process(raw_lin, meta, params)
        # Demosaicing fine detail is what is lost; 8-bit PSNR over the whole photo.
        assert psnr(np.round(back * 255), np.round(photo * 255), 255) > 22
