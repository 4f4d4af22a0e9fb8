import json
import math

import numpy as np
import pytest

from darkraw.synth.noise import (
    DEFAULT_CAMERA,
    CalibratedNoiseParams,
    ReadNoise,
    available_profiles,
    calibrated_noise,
    load_profile,
    sample_calibrated_params,
    tukey_lambda_quantile,
    tukey_lambda_variance,
)


def params(**changes):
    base = dict(
        k=2.0,
        read_model=ReadNoise.GAUSSIAN,
        tukey_lambda=0.0,
        read_scale=0.0,
        row_scale=0.0,
        color_bias=(0.0, 0.0, 0.0, 0.0),
    )
    base.update(changes)
    return CalibratedNoiseParams(**base)


def test_bundled_profiles_are_the_five_eld_cameras():
    names = available_profiles()
    assert names == ["CanonEOS5D4", "CanonEOS700D", "CanonEOS70D", "NikonD850", "SonyA7S2"]
    sony = load_profile(DEFAULT_CAMERA)
    assert sony.k_min == pytest.approx(0.0939, abs=1e-4)
    assert sony.k_max == pytest.approx(6.0106, abs=1e-4)
    assert len(load_profile("NikonD850").fits) == 2
    with pytest.raises(ValueError, match="unknown camera 'iPhone'; bundled: CanonEOS5D4"):
        load_profile("iPhone")


def test_user_profile_file_and_its_errors(tmp_path):
    body = {
        "k_min": 1.0,
        "k_max": 2.0,
        "white_level": 4095,
        "tukey_shapes": [0.1],
        "color_bias": [[0, 0, 0, 0]],
        "fits": [
            {
                "tukey_scale": {"slope": 1, "bias": 0, "sigma": 0.1},
                "gauss_scale": {"slope": 1, "bias": 0, "sigma": 0.1},
                "row_scale": {"slope": 1, "bias": -2, "sigma": 0.1},
            }
        ],
    }
    path = tmp_path / "MyCam.json"
    path.write_text(json.dumps({"MyCam": body}))
    assert load_profile(path).name == "MyCam" and load_profile(path).white_level == 4095
    path.write_text(json.dumps({**body, "iso": 100}))
    with pytest.raises(ValueError, match=r"unknown keys \['iso'\]"):
        load_profile(path)
    del body["k_max"]
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match=r"missing keys \['k_max'\]"):
        load_profile(path)


def test_tukey_lambda_variance_formula_matches_samples():
    u = np.random.default_rng(0).uniform(1e-12, 1.0, 400_000)
    for lam in (-0.14, 0.0, 0.14):
        x = tukey_lambda_quantile(u, lam)
        assert np.var(x) == pytest.approx(tukey_lambda_variance(lam), rel=0.03)
    assert tukey_lambda_variance(0.0) == pytest.approx(math.pi**2 / 3)


def test_sampled_scales_follow_the_profile_fit_at_fixed_k():
    sony = load_profile("SonyA7S2")
    k = 1.5
    draws = [sample_calibrated_params(sony, np.random.default_rng(s), k=k) for s in range(2000)]
    fit = sony.fits[0].tukey_scale
    logs = np.log([d.read_scale for d in draws])
    assert np.mean(logs) == pytest.approx(math.log(fit.median(k)), abs=0.03)
    assert np.std(logs) == pytest.approx(fit.sigma, rel=0.1)
    assert all(d.k == k for d in draws)
    assert {d.tukey_lambda for d in draws} <= set(sony.tukey_shapes)
    ks = [sample_calibrated_params(sony, np.random.default_rng(s)).k for s in range(500)]
    assert sony.k_min <= min(ks) and max(ks) <= sony.k_max


def test_calibrated_read_noise_reproduces_the_profile_scale():
    sony = load_profile("SonyA7S2")
    k = 2.0
    scale = sony.fits[0].tukey_scale.median(k)
    lam = sony.tukey_shapes[0]
    p = params(read_model=ReadNoise.TUKEY, tukey_lambda=lam, read_scale=scale, k=k)
    noise = calibrated_noise(np.zeros((4, 256, 256)), p, np.random.default_rng(1))
    expected = scale**2 * tukey_lambda_variance(lam) + 1 / 12  # plus quantisation
    assert np.var(noise) == pytest.approx(expected, rel=0.05)


def test_shot_noise_variance_is_k_times_mean():
    signal = np.full((4, 128, 128), 200.0)
    noise = calibrated_noise(signal, params(k=3.0), np.random.default_rng(2))
    assert noise.mean() == pytest.approx(200.0, rel=0.01)
    assert noise.var() == pytest.approx(3.0 * 200.0 + 1 / 12, rel=0.05)


def test_row_noise_is_shared_along_sensor_rows():
    noise = calibrated_noise(
        np.zeros((4, 64, 256)), params(row_scale=5.0), np.random.default_rng(3)
    )
    row_means = noise.mean(axis=2)
    np.testing.assert_allclose(row_means[0], row_means[1], atol=0.1)  # R and G1: same row
    np.testing.assert_allclose(row_means[2], row_means[3], atol=0.1)  # B and G2
    assert np.std(row_means[0]) == pytest.approx(5.0, rel=0.25)
    assert abs(np.corrcoef(row_means[0], row_means[2])[0, 1]) < 0.4


def test_colour_bias_and_reproducibility():
    p = params(color_bias=(1.0, 2.0, 3.0, 4.0), read_scale=1.0)
    a = calibrated_noise(np.zeros((4, 64, 64)), p, np.random.default_rng(4))
    b = calibrated_noise(np.zeros((4, 64, 64)), p, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.mean(axis=(1, 2)), [1, 2, 3, 4], atol=0.1)
    with pytest.raises(ValueError, match=r"\(4, h, w\), got \(3, 8, 8\)"):
        calibrated_noise(np.zeros((3, 8, 8)), p, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"color_bias": [[0, 0, 0, 0, 0]]}, "rows of 4 values"),
        ({"fits": [{"tukey_scale": {"slope": 1, "bias": 0, "sigma": 1}}]}, "missing keys"),
        ({"fits": ["not a fit"]}, r"fits\[0\]: expected an object"),
        ({"k_min": None}, "wrong type"),
        ({"tukey_shapes": ["x"]}, "could not convert"),
    ],
)
def test_malformed_user_profile_gives_a_value_error(tmp_path, change, message):
    body = json.loads(json.dumps(load_profile("SonyA7S2").__dict__, default=lambda o: o.__dict__))
    body = {k: v for k, v in body.items() if k != "name"}
    body.update(change)
    path = tmp_path / "Bad.json"
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match=message):
        load_profile(path)
