from dataclasses import replace

import numpy as np
import pytest

from darkraw.classic.pipeline import subtract_black_level
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.simulate import (
    SeedNoiseConfig,
    SeedNoiseParams,
    SimulationConfig,
    add_black_level,
    clean_frame_dn,
    darken_calibrated,
    darken_mosaic,
    gamma_distort,
    poisson_noise,
    sample_seed_params,
    seed_reverse_pipeline,
    simulate_dark,
    white_imbalance,
)

META = RawMetadata.for_bayer("RGGB", 64, 64, black_level=0, white_level=16383, exposure_time=1.0)


def test_dark_frame_has_poisson_statistics():
    clean = np.full((64, 64), 8000, dtype=np.uint16)
    dark, meta = darken_mosaic(
        clean, META, 100, np.random.default_rng(0), gain=1.0, read_noise_dn=0.0, black_level=512
    )
    signal = dark.astype(np.float64) - 512
    # The clean level, as a fraction of its range, scaled into the dark frame's range.
    assert signal.mean() == pytest.approx(8000 / 16383 * (16383 - 512) / 100, rel=0.02)
    assert signal.var() == pytest.approx(signal.mean(), rel=0.1)
    assert meta.black_tile == ((512.0, 512.0), (512.0, 512.0))
    assert meta.exposure_time == pytest.approx(0.01)


def test_same_seed_same_frame():
    clean = np.random.default_rng(5).integers(0, 16000, (64, 64)).astype(np.uint16)
    a, _ = darken_mosaic(clean, META, 250, np.random.default_rng(7))
    b, _ = darken_mosaic(clean, META, 250, np.random.default_rng(7))
    c, _ = darken_mosaic(clean, META, 250, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_ratio_is_rejected():
    with pytest.raises(ValueError, match="ratio must be >= 1"):
        darken_mosaic(np.zeros((64, 64), np.uint16), META, 0.5, np.random.default_rng(0))


def test_gamma_distortion_darkens_mid_tones_and_keeps_white():
    planes = np.array([0.0, 0.25, 0.5, 1.0], dtype=np.float32).reshape(4, 1, 1)
    out = gamma_distort(planes, 2.0)
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0625, 0.25, 1.0])
    with pytest.raises(ValueError, match="gamma must be a positive number, got 0"):
        gamma_distort(planes, 0)


def test_white_imbalance_uses_each_planes_colour():
    planes = np.ones((4, 2, 2), dtype=np.float32)
    out = white_imbalance(planes, (0.5, 2.0, 1.5))
    np.testing.assert_allclose(out[:, 0, 0], [0.5, 2.0, 1.5, 2.0])  # R, G1, B, G2


def test_poisson_step_variance_equals_mean():
    photons = 400.0
    planes = np.full((4, 200, 200), 0.3, dtype=np.float32)
    out = poisson_noise(planes, photons, np.random.default_rng(0))
    counts = out * photons
    assert counts.mean() == pytest.approx(0.3 * photons, rel=0.01)
    assert counts.var() == pytest.approx(counts.mean(), rel=0.03)


def test_black_level_is_a_positive_shift():
    planes = np.zeros((4, 2, 2), dtype=np.float32)
    np.testing.assert_allclose(add_black_level(planes, 0.02), 0.02)
    with pytest.raises(ValueError, match="black level must be >= 0"):
        add_black_level(planes, -0.1)


def test_sampled_params_stay_in_range_and_repeat_with_the_seed():
    config = SeedNoiseConfig()
    draws = [sample_seed_params(config, np.random.default_rng(s)) for s in range(200)]
    for p in draws:
        assert config.gamma[0] <= p.gamma <= config.gamma[1]
        assert all(config.wb_gain[0] <= g <= config.wb_gain[1] for g in p.wb_gains)
        assert config.photons[0] <= p.photons <= config.photons[1]
        assert config.black_level[0] <= p.black_level <= config.black_level[1]
    assert sample_seed_params(config, np.random.default_rng(3)) == draws[3]
    with pytest.raises(ValueError, match="photons must be"):
        SeedNoiseConfig(photons=(100.0, 10.0))


def test_reverse_pipeline_is_reproducible_and_ordered():
    planes = np.random.default_rng(1).random((4, 16, 16)).astype(np.float32)
    params = SeedNoiseParams(gamma=2.0, wb_gains=(0.8, 1.0, 1.2), photons=100.0, black_level=0.03)
    a = seed_reverse_pipeline(planes, params, np.random.default_rng(9))
    b = seed_reverse_pipeline(planes, params, np.random.default_rng(9))
    np.testing.assert_array_equal(a.black_level, b.black_level)
    np.testing.assert_allclose(a.gamma, planes**2, rtol=1e-6)
    np.testing.assert_allclose(a.white_imbalance, white_imbalance(a.gamma, params.wb_gains))
    np.testing.assert_allclose(a.black_level, a.poisson + 0.03)
    assert a.black_level.mean() < planes.mean()


def test_calibrated_dark_frame_has_the_right_level_and_repeats():
    from darkraw.synth.noise import load_profile

    sony = load_profile("SonyA7S2")
    meta = RawMetadata.for_bayer("GRBG", 128, 128, black_level=512, white_level=16383)
    clean = np.full((128, 128), 512 + 0.5 * (16383 - 512), dtype=np.uint16)
    dark, dark_meta, params = darken_calibrated(clean, meta, 100, sony, np.random.default_rng(0))
    again, _, _ = darken_calibrated(clean, meta, 100, sony, np.random.default_rng(0))
    np.testing.assert_array_equal(dark, again)
    assert dark.dtype == np.uint16 and dark.shape == (128, 128)
    assert dark_meta.white_level == 512 + sony.white_level
    assert sony.k_min <= params.k <= sony.k_max
    level = dark.astype(np.float64) - 512 - np.mean(params.color_bias)
    assert level.mean() == pytest.approx(0.5 * sony.white_level / 100, rel=0.05)
    # Shot noise dominates at this level: variance at least K times the mean.
    assert level.var() >= 0.9 * params.k * level.mean()


def test_calibrated_dark_xtrans_frame_has_each_colours_bias_and_the_calibrated_noise():
    from darkraw.raw.cfa import XTRANS_TILE, cfa_colours
    from darkraw.synth.noise import load_profile

    from conftest import xtrans_meta

    sony = replace(load_profile("SonyA7S2"), color_bias=((5.0, -3.0, 8.0, -1.0),))
    meta = xtrans_meta(192, 192).replace(
        black_tile=tuple((512.0,) * 6 for _ in range(6)), cfa_tile=XTRANS_TILE
    )
    clean = np.full((192, 192), 512 + 0.5 * (16383 - 512), dtype=np.uint16)
    dark, dark_meta, params = darken_calibrated(clean, meta, 100, sony, np.random.default_rng(0))
    assert dark.shape == (192, 192) and dark_meta.is_xtrans
    colours = cfa_colours(XTRANS_TILE, 192, 192)
    r, g1, b, g2 = params.color_bias
    level = 0.5 * sony.white_level / 100
    for colour, bias in enumerate((r, (g1 + g2) / 2, b)):
        values = dark[colours == colour].astype(np.float64) - 512
        assert values.mean() == pytest.approx(level + bias, abs=1.5)
        assert values.var() >= 0.9 * params.k * level


def test_calibrated_dark_frame_rejects_a_ratio_below_one():
    from darkraw.synth.noise import load_profile

    with pytest.raises(ValueError, match="ratio must be >= 1"):
        darken_calibrated(
            np.zeros((8, 8), np.uint16),
            RawMetadata.for_bayer("RGGB", 8, 8),
            0.5,
            load_profile(),
            np.random.default_rng(0),
        )


@pytest.mark.parametrize("model", ["seed", "calibrated", "simple"])
def test_simulate_dark_reads_back_at_the_clean_level(model):
    """Black subtracted and amplified by the ratio, a dark frame returns to the clean signal.

    The seed model's gamma distortion (exponent >= 1) may only darken it.
    """
    clean = np.full((64, 64), 0.4, dtype=np.float32)
    meta = RawMetadata.for_bayer("GRBG", 64, 64, white_level=1.0, exposure_time=10.0)
    dark = simulate_dark(clean, meta, 100, SimulationConfig(model=model), np.random.default_rng(1))
    assert dark.mosaic_dn.dtype == np.uint16 and dark.ratio == 100
    assert dark.meta.cfa_tile == meta.cfa_tile
    assert dark.meta.exposure_time == pytest.approx(0.1)
    back = float(subtract_black_level(dark.mosaic_dn, dark.meta).mean() * 100)
    if model == "seed":
        assert 0.4**2.5 * 0.6 * 0.95 < back < 0.4 * 1.4 * 1.05
        assert isinstance(dark.params, SeedNoiseParams)
    else:
        assert back == pytest.approx(0.4, rel=0.05)


def test_simulate_dark_is_reproducible():
    clean = np.random.default_rng(0).uniform(0, 1, (32, 48)).astype(np.float32)
    meta = RawMetadata.for_bayer("RGGB", 32, 48, white_level=1.0)
    for model in ("seed", "calibrated", "simple"):
        config = SimulationConfig(model=model)
        a = simulate_dark(clean, meta, 250, config, np.random.default_rng(3)).mosaic_dn
        b = simulate_dark(clean, meta, 250, config, np.random.default_rng(3)).mosaic_dn
        c = simulate_dark(clean, meta, 250, config, np.random.default_rng(4)).mosaic_dn
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_simulate_dark_can_fix_the_system_gain():
    clean = np.full((64, 64), 0.3, dtype=np.float32)
    meta = RawMetadata.for_bayer("RGGB", 64, 64, white_level=1.0)
    config = SimulationConfig()
    low, high = (
        simulate_dark(clean, meta, 100, config, np.random.default_rng(5), k=k) for k in (0.2, 4.0)
    )
    assert low.params.k == pytest.approx(0.2) and high.params.k == pytest.approx(4.0)
    # More gain (a higher ISO) is fewer electrons for the same light: noisier relative to it.
    spread = [float(subtract_black_level(d.mosaic_dn, d.meta).std()) for d in (low, high)]
    assert spread[1] > 2 * spread[0]
    with pytest.raises(ValueError, match="calibrated"):
        simulate_dark(
            clean, meta, 100, SimulationConfig(model="simple"), np.random.default_rng(5), k=1.0
        )


def test_seed_photons_are_per_reference_exposure():
    """At ratio r the dark frame collects photons / r: r times the relative variance."""
    planes = np.full((4, 64, 64), 0.5, dtype=np.float32)
    params = SeedNoiseParams(gamma=1.0, wb_gains=(1.0, 1.0, 1.0), photons=1e5, black_level=0.0)
    stages = seed_reverse_pipeline(planes, params, np.random.default_rng(0), ratio=100)
    # In reference units: mean 0.5, variance 0.5 / (photons / ratio).
    assert stages.poisson.mean() == pytest.approx(0.5, rel=0.01)
    assert stages.poisson.var() == pytest.approx(0.5 * 100 / 1e5, rel=0.1)


def test_simulation_config_rejects_bad_values():
    with pytest.raises(ValueError, match="noise model"):
        SimulationConfig(model="gaussian")
    with pytest.raises(ValueError, match="black_level < white_level"):
        SimulationConfig(black_level=20000)


def test_clean_frame_dn_levels():
    clean = np.array([[0.0, 1.0], [0.5, 2.0]], dtype=np.float32)
    meta = RawMetadata.for_bayer("RGGB", 2, 2, white_level=1.0)
    dn, out_meta = clean_frame_dn(clean, meta, 512, 16383)
    assert dn.tolist() == [[512, 16383], [8448, 16383]]
    assert out_meta.white_level == 16383 and out_meta.black_tile[0][0] == 512
