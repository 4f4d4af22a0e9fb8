"""Training the learnt black-offset estimate: its samples and its fit."""

from __future__ import annotations

import numpy as np
import pytest

from darkraw.nn.blackoffset import FEATURE_COUNT, TARGET_SCALE
from darkraw.training.black_offset import (
    KINDS,
    SampleConfig,
    darkened_sample,
    sample_set,
    train_black_offset_model,
)

from conftest import smooth_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = smooth_photos(tmp_path_factory.mktemp("offset_photos"), 2, 96, 128)
    return sorted(folder.glob("*.png"))


@pytest.mark.parametrize("kind", range(len(KINDS)))
def test_each_kind_gives_features_and_an_offset_of_its_own(photos, kind):
    shares = [0.0] * len(KINDS)
    shares[kind] = 1.0
    config = SampleConfig(kind_shares=tuple(shares), crop=(64, 96))  # type: ignore[arg-type]
    x, y, got = darkened_sample(photos[0], config, np.random.default_rng(kind))
    assert got == kind and x.shape == (FEATURE_COUNT,) and y.shape == (4,)
    assert np.isfinite(x).all()
    if KINDS[kind] in ("calibrated, no bias", "Poisson-Gaussian"):
        assert not y.any()
    elif KINDS[kind] == "Poisson-Gaussian, random offset":
        # Up to 4 DN of a 15871-DN span, times a ratio up to 300, per cent of white.
        assert y.any() and np.abs(y).max() <= 4 / 15871 * 300 * TARGET_SCALE


def test_a_sample_set_is_the_same_drawn_again(photos):
    config = SampleConfig(crop=(64, 96))
    a = sample_set(photos, 3, config, seed=5)
    b = sample_set(photos, 3, config, seed=5)
    for key in ("x", "y", "kind"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["x"].shape == (3, FEATURE_COUNT)


def test_sample_shares_must_name_every_kind_and_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        SampleConfig(kind_shares=(0.5, 0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="4 shares"):
        SampleConfig(kind_shares=(0.5, 0.5))  # type: ignore[arg-type]


def test_the_fit_learns_a_target_its_features_give_and_runs_in_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2048, FEATURE_COUNT)).astype(np.float32)
    y = np.stack([x[:, 0], -x[:, 1], x[:, 2] + x[:, 3], 0.5 * x[:, 4]], axis=1).astype(np.float32)
    model = train_black_offset_model({"x": x, "y": y}, steps=600, width=32, seed=0)
    predicted = model.amplified(x) * TARGET_SCALE
    assert np.abs(predicted - y).mean() < 0.2 * np.abs(y).mean()
