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

from conftest import fifo_that_cannot_hang


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


# --- issue 26: every number of a profile is checked, naming its key -----------------------------


def sony_body():
    body = json.loads(json.dumps(load_profile("SonyA7S2").__dict__, default=lambda o: o.__dict__))
    return {k: v for k, v in body.items() if k != "name"}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("tukey_shapes", 0), math.nan, r"tukey_shapes\[0\]: expected a finite number"),
        (
            ("tukey_shapes", 1),
            5.0,
            r"tukey_shapes\[1\]: expected a Tukey-lambda shape in \(-0\.5, 1\]",
        ),
        (("tukey_shapes", 1), -0.5, r"tukey_shapes\[1\]"),
        (("color_bias", 2, 1), math.nan, r"color_bias\[2\]\[1\]: expected a finite number"),
        (("color_bias", 0, 3), 1e30, r"color_bias\[0\]\[3\]: .*below the white level"),
        (("color_bias", 0, 3), -20000.0, r"color_bias\[0\]\[3\]: .*below the white level"),
        (("k_max",), 1e300, r"k_max: expected .*<= 10000"),
        (("k_max",), math.inf, r"k_max: expected a finite number"),
        (("k_min",), -1.0, r"k_min: expected a number > 0"),
        (("k_min",), 0.0, r"k_min: expected a number > 0"),
        (("k_max",), 0.01, r"k_max: expected a number >= k_min"),
        (("white_level",), math.nan, r"white_level: expected a finite number"),
        (("white_level",), 0.5, r"white_level: "),
        (("fits", 0, "tukey_scale", "sigma"), -1.0, r"fits\[0\]\.tukey_scale\.sigma: .*>= 0"),
        (
            ("fits", 0, "row_scale", "slope"),
            math.inf,
            r"fits\[0\]\.row_scale\.slope: expected a fin",
        ),
        (
            ("fits", 0, "gauss_scale", "bias"),
            math.nan,
            r"fits\[0\]\.gauss_scale\.bias: expected a fin",
        ),
        (("fits", 0, "gauss_scale", "bias"), 1e300, r"fits\[0\]\.gauss_scale\.bias: "),
        (("k_min",), 10**400, r"k_min: expected a number"),
    ],
    ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else f"{v!r:.12}",
)
def test_profile_numbers_out_of_range_name_their_key(tmp_path, path, value, message):
    body = sony_body()
    where = body
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    file = tmp_path / "Bad.json"
    file.write_text(json.dumps(body))  # NaN and Infinity as Python's json writes them
    with pytest.raises(ValueError, match=rf"^Bad\.{message}") as err:
        load_profile(file)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (json.dumps({"Cam": {"Inner": sony_body()}}), r"Cam: unknown keys \['Inner'\]"),
        (json.dumps({"Cam": [sony_body()]}), "Cam: expected a profile object, got list"),
        (json.dumps([sony_body()]), "Bad: expected a profile object, got list"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"Cam": ' * 50_000 + "{}" + "}" * 50_000, "nested too deeply"),
        (json.dumps({**sony_body(), "tukey_shapes": {"a": 1}}), r"tukey_shapes: expected a list"),
        (
            json.dumps({**sony_body(), "color_bias": [1, 2, 3, 4]}),
            r"color_bias\[0\]: expected a list",
        ),
        ("1" * 5000, "cannot read noise profile"),
        (b"\xff\xfe\x00", "cannot read noise profile"),
    ],
)
def test_nested_or_malformed_profile_files_are_one_line(tmp_path, text, message):
    file = tmp_path / "Bad.json"
    if isinstance(text, bytes):
        file.write_bytes(text)
    else:
        file.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_profile(file)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_profile_files_that_are_not_regular_files_are_refused(tmp_path):
    with (
        fifo_that_cannot_hang(tmp_path / "pipe.json") as fifo,
        pytest.raises(ValueError, match=r"pipe\.json: .*not a regular file"),
    ):
        load_profile(fifo)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"zero\.json: .*not a regular file"):
        load_profile(zero)


def test_a_nan_profile_is_refused_by_the_dataclass_too():
    sony = load_profile("SonyA7S2")
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"SonyA7S2\.tukey_shapes\[0\]"):
        replace(sony, tukey_shapes=(math.nan,))
    with pytest.raises(ValueError, match=r"SonyA7S2\.color_bias\[0\]\[0\]"):
        replace(sony, color_bias=((math.inf, 0.0, 0.0, 0.0),))


def test_every_bundled_profile_passes_the_checks():
    for name in available_profiles():
        assert load_profile(name).name == name
