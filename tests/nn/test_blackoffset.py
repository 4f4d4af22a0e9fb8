"""The learnt black-offset estimate: its features, its numpy MLP, its file, and the bundled
model's reading of frames with a known offset."""

from __future__ import annotations

import math

import numpy as np
import pytest

from darkraw.errors import CheckpointError
from darkraw.nn.blackoffset import (
    FEATURE_COUNT,
    MAX_BLOCKS,
    QUANTILES,
    BlackOffsetModel,
    bundled_black_offset_model,
    offset_features,
    read_black_offset_model,
    save_black_offset_model,
)
from darkraw.nn.rawdenoise import BlackOffset, DenoiseOptions, prepare_frame
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.noiselevel import LEARNT_OFFSET_BOUND_DN, OFFSET_DN_WHITE, learnt_offset_range


def planes_of(seed: int = 0, shape: tuple[int, int] = (64, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 0.01, (4, *shape)).astype(np.float32)


def test_features_have_their_length_and_end_with_the_ratios_log():
    f = offset_features(planes_of(), 50.0)
    assert f.shape == (FEATURE_COUNT,) and f.dtype == np.float32
    assert f[-1] == pytest.approx(math.log(50.0))


def test_an_offset_shifts_the_level_features_by_it_times_the_ratio_and_not_the_spread():
    planes = planes_of()
    shift = np.array([0.001, -0.0005, 0.002, 0.0], np.float32)[:, None, None]
    a, b = offset_features(planes, 20.0), offset_features(planes + shift, 20.0)
    per_plane = len(QUANTILES) + 1
    for p in range(4):
        block = slice(p * per_plane, (p + 1) * per_plane)
        np.testing.assert_allclose(b[block] - a[block], 20 * shift[p, 0, 0], atol=1e-6)
    # The darkest blocks' spread (the noise there) is the four values before the ratio's log.
    np.testing.assert_allclose(b[-5:-1], a[-5:-1], atol=1e-6)


def test_large_planes_stride_their_block_rows_and_keep_their_statistics():
    rng = np.random.default_rng(1)
    side = int(math.sqrt(MAX_BLOCKS)) * 8 * 2
    planes = rng.normal(0.01, 0.001, (4, side, side)).astype(np.float32)
    f = offset_features(planes, 10.0)
    median = f[QUANTILES.index(0.5)]
    assert median == pytest.approx(0.1, abs=0.002)


def test_features_refuse_what_they_cannot_read():
    with pytest.raises(ValueError, match="no 8x8 block"):
        offset_features(np.zeros((4, 4, 40), np.float32), 1.0)
    with pytest.raises(ValueError, match="ratio"):
        offset_features(planes_of(), 0.0)
    with pytest.raises(ValueError, match=r"\(4, h, w\)"):
        offset_features(np.zeros((3, 16, 16), np.float32), 1.0)


def small_model(seed: int = 0) -> BlackOffsetModel:
    rng = np.random.default_rng(seed)
    shapes = [(8, FEATURE_COUNT), (4, 8)]
    return BlackOffsetModel(
        tuple(rng.normal(0, 0.3, s).astype(np.float32) for s in shapes),
        tuple(rng.normal(0, 0.1, s[0]).astype(np.float32) for s in shapes),
        rng.normal(0, 1, FEATURE_COUNT).astype(np.float32),
        rng.uniform(0.5, 2, FEATURE_COUNT).astype(np.float32),
    )


def test_the_mlp_is_standardise_then_linear_relu_linear_in_per_cent():
    model = small_model()
    x = np.random.default_rng(2).normal(0, 1, (3, FEATURE_COUNT)).astype(np.float32)
    z = (x - model.mean) / model.scale
    hidden = np.maximum(z @ model.weights[0].T + model.biases[0], 0)
    expected = (hidden @ model.weights[1].T + model.biases[1]) / 100
    np.testing.assert_allclose(model.amplified(x), expected, rtol=1e-5, atol=1e-7)


def test_the_offset_before_amplification_is_the_amplified_one_over_the_ratio():
    model, planes = small_model(), planes_of()
    amplified = model.amplified(offset_features(planes, 40.0)[None])[0]
    np.testing.assert_allclose(model.offset(planes, 40.0), amplified / 40.0, rtol=1e-6)


def test_a_model_file_round_trips_and_a_foreign_file_is_refused(tmp_path):
    model = small_model()
    path = tmp_path / "m.safetensors"
    save_black_offset_model(model, path, {"card": "{}"})
    back = read_black_offset_model(path)
    x = np.random.default_rng(3).normal(0, 1, (2, FEATURE_COUNT)).astype(np.float32)
    np.testing.assert_array_equal(back.amplified(x), model.amplified(x))
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match=r"other\.safetensors: not a darkraw black-offset"):
        read_black_offset_model(tmp_path / "other.safetensors")
    save_file(
        model.tensors(),
        str(tmp_path / "old.safetensors"),
        metadata={"format": "darkraw-black-offset", "features_version": "0"},
    )
    with pytest.raises(CheckpointError, match="features version 0"):
        read_black_offset_model(tmp_path / "old.safetensors")


def test_a_model_whose_layers_do_not_chain_is_refused():
    model = small_model()
    with pytest.raises(ValueError, match="does not take"):
        BlackOffsetModel(
            (model.weights[0], model.weights[0]), model.biases, model.mean, model.scale
        )


def test_the_learnt_range_is_a_calibrations_rows_or_a_bound_either_way():
    unknown = learnt_offset_range("Kodak", "DC50", 16383.0)
    assert unknown.low == (-LEARNT_OFFSET_BOUND_DN / OFFSET_DN_WHITE,) * 4
    assert unknown.high == (LEARNT_OFFSET_BOUND_DN / OFFSET_DN_WHITE,) * 4
    from darkraw.synth.noise import load_profile

    rows = np.array(load_profile("SonyA7S2").color_bias) / 15871.0
    sony = learnt_offset_range("SONY", "ILCE-7SM2", 15871.0)
    np.testing.assert_allclose(sony.low, rows.min(axis=0))
    np.testing.assert_allclose(sony.high, rows.max(axis=0))


def test_true_and_false_stand_for_learnt_and_none():
    assert DenoiseOptions(black_offset=True).black_offset is BlackOffset.LEARNT
    assert DenoiseOptions(black_offset=False).black_offset is BlackOffset.NONE
    assert DenoiseOptions(black_offset="Darkest").black_offset is BlackOffset.DARKEST
    assert DenoiseOptions().black_offset is BlackOffset.LEARNT
    with pytest.raises(ValueError, match="unknown black offset 'median'"):
        DenoiseOptions(black_offset="median")


def dark_frame(offset_dn, seed: int = 0, ratio: float = 100.0):
    """A scene at ``1 / ratio`` of its light (its left quarter black), Poisson-Gaussian noise (1 DN
    per electron, 2 DN read), black 512 of 16383, ``offset_dn`` added to R, G1, B, G2."""
    rng = np.random.default_rng(seed)
    h, w = 256, 384
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    scene = 0.25 + 0.2 * np.sin(7 * x) * np.cos(5 * y) + 0.05 * rng.random((h, w))
    scene[:, : w // 4] = 0.0
    electrons = rng.poisson(scene * 15871 / ratio)
    mosaic = electrons + rng.normal(0.0, 2.0, (h, w)) + 512.0
    for (r, c), v in zip(((0, 0), (0, 1), (1, 1), (1, 0)), offset_dn, strict=True):
        mosaic[r::2, c::2] += v
    meta = RawMetadata.for_bayer("RGGB", h, w, black_level=512.0, white_level=16383.0)
    return np.clip(np.rint(mosaic), 0, 16383).astype(np.uint16), meta


def test_the_bundled_model_reads_a_known_offset_and_leaves_a_true_black_alone():
    offset = (3.0, 3.0, -2.0, -2.0)
    biased, meta = dark_frame(offset)
    found = prepare_frame(biased, meta, black_offset="learnt", ratio=100.0).offset * 15871
    # On this made-up scene (not a photo, as the model learnt from) within 1.5 DN a plane, where
    # trusting the file's black level misses by 2-3 DN.
    np.testing.assert_allclose(found, offset, atol=1.5)
    plain, _ = dark_frame((0.0,) * 4)
    none = prepare_frame(plain, meta, black_offset="learnt", ratio=100.0).offset * 15871
    np.testing.assert_allclose(none, 0.0, atol=0.5)


def test_the_bundled_model_loads_once():
    assert bundled_black_offset_model() is bundled_black_offset_model()
