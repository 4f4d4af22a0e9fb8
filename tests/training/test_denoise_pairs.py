import math

import numpy as np
import pytest
import torch

from darkraw.training.dataset import PairConfig
from darkraw.training.denoise_pairs import (
    DenoisePairConfig,
    DenoisePairs,
    tukey_variance,
    virtual_dark,
)

CROP = PairConfig(patch=16, smooth_fraction=0.0)


def pairs(folder, **changes):
    files = sorted(folder.glob("*.png"))
    return DenoisePairs(files, DenoisePairConfig(crop=CROP, **changes), seed=3, length=50)


def test_items_have_planes_a_noise_map_and_the_clean_target(photo_folder):
    item = pairs(photo_folder)[0]
    assert item["input"].shape == (8, 16, 16)
    assert item["target"].shape == (4, 16, 16)
    assert item["gains"].shape == (3,) and item["matrix"].shape == (3, 3)
    assert 1 <= float(item["ratio"]) <= 300
    assert (item["input"][4:] >= 0).all()
    assert item["input"][:4].max() <= 1.0


def test_an_item_is_a_function_of_its_index(photo_folder):
    a, b = pairs(photo_folder), pairs(photo_folder)
    for i in (0, 7, 31):
        for key in ("input", "target", "ratio"):
            torch.testing.assert_close(a[i][key], b[i][key])
    assert not torch.equal(a[0]["input"], a[1]["input"])


def test_blind_items_carry_no_map(photo_folder):
    files = sorted(photo_folder.glob("*.png"))
    data = DenoisePairs(files, DenoisePairConfig(crop=CROP), length=4, with_map=False)
    assert data[0]["input"].shape == (4, 16, 16)


def test_virtual_camera_noise_has_the_variance_it_is_told():
    rng = np.random.default_rng(0)
    clean = np.full((4, 200, 200), 0.3, dtype=np.float32)
    noisy, noise = virtual_dark(clean, 50.0, 2e-4, 3.0, 14, False, rng)
    measured = float(np.var(noisy - clean))
    told = noise.shot[0] * 0.3 + noise.read[0]
    assert measured == pytest.approx(told, rel=0.05)
    assert float(np.mean(noisy)) == pytest.approx(0.3, abs=0.01)


def test_clipping_at_black_removes_negative_values():
    rng = np.random.default_rng(0)
    clean = np.zeros((4, 50, 50), dtype=np.float32)
    kept, _ = virtual_dark(clean, 100.0, 1e-3, 5.0, 12, False, rng)
    clipped, _ = virtual_dark(clean, 100.0, 1e-3, 5.0, 12, True, rng)
    assert kept.min() < 0 <= clipped.min()


def test_calibrated_items_are_told_their_total_variance(photo_folder):
    """Pairs of ELD cameras only, told the truth: the noise they carry is what they are told."""
    files = sorted(photo_folder.glob("*.png"))
    config = DenoisePairConfig(crop=PairConfig(patch=32), calibrated_fraction=1.0, told_error=0.0)
    data = DenoisePairs(files, config, seed=0, length=40)
    ratios = []
    for i in range(40):
        item = data[i]
        x, target = item["input"].numpy(), item["target"].numpy()
        told = x[4:] ** 2
        resid = (x[:4] - target) ** 2
        unclipped = x[:4] < 0.95
        ratios.append(resid[unclipped].mean() / told[unclipped].mean())
    # Colour bias and row noise make single items differ; on average the telling is right.
    assert 0.7 < float(np.median(ratios)) < 1.5


def test_tukey_variance_matches_samples():
    rng = np.random.default_rng(0)
    shape, scale = 0.14, 2.0
    u = rng.random(400_000)
    samples = scale * (u**shape - (1 - u) ** shape) / shape
    assert tukey_variance(shape, scale) == pytest.approx(float(np.var(samples)), rel=0.02)
    assert tukey_variance(0.0, 1.0) == pytest.approx(math.pi**2 / 3)


@pytest.mark.parametrize(
    "changes",
    [
        {"ratios": (0.5, 10.0)},
        {"calibrated_fraction": 1.5},
        {"shot": (0.0, 1e-3)},
        {"bits": (20,)},
        {"cameras": (), "calibrated_fraction": 0.5},
    ],
)
def test_config_refuses_bad_values(changes):
    with pytest.raises(ValueError):
        DenoisePairConfig(**changes)


def test_told_factor_scales_the_told_noise_within_its_range_and_nothing_else(photo_folder):
    plain = pairs(photo_folder, told_error=0.0)
    wide = pairs(photo_folder, told_error=0.0, told_factor=(1.5, 2.0), told_factor_fraction=1.0)
    for i in range(6):
        a, b = plain[i], wide[i]
        torch.testing.assert_close(a["input"][:4], b["input"][:4])  # the same noisy planes
        torch.testing.assert_close(a["target"], b["target"])  # and the same clean target
        factor = b["input"][4:] / a["input"][4:]
        assert float(factor.min()) >= 1.5 - 1e-4 and float(factor.max()) <= 2.0 + 1e-4
        assert float(factor.max() - factor.min()) < 1e-4  # one factor for the whole map


def test_told_factor_off_draws_nothing_so_old_configs_make_the_same_pairs(photo_folder):
    a, b = pairs(photo_folder), pairs(photo_folder, told_factor=(2.0, 3.0))
    for i in (0, 5, 9):
        torch.testing.assert_close(a[i]["input"], b[i]["input"])


def test_told_factor_spares_validation_items(photo_folder):
    files = sorted(photo_folder.glob("*.png"))
    config = DenoisePairConfig(crop=CROP, told_factor=(2.0, 2.5), told_factor_fraction=1.0)
    val = DenoisePairs(files, config, seed=3, length=4, train=False)
    plain = DenoisePairs(files, DenoisePairConfig(crop=CROP), seed=3, length=4, train=False)
    torch.testing.assert_close(val[1]["input"], plain[1]["input"])


@pytest.mark.parametrize(
    "changes",
    [
        {"told_factor": (0.0, 2.0)},
        {"told_factor": (2.0, 1.0)},
        {"told_factor": (1.0, math.inf)},
        {"told_factor_fraction": 1.5},
        {"told_factor_fraction": -0.1},
    ],
)
def test_bad_told_factors_are_refused(changes):
    with pytest.raises(ValueError, match="told_factor"):
        DenoisePairConfig(**changes)


def test_xtrans_items_have_nine_planes_of_one_colour_each(photo_folder, monkeypatch):
    from darkraw.raw.cfa import XTRANS_PLANE_COLORS
    from darkraw.training import denoise_pairs

    levels = np.array([0.1, 0.4, 0.7], dtype=np.float32)

    def three_colours(rgb, params):
        return np.broadcast_to(levels[:, None, None], rgb.shape).copy()

    monkeypatch.setattr(denoise_pairs, "camera_rgb", three_colours)
    data = pairs(photo_folder, cfa="xtrans", calibrated_fraction=0.5)
    for i in range(6):
        item = data[i]
        assert item["input"].shape == (19, 16, 16)
        assert (item["input"][9:18] >= 0).all()
        target = item["target"].numpy()
        assert target.shape == (9, 16, 16)
        np.testing.assert_allclose(
            target, np.broadcast_to(levels[list(XTRANS_PLANE_COLORS), None, None], target.shape)
        )


def test_xtrans_calibrated_items_are_told_their_total_variance(photo_folder):
    files = sorted(photo_folder.glob("*.png"))
    config = DenoisePairConfig(
        crop=PairConfig(patch=32), calibrated_fraction=1.0, told_error=0.0, cfa="xtrans"
    )
    data = DenoisePairs(files, config, seed=0, length=30)
    ratios = []
    for i in range(30):
        x, target = data[i]["input"].numpy(), data[i]["target"].numpy()
        told, resid = x[9:18] ** 2, (x[:9] - target) ** 2
        unclipped = x[:9] < 0.95
        ratios.append(resid[unclipped].mean() / told[unclipped].mean())
    assert 0.7 < float(np.median(ratios)) < 1.5


def test_an_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="cfa"):
        DenoisePairConfig(cfa="foveon")
