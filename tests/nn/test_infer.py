import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from darkraw.classic.pipeline import auto_ratio, orient, rggb_view, subtract_black_level
from darkraw.errors import CheckpointError
from darkraw.nn.checkpoint import save_checkpoint
from darkraw.nn.infer import (
    EXACT_OVERLAP,
    TILING_TOLERANCE,
    InferenceOptions,
    average_weights,
    enhance_raw_network,
    ensemble_copies,
    load_model,
    resolve_model,
    run_network,
    save_model_file,
    tile_spans,
)
from darkraw.nn.inputs import network_input
from darkraw.nn.model import ModelConfig, build_model
from darkraw.nn.modelfiles import BUNDLED_MODELS, bundled_model_path, model_card
from darkraw.raw.dng import write_dng
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw
from darkraw.synth.simulate import darken_mosaic

from conftest import mosaic_from_rgb, smooth_scene, xtrans_meta

TINY = ModelConfig(width=4, fc_hidden=8)
TINY_XTRANS = ModelConfig(in_channels=9, width=4, fc_hidden=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(config=TINY, seed=0):
    return build_model(config, torch.Generator().manual_seed(seed))


def planes(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32) * 0.5


#: Tests that compare outputs to float rounding run in fp32: where the CPU has native bf16,
#: ``precision="auto"`` computes in bf16 (its tolerance is tested in test_fused.py).
FP32 = InferenceOptions(precision="fp32", ensemble=1)


def whole(model, x):
    return run_network(model, x, InferenceOptions(tile=0, precision="fp32", ensemble=1))


def dark_dng(path, pattern, height=30, width=46, seed=0):
    mosaic, meta = mosaic_from_rgb(smooth_scene(height, width, seed), pattern)
    dark, dark_meta = darken_mosaic(mosaic, meta, 50, np.random.default_rng(seed))
    return write_dng(path, dark, dark_meta)


def xtrans_dng(path):
    meta = xtrans_meta(wb_gains=(1.8, 1.0, 1.5))
    mosaic = np.random.default_rng(0).integers(1024, 1400, (36, 48)).astype(np.uint16)
    return write_dng(path, mosaic, meta)


# --- tiling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 15, 16, 17, 100, 160, 161, 300, 1424, 2128])
@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (160, 64), (240, 112), (1024, 112)])
def test_tile_spans_partition_the_axis_on_the_pooling_grid(length, tile, overlap):
    spans = tile_spans(length, tile, overlap, 16)
    keeps = [(k0, k1) for _, _, k0, k1 in spans]
    assert keeps[0][0] == 0 and keeps[-1][1] == length
    assert all(a[1] == b[0] for a, b in itertools.pairwise(keeps))
    for w0, w1, k0, k1 in spans:
        assert w0 % 16 == 0
        assert w0 <= k0 < k1 <= w1
        assert w1 - w0 <= (length if tile == 0 or length <= tile else tile)
        # The margin is kept wherever the window is not cut by the image edge.
        assert k0 - w0 == min(overlap, k0) or len(spans) == 1
        assert w1 - k1 == min(overlap, length - k1) or len(spans) == 1


@pytest.mark.parametrize("size", [(273, 329), (350, 17), (33, 390)])
def test_tiled_equals_whole_frame_with_the_default_margin(size):
    model = tiny_model()
    x = planes((4, *size))
    options = InferenceOptions(tile=240, precision="fp32", ensemble=1)
    assert options.overlap == EXACT_OVERLAP
    assert len(tile_spans(max(size), 240, EXACT_OVERLAP, 16)) > 1
    diff = np.abs(run_network(model, x, options) - whole(model, x))
    assert diff.max() <= TILING_TOLERANCE


@pytest.mark.parametrize("size", [(300, 400), (161, 203)])
def test_a_narrower_margin_is_approximate_within_the_measured_bound(size):
    # Documented: with a 64-pixel margin up to 0.093 for random-init networks (less trained).
    model = tiny_model()
    x = planes((4, *size))
    tiled = run_network(
        model, x, InferenceOptions(tile=160, overlap=64, precision="fp32", ensemble=1)
    )
    diff = np.abs(tiled - whole(model, x))
    assert 1e-4 < diff.max() <= 0.15
    assert diff.mean() < 1e-2


def test_the_sid_network_says_its_windows_as_the_raw_denoiser_does():
    from darkraw import progress

    model, x = tiny_model(), planes((4, 150, 70))
    lines: list[str] = []
    with progress.listening(lines.append):
        run_network(model, x, InferenceOptions(tile=96, overlap=16, precision="fp32", ensemble=1))
        run_network(model, x, FP32)
    n = len(tile_spans(150, 96, 16, 16))
    assert n > 1 and lines == [f"network, window {k}/{n}" for k in range(1, n + 1)] + ["network"]


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (13, 21), (16, 16)])
def test_image_smaller_than_a_tile_is_one_exact_pass(size):
    model = tiny_model()
    x = planes((4, *size))
    out = run_network(model, x, FP32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)[None])[0].clamp(0, 1).numpy()
    assert out.shape == (3, 2 * size[0], 2 * size[1]) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_output_is_clamped_and_xtrans_upscales_by_three():
    out = run_network(tiny_model(TINY_XTRANS), planes((9, 10, 11)) * 40)
    assert out.shape == (3, 30, 33)
    assert out.min() >= 0 and out.max() <= 1


def test_nchw_and_fp32_options_give_the_same_result():
    model, x = tiny_model(), planes((4, 40, 52))
    a = run_network(
        model, x, InferenceOptions(channels_last=False, precision="fp32", threads=2, ensemble=1)
    )
    b = run_network(model, x, InferenceOptions(channels_last=True, precision="fp32", ensemble=1))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert torch.get_num_threads() == 1  # restored after the run


def place_rggb(x):
    """A perfect "network" for RGGB planes: each sample at its own sub-pixel, in its colour."""
    n, _, h, w = x.shape
    out = torch.zeros(n, 3, 2 * h, 2 * w, dtype=x.dtype)
    out[:, 0, 0::2, 0::2], out[:, 1, 0::2, 1::2] = x[:, 0], x[:, 1]
    out[:, 2, 1::2, 1::2], out[:, 1, 1::2, 0::2] = x[:, 2], x[:, 3]
    return out


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_bayer_ensemble_copies_keep_every_sample_at_its_own_sub_pixel(n):
    # Mirroring the packed planes would move red to another corner of the tile in the copies;
    # mirroring the mosaic with a one-pixel shift keeps it RGGB, so a perfect renderer gives
    # the same picture in every copy and the ensemble changes nothing.
    from darkraw.nn.infer import _bayer_ensemble

    x = planes((4, 10, 14))
    expected = place_rggb(torch.from_numpy(x)[None])[0].numpy()
    options = InferenceOptions(tile=0, precision="fp32", ensemble=n)
    got = _bayer_ensemble(place_rggb, x, n, torch.device("cpu"), options)
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_ensemble_averages_copies_that_differ():
    model, x = tiny_model(), planes((4, 20, 28))
    plain = run_network(model, x, FP32)
    for n in (2, 4, 8):
        got = run_network(model, x, dataclasses.replace(FP32, ensemble=n))
        assert got.shape == (3, 40, 56) and got.min() >= 0 and got.max() <= 1
        assert np.abs(got - plain).max() > 1e-4  # the network is not flip-invariant
    tiled = InferenceOptions(tile=256, precision="fp32", ensemble=8)
    np.testing.assert_allclose(
        run_network(model, x, tiled),
        run_network(model, x, dataclasses.replace(tiled, tile=0)),
        atol=TILING_TOLERANCE,
    )


@pytest.mark.parametrize(
    ("pixels", "copies"),
    [
        (1, 8),
        (1_562_500, 8),
        (1_562_501, 4),
        (3_125_000, 4),
        (6_250_000, 2),
        (4256 * 2848, 1),
        (100_000_000, 1),
    ],
)
def test_auto_ensemble_fits_the_work_of_one_full_frame(pixels, copies):
    assert ensemble_copies("auto", pixels) == copies
    assert ensemble_copies(2, pixels) == 2  # a number is taken as given


def test_auto_ensemble_is_the_default_and_runs_eight_copies_on_a_small_frame():
    model, x = tiny_model(), planes((4, 12, 18))
    auto = InferenceOptions(tile=0, precision="fp32")
    assert auto.ensemble == "auto"
    np.testing.assert_array_equal(
        run_network(model, x, auto), run_network(model, x, dataclasses.replace(auto, ensemble=8))
    )


def test_ensemble_with_tiles_and_xtrans():
    model, x = tiny_model(TINY_XTRANS), planes((9, 300, 40))
    tiled = InferenceOptions(tile=256, precision="fp32", ensemble=8)
    out = run_network(model, x, tiled)
    assert out.shape == (3, 900, 120) and out.min() >= 0 and out.max() <= 1
    whole_frame = run_network(model, x, dataclasses.replace(tiled, tile=0))
    np.testing.assert_allclose(out, whole_frame, atol=TILING_TOLERANCE)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((3, 10, 10), r"\(4, h, w\), got \(3, 10, 10\)"), ((4, 10), r"got \(4, 10\)")],
)
def test_bad_planes_are_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        run_network(tiny_model(), np.zeros(shape, np.float32))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile": 100},
        {"overlap": 8},
        {"tile": 128, "overlap": 64},
        {"tile": 128},
        {"tile": -16},
        {"device": "tpu"},
        {"precision": "fp8"},
        {"ensemble": 3},
        {"ensemble": 0},
        {"ensemble": True},
        {"ensemble": "Auto"},
    ],
)
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        InferenceOptions(**kwargs)


# --- model files -------------------------------------------------------------------------------


def test_model_file_round_trip_fp32_is_exact(tmp_path):
    model = tiny_model()
    path = save_model_file(tmp_path / "m.safetensors", model, dtype=torch.float32)
    back = load_model(path)
    assert back.config == model.config and not back.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, rtol=0, atol=0)
    assert all(not p.requires_grad for p in back.parameters())


def test_fp16_model_file_is_smaller_and_predicts_within_tolerance(tmp_path):
    model = tiny_model(ModelConfig(width=8))
    half = save_model_file(tmp_path / "h.safetensors", model, card={"data": "test"})
    full = save_model_file(tmp_path / "f.safetensors", model, dtype=torch.float32)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = planes((4, 48, 64))
    assert np.abs(whole(loaded, x) - whole(model, x)).max() < 2e-3
    assert model_card(half) == {"data": "test"}


def test_training_checkpoint_loads_as_a_model(tmp_path):
    model = tiny_model(seed=3)
    path = tmp_path / "step_0000001.safetensors"
    save_checkpoint(
        path,
        model_state=model.state_dict(),
        optimizer_state=None,
        step=1,
        config={"model": TINY.to_dict(), "steps": 10},
    )
    back = load_model(path)
    x = planes((4, 20, 24))
    np.testing.assert_array_equal(whole(back, x), whole(model, x))
    assert model_card(path) == {}


def _assert_one_line(err, path):
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path))


def test_missing_model_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such model file") as err:
        load_model(tmp_path / "nope.safetensors")
    _assert_one_line(err, tmp_path / "nope.safetensors")


def test_pickle_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_model().state_dict(), path)
    with pytest.raises(CheckpointError, match="pickles are refused") as err:
        load_model(path)
    _assert_one_line(err, path)


def test_truncated_and_flipped_model_files(tmp_path):
    path = save_model_file(tmp_path / "m.safetensors", tiny_model())
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_model(cut)
    _assert_one_line(err, cut)
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    with pytest.raises(CheckpointError, match="sha256 mismatch") as err:
        load_model(flipped)
    _assert_one_line(err, flipped)


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": json.dumps("pt")})
    with pytest.raises(CheckpointError, match="not a darkraw model file or checkpoint") as err:
        load_model(path)
    _assert_one_line(err, path)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(CheckpointError, match="not a darkraw model"):
        load_model(bare)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    path = tmp_path / "step_0000001.safetensors"
    config = {"model": dataclasses.replace(TINY, width=8).to_dict()}
    save_checkpoint(
        path, model_state=tiny_model().state_dict(), optimizer_state=None, step=1, config=config
    )
    with pytest.raises(CheckpointError, match="has shape") as err:
        load_model(path)
    _assert_one_line(err, path)


def test_non_finite_weights_are_refused(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    path = tmp_path / "step_0000001.safetensors"
    config = {"model": TINY.to_dict()}
    state = model.state_dict()
    save_checkpoint(path, model_state=state, optimizer_state=None, step=1, config=config)
    with pytest.raises(CheckpointError, match="not finite"):
        load_model(path)
    with pytest.raises(ValueError, match="not finite"):
        save_model_file(tmp_path / "nan.safetensors", model)


@pytest.mark.parametrize("name", ["sid", "small"])
def test_bundled_model_missing_and_present(tmp_path, monkeypatch, name):
    import darkraw.nn.modelfiles

    missing = tmp_path / f"{name}_model.safetensors"
    monkeypatch.setattr(
        darkraw.nn.modelfiles, "bundled_model_path", lambda n: tmp_path / f"{n}_model.safetensors"
    )
    with pytest.raises(CheckpointError, match=f"no {name} model is bundled") as err:
        resolve_model(name)
    _assert_one_line(err, missing)
    save_model_file(missing, tiny_model())
    assert resolve_model(name).config == TINY


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_bundled_models_are_shipped_and_load(name):
    path = bundled_model_path(name)
    model = resolve_model(name)
    assert model.config.width == (32 if name == "sid" else 16)
    assert model_card(path)["step"] > 0


# --- raw files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_every_bayer_layout_gives_the_full_size_image(tmp_path, pattern):
    raw = read_raw(dark_dng(tmp_path / "d.dng", pattern))
    result = enhance_raw_network(raw.mosaic, raw.meta, tiny_model(), 50.0)
    assert result.image.shape == (3, 30, 46) and result.image.dtype == np.float32
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert result.ratio == 50.0


def test_odd_mosaic_and_orientation(tmp_path):
    mosaic, meta = mosaic_from_rgb(smooth_scene(31, 45), "GBRG")
    rotated = dataclasses.replace(meta, flip=6)
    result = enhance_raw_network(mosaic, rotated, tiny_model(), 1.0)
    assert result.image.shape == (3, 45, 31)
    upright = enhance_raw_network(mosaic, meta, tiny_model(), 1.0).image
    assert upright.shape == (3, 31, 45)
    np.testing.assert_array_equal(result.image, orient(upright, 6))


def test_network_sees_exactly_the_training_input_and_auto_ratio(tmp_path, monkeypatch):
    import darkraw.nn.infer

    raw = read_raw(dark_dng(tmp_path / "d.dng", "GRBG"))
    seen = []

    def fake_run(model, x, options):
        seen.append(x)
        return np.zeros((3, 2 * x.shape[1], 2 * x.shape[2]), np.float32)

    monkeypatch.setattr(darkraw.nn.infer, "run_network", fake_run)
    result = enhance_raw_network(raw.mosaic, raw.meta, tiny_model(), None)
    expected_ratio = auto_ratio(subtract_black_level(raw.mosaic, raw.meta))
    assert result.ratio == pytest.approx(expected_ratio)
    # ... as training shows it: the GRBG mosaic mirrored to RGGB.
    view = rggb_view(raw.mosaic, raw.meta)
    assert view.meta.cfa_name == "RGGB" and view.flips == (False, True)
    np.testing.assert_array_equal(seen[0], network_input(view.mosaic, view.meta, expected_ratio))


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize("size", [(24, 32), (23, 35)])
def test_each_sample_comes_back_at_its_own_pixel_for_every_layout(monkeypatch, pattern, size):
    # A "network" that renders RGGB planes by putting each sample at its RGGB sub-pixel, in its
    # colour's channel: through the mirroring, every sample of any layout must land on its own
    # pixel of the output, in its own colour.
    import darkraw.nn.infer
    from darkraw.raw.cfa import color_index_map, unpack_bayer

    def place(model, x, options):
        mosaic = unpack_bayer(x, "RGGB")
        colors = color_index_map("RGGB", *mosaic.shape)
        return np.stack([np.where(colors == c, mosaic, 0) for c in range(3)]).astype(np.float32)

    monkeypatch.setattr(darkraw.nn.infer, "run_network", place)
    h, w = size
    meta = RawMetadata.for_bayer(
        pattern, h, w, black_level=0.0, white_level=1.0, wb_gains=(1.0, 1.0, 1.0)
    )
    mosaic = np.random.default_rng(0).uniform(0.1, 0.9, size).astype(np.float32)
    image = enhance_raw_network(mosaic, meta, tiny_model(), 1.0).image
    colors = color_index_map(pattern, h, w)
    expected = np.stack([np.where(colors == c, mosaic, 0) for c in range(3)])
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_xtrans_file_with_bayer_model_and_the_reverse(tmp_path):
    xt = read_raw(xtrans_dng(tmp_path / "xt.dng"))
    with pytest.raises(ValueError, match=r"takes Bayer raw .* but this file is X-Trans") as err:
        enhance_raw_network(xt.mosaic, xt.meta, tiny_model(), 10.0)
    assert "\n" not in str(err.value)
    bayer = read_raw(dark_dng(tmp_path / "d.dng", "RGGB"))
    with pytest.raises(ValueError, match=r"takes X-Trans raw .* but this file is Bayer"):
        enhance_raw_network(bayer.mosaic, bayer.meta, tiny_model(TINY_XTRANS), 10.0)
    image = enhance_raw_network(xt.mosaic, xt.meta, tiny_model(TINY_XTRANS), 10.0).image
    assert image.shape == (3, 36, 48)


TINY_RAW = ModelConfig(width=4, fc_hidden=8, output="raw")


@pytest.mark.parametrize("size", [(273, 329), (17, 350)])
def test_raw_output_network_tiled_equals_whole_frame(size):
    model = tiny_model(TINY_RAW)
    x = planes((4, *size))
    tiled = run_network(model, x, InferenceOptions(tile=240, precision="fp32", ensemble=1))
    assert tiled.shape == (4, *size)
    assert np.abs(tiled - whole(model, x)).max() <= TILING_TOLERANCE
    ensemble = run_network(model, x, InferenceOptions(tile=240, precision="fp32", ensemble=2))
    assert ensemble.shape == (4, *size)


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize("flip", [0, 6])
def test_raw_output_network_is_rendered_by_the_file_s_own_pipeline(monkeypatch, pattern, flip):
    # With a network that returns its input, the rendering is the classic pipeline's without
    # denoising: the file's white balance, colour matrix and orientation, and the sRGB curve.
    # (Exact where neither pipeline clips: the network's input is clipped after the colour
    # matrix, the classic pipeline's after demosaicing; this scene stays inside [0, 1].)
    import darkraw.nn.infer
    from darkraw.classic.denoise import Denoiser
    from darkraw.classic.pipeline import ClassicOptions, GammaCurve, gamma_encode, run_classic

    mosaic, meta = mosaic_from_rgb(smooth_scene(31, 45) * 0.5 + 0.1, pattern)
    meta = dataclasses.replace(meta, flip=flip)
    # The network gives its planes through the sRGB curve.
    monkeypatch.setattr(
        darkraw.nn.infer, "run_network", lambda model, x, options: gamma_encode(x, GammaCurve.SRGB)
    )
    got = enhance_raw_network(mosaic, meta, tiny_model(TINY_RAW), 1.5)
    options = ClassicOptions(ratio=1.5, denoiser=Denoiser.NONE, gamma=GammaCurve.SRGB)
    expected = run_classic(mosaic, meta, options).image
    assert got.image.shape == expected.shape == ((3, 45, 31) if flip else (3, 31, 45))
    np.testing.assert_allclose(got.image, expected, atol=2e-5)


def test_raw_output_model_renders_every_layout_and_round_trips_as_a_file(tmp_path):
    model = tiny_model(TINY_RAW)
    raw = read_raw(dark_dng(tmp_path / "d.dng", "BGGR"))
    image = enhance_raw_network(raw.mosaic, raw.meta, model, 50.0).image
    assert image.shape == (3, 30, 46) and image.min() >= 0 and image.max() <= 1
    file = save_model_file(tmp_path / "raw.safetensors", model, dtype=torch.float32)
    loaded = load_model(file)
    assert loaded.config == TINY_RAW
    again = enhance_raw_network(raw.mosaic, raw.meta, loaded, 50.0, FP32).image
    np.testing.assert_allclose(
        again, enhance_raw_network(raw.mosaic, raw.meta, model, 50.0, FP32).image, atol=1e-6
    )


def test_bad_ratio_is_refused():
    mosaic, meta = mosaic_from_rgb(smooth_scene(24, 24), "RGGB")
    with pytest.raises(ValueError, match="ratio"):
        enhance_raw_network(mosaic, meta, tiny_model(), -1.0)


def test_average_weights_is_the_weightwise_mean():
    config = ModelConfig(in_channels=4, width=4, fc_hidden=8)
    models = [build_model(config, torch.Generator().manual_seed(s)) for s in (1, 2, 3)]
    mean = average_weights(models)
    for name, weight in mean.state_dict().items():
        expected = sum(m.state_dict()[name] for m in models) / 3
        torch.testing.assert_close(weight, expected)
    assert mean is not models[0]
    torch.testing.assert_close(
        average_weights(models[:1]).state_dict()["fc.0.weight"],
        models[0].state_dict()["fc.0.weight"],
    )


def test_average_weights_refuses_mixed_configs_and_nothing():
    small = build_model(ModelConfig(in_channels=4, width=4, fc_hidden=8))
    wider = build_model(ModelConfig(in_channels=4, width=8, fc_hidden=8))
    with pytest.raises(ValueError, match="different configs"):
        average_weights([small, wider])
    with pytest.raises(ValueError, match="no models"):
        average_weights([])
