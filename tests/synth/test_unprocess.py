import numpy as np
import pytest

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions, GammaCurve, gamma_encode, run_classic
from darkraw.config import from_dict
from darkraw.raw.cfa import BayerPattern
from darkraw.raw.fileio import read_image
from darkraw.synth.unprocess import (
    CAMERA_MATRICES,
    IDENTITY_RGB_CAM,
    UnprocessConfig,
    UnprocessParams,
    inverse_white_balance,
    mosaic,
    sample_unprocess_params,
    unprocess,
)
from darkraw.training.train import TrainConfig

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


def test_named_camera_matrices_keep_white_white():
    for name, matrix in CAMERA_MATRICES.items():
        m = np.asarray(matrix)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-5, err_msg=name)
        assert np.all(np.diag(m) >= 1.0), name
    config = UnprocessConfig(matrices=("identity", "sony_a7s"))
    assert config.matrices == (IDENTITY_RGB_CAM, CAMERA_MATRICES["sony_a7s"])
    with pytest.raises(ValueError, match="unknown camera matrix 'sony_a9'"):
        UnprocessConfig(matrices=("sony_a9",))
    with pytest.raises(ValueError, match="matrix_concentration"):
        UnprocessConfig(matrix_concentration=0.0)


def _near_a_camera(config: UnprocessConfig, draws: int) -> float:
    """Share of drawn matrices within 0.02 of one of the configured cameras."""
    rng = np.random.default_rng(0)
    cameras = np.asarray(config.matrices)
    near = 0
    for _ in range(draws):
        m = np.asarray(sample_unprocess_params(config, rng).rgb_cam)
        near += bool(np.min(np.abs(cameras - m).max(axis=(1, 2))) < 0.02)
    return near / draws


def test_a_low_concentration_draws_cameras_nearly_as_they_are():
    cameras = ("identity", "gopro_hero7", "canon_eos70d")
    assert _near_a_camera(UnprocessConfig(matrices=cameras, matrix_concentration=0.05), 200) > 0.7
    # Uniform weights blend every camera: the identity is never seen.
    assert _near_a_camera(UnprocessConfig(matrices=cameras), 200) < 0.05


def test_training_configs_name_cameras_and_reject_unknown_ones():
    data = {"data": {"pairs": {"sources": {"unprocess": {"matrices": ["identity", "sony_a7s"]}}}}}
    config = from_dict(TrainConfig, data)
    assert config.data.pairs.sources.unprocess.matrices[0] == IDENTITY_RGB_CAM
    data["data"]["pairs"]["sources"]["unprocess"]["matrices"] = ["nikon_z9"]
    with pytest.raises(ValueError, match="nikon_z9"):
        from_dict(TrainConfig, data)


def test_round_trip_on_real_photos():
    folder = shared_data("clean", "cbsd68")
    params = sample_unprocess_params(UnprocessConfig(), np.random.default_rng(1))
    for name in ("101085.png", "3096.png"):
        photo = read_image(folder / name)
        raw_lin, meta = unprocess(photo, params)
        back = process(raw_lin, meta, params)
        # Demosaicing fine detail is what is lost; 8-bit PSNR over the whole photo.
        assert psnr(np.round(back * 255), np.round(photo * 255), 255) > 22
