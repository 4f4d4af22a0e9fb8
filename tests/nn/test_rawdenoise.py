from dataclasses import replace

import numpy as np
import pytest
import torch

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions, GammaCurve, run_classic
from darkraw.nn import rawdenoise
from darkraw.nn.denoiser import DenoiserConfig, build_denoiser
from darkraw.nn.infer import load_model, save_model_file
from darkraw.nn.inputs import FrameInput, denoiser_input
from darkraw.nn.modelfiles import bundled_model_path
from darkraw.nn.rawdenoise import (
    DenoisedFrame,
    DenoiseOptions,
    default_overlap,
    denoise_frame,
    enhance_with_denoiser,
    ensemble_passes,
    packed_size,
    run_denoiser,
)
from darkraw.nn.tiling import tile_grid, tile_spans
from darkraw.raw.dng import write_dng
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw
from darkraw.synth.noiselevel import BlackOffsetRange, RawNoise, black_offset_range

from conftest import mosaic_from_rgb, smooth_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FP32 = DenoiseOptions(precision="fp32")
NOISE = RawNoise((1e-3,) * 4, (1e-5,) * 4, "test")


def as_array(x):
    """The network's input as one array, whether it was made whole or is made window by window
    (:class:`~darkraw.nn.inputs.FrameInput`, a frame run in one pass)."""
    return x.whole() if isinstance(x, FrameInput) else x


def random_model(config=DenoiserConfig(width=4, levels=3), seed=0):
    """A network that changes its input (the output layer is not left at zero)."""
    net = build_denoiser(config, torch.Generator().manual_seed(seed))
    torch.nn.init.normal_(net.out.weight, std=0.05, generator=torch.Generator().manual_seed(1))
    return net


def scene_mosaic(pattern="RGGB", height=40, width=52, seed=0):
    return mosaic_from_rgb(smooth_scene(height, width, seed), pattern)


@pytest.mark.parametrize("length", [1, 7, 64, 65, 200, 1000])
@pytest.mark.parametrize(("tile", "overlap", "grid"), [(0, 0, 8), (64, 16, 8), (512, 64, 8)])
def test_tile_spans_partition_the_axis_on_the_grid(length, tile, overlap, grid):
    spans = tile_spans(length, tile, overlap, grid)
    kept = [i for _, _, k0, k1 in spans for i in range(k0, k1)]
    assert kept == list(range(length))
    for w0, w1, k0, k1 in spans:
        assert w0 % grid == 0 and w0 <= k0 < k1 <= w1 <= length
        assert tile == 0 or w1 - w0 <= tile


@pytest.mark.parametrize(
    ("height", "width"), [(1, 1), (7, 300), (150, 170), (1424, 2128), (2000, 3000), (3168, 4752)]
)
@pytest.mark.parametrize(
    ("tile", "overlap", "grid"), [(0, 0, 8), (64, 16, 8), (1024, 64, 8), (1280, 64, 8)]
)
def test_tile_grid_partitions_the_frame_within_the_area(height, width, tile, overlap, grid):
    rows, cols = tile_grid(height, width, tile, overlap, grid)
    for spans, length in ((rows, height), (cols, width)):
        kept = [i for _, _, k0, k1 in spans for i in range(k0, k1)]
        assert kept == list(range(length))
        for w0, w1, k0, k1 in spans:
            assert w0 % grid == 0 and w0 <= k0 < k1 <= w1 <= length
            # A window reaches at least the margin beyond what it keeps, or the frame's edge.
            assert k0 - w0 >= min(k0, overlap) and w1 - k1 >= min(length - k1, overlap)
        # One length for every window of an axis, so that a frame's windows have one shape.
        assert len({w1 - w0 for w0, w1, _, _ in spans}) == 1
    tallest = max(w1 - w0 for w0, w1, _, _ in rows)
    widest = max(w1 - w0 for w0, w1, _, _ in cols)
    assert tile == 0 or tallest * widest <= tile * tile


def test_tile_grid_runs_fewer_pixels_than_square_tiles():
    """A 12-Mpixel frame: 2 x 2 windows of 776 x 1128 instead of 2 x 3 squares of up to 1024."""

    def run(spans):
        return sum(w1 - w0 for w0, w1, _, _ in spans)

    rows, cols = tile_grid(1424, 2128, 1024, 64, 8)
    squares = run(tile_spans(1424, 1024, 64, 8)) * run(tile_spans(2128, 1024, 64, 8))
    assert (len(rows), len(cols)) == (2, 2)
    assert run(rows) * run(cols) < 0.95 * squares


@pytest.mark.parametrize("window", [0, 31])
def test_tiles_join_exactly_with_the_default_margin(window):
    config = DenoiserConfig(width=4, levels=4, mean_window=window)
    net = random_model(config)
    x = np.random.default_rng(0).random((8, 200, 230), dtype=np.float32)
    tile = 2 * default_overlap(net) + 16
    rows, cols = tile_grid(200, 230, tile, default_overlap(net), 8)
    assert len(rows) * len(cols) > 1
    whole = run_denoiser(net, x, DenoiseOptions(tile=0, precision="fp32"))
    tiled = run_denoiser(net, x, DenoiseOptions(tile=tile, precision="fp32"))
    assert np.abs(whole - x[:4]).max() > 1e-2  # the network does change its input
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_strength_zero_is_the_undenoised_rendering(pattern):
    mosaic, meta = scene_mosaic(pattern)
    black = float(np.mean(meta.black_tile))
    dark = ((mosaic.astype(np.float32) - black) / 8 + black).round().astype(np.uint16)
    # The black offset is its own step (tested apart): here the frame's level is trusted.
    options = DenoiseOptions(
        strength=0, gamma=GammaCurve.BT709, renderer="darkraw", black_offset="none"
    )
    result = enhance_with_denoiser(dark, meta, random_model(), 8.0, options, noise=NOISE)
    plain = run_classic(dark, meta, ClassicOptions(ratio=8.0, denoiser=Denoiser.NONE)).image
    np.testing.assert_allclose(result.image, plain, atol=2e-6)
    # The clean mosaic is the file's own, amplified: same layout, DN and black level.
    amplified = black + np.clip((dark - black) * 8.0, 0, meta.white_level - black)
    np.testing.assert_allclose(result.mosaic_dn, amplified, rtol=1e-6)


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_every_layout_reaches_the_network_as_r_g1_b_g2(pattern, monkeypatch):
    """A network that brightens its first plane makes every layout's picture redder, and only
    redder: the planes it sees are red, green, blue, green whatever the file's layout."""
    import darkraw.nn.rawdenoise as rawdenoise

    def brighten_red(model, x, options):
        out = as_array(x)[:4].copy()
        out[0] *= 1.5
        return out

    mosaic, meta = scene_mosaic(pattern)
    meta = meta.replace(rgb_cam=None)  # no colour matrix to mix red into the other channels
    plain = enhance_with_denoiser(mosaic, meta, random_model(), 1.0, DenoiseOptions(strength=0))
    monkeypatch.setattr(rawdenoise, "run_denoiser", brighten_red)
    redder = enhance_with_denoiser(mosaic, meta, random_model(), 1.0, FP32, noise=NOISE)
    gain = redder.image.mean(axis=(1, 2)) / plain.image.mean(axis=(1, 2))
    assert gain[0] > 1.15
    assert abs(gain[1] - 1) < 0.03 and abs(gain[2] - 1) < 0.03


@pytest.mark.parametrize(("height", "width"), [(41, 53), (39, 50), (2, 2)])
def test_odd_and_tiny_sizes(height, width):
    mosaic, meta = scene_mosaic("GRBG", height + height % 2, width + width % 2)
    mosaic = mosaic[:height, :width]
    meta = meta.replace(height=height, width=width)
    result = enhance_with_denoiser(mosaic, meta, random_model(), 2.0, FP32, noise=NOISE)
    assert result.image.shape == (3, height, width)
    assert result.mosaic_dn.shape == (height, width)


def test_libraw_renderer_gives_the_files_picture(tmp_path):
    mosaic, meta = scene_mosaic("BGGR", 48, 64)
    path = write_dng(tmp_path / "f.dng", mosaic, meta)
    raw = read_raw(path)
    options = DenoiseOptions(strength=0, renderer="libraw", gamma="bt709", precision="fp32")
    libraw = enhance_with_denoiser(raw.mosaic, raw.meta, random_model(), 1.0, options, source=path)
    ours = enhance_with_denoiser(
        raw.mosaic, raw.meta, random_model(), 1.0, DenoiseOptions(strength=0, gamma="bt709")
    )
    assert libraw.image.shape == ours.image.shape == (3, 48, 64)
    assert np.abs(libraw.image - ours.image).mean() < 0.03
    # LibRaw's 16-bit pixels are kept as they came; the float planes are made from them.
    from darkraw.raw.rawio import planar_float, render_mosaic_with_libraw

    assert libraw.rgb16 is not None and libraw.rgb16.shape == (48, 64, 3)
    np.testing.assert_array_equal(libraw.image, planar_float(libraw.rgb16))
    np.testing.assert_array_equal(
        libraw.image, render_mosaic_with_libraw(path, libraw.mosaic_dn, raw.meta)
    )
    options = DenoiseOptions(strength=0, renderer="darkraw", gamma="bt709")
    darkraws = enhance_with_denoiser(raw.mosaic, raw.meta, random_model(), 1.0, options)
    assert darkraws.rgb16 is None and darkraws.image.dtype == np.float32


XTRANS_CONFIG = DenoiserConfig(width=4, levels=3, planes=9)


def xtrans_scene(height=72, width=96, seed=0):
    """A smooth X-Trans frame (black 1024, white 16383) and its metadata."""
    from conftest import XTRANS, xtrans_meta

    rgb = smooth_scene(height, width, seed)
    colours = np.tile(XTRANS, (height // 6 + 1, width // 6 + 1))[:height, :width]
    linear = np.take_along_axis(rgb, colours[None], axis=0)[0]
    mosaic = np.rint(1024 + linear * (16383 - 1024)).astype(np.uint16)
    return mosaic, xtrans_meta(height, width, wb_gains=(1.8, 1.0, 1.5))


@pytest.mark.parametrize(
    ("net", "layout"), [("bayer", "X-Trans"), ("xtrans", "Bayer")], ids=["bayer", "xtrans"]
)
def test_a_network_for_the_other_layout_is_refused_naming_both(net, layout):
    if net == "bayer":
        mosaic, meta = xtrans_scene()
        model = random_model()
    else:
        mosaic, meta = scene_mosaic()
        model = random_model(XTRANS_CONFIG)
    with pytest.raises(ValueError, match=f"but the file is {layout}"):
        enhance_with_denoiser(mosaic, meta, model, 1.0, FP32)


@pytest.mark.parametrize("renderer", ["darkraw", "libraw"])
@pytest.mark.parametrize(("height", "width"), [(72, 96), (70, 95)])
def test_an_xtrans_frame_goes_through_an_xtrans_network(tmp_path, renderer, height, width):
    mosaic, meta = xtrans_scene(height + (-height) % 6, width + (-width) % 6)
    mosaic = mosaic[:height, :width]
    meta = meta.replace(height=height, width=width)
    path = write_dng(tmp_path / "x.dng", mosaic, meta)
    raw = read_raw(path)
    assert raw.meta.is_xtrans
    options = replace(FP32, renderer=renderer, ensemble=2)
    net = random_model(XTRANS_CONFIG)
    result = enhance_with_denoiser(raw.mosaic, raw.meta, net, 2.0, options, source=path)
    assert result.image.shape == (3, height, width)
    assert result.mosaic_dn.shape == (height, width)
    assert result.passes == 2  # the frame and it turned half round
    plain = enhance_with_denoiser(
        raw.mosaic, raw.meta, net, 2.0, replace(options, strength=0), source=path
    )
    assert np.abs(result.mosaic_dn - plain.mosaic_dn).max() > 10  # the network ran on it


@pytest.mark.parametrize("shift", [(0, 0), (1, 1), (4, 3)])
def test_an_xtrans_tile_starting_anywhere_comes_back_in_place(shift):
    """Strength 0 gives the file's own mosaic, amplified, whatever the tile's phase (16 of the
    pattern's 36 need rows and columns put before them to pack)."""
    from conftest import XTRANS

    mosaic, meta = xtrans_scene(72, 96)
    tile = np.roll(XTRANS, shift, (0, 1))
    meta = meta.replace(cfa_tile=tuple(map(tuple, tile.tolist())))
    zero = replace(FP32, strength=0, renderer="darkraw", black_offset="none")
    result = enhance_with_denoiser(mosaic, meta, random_model(XTRANS_CONFIG), 2.0, zero)
    black = 1024.0
    np.testing.assert_allclose(
        result.mosaic_dn, np.minimum(black + (mosaic - black) * 2.0, 16383), rtol=1e-6
    )
    denoised = enhance_with_denoiser(
        mosaic, meta, random_model(XTRANS_CONFIG), 2.0, FP32, noise=NOISE
    )
    assert denoised.image.shape == (3, 72, 96)


def test_an_xtrans_frames_network_sees_each_colours_noise_and_its_planes(monkeypatch):
    """Each of the nine planes reaches the network with its colour's samples and its colour's
    noise level: the nine planes of a frame whose red, green and blue differ."""
    from conftest import XTRANS, xtrans_meta

    levels = np.array([0.1, 0.4, 0.7])
    mosaic = np.rint(1024 + levels[np.tile(XTRANS, (12, 16))] * (16383 - 1024)).astype(np.uint16)
    meta = xtrans_meta(72, 96)
    seen = {}

    def record(model, x, options):
        seen["x"] = as_array(x).copy()
        return seen["x"][:9].copy()

    noise = RawNoise((1e-3, 2e-3, 3e-3, 2e-3), (0.0,) * 4, "test")
    monkeypatch.setattr(rawdenoise, "run_denoiser", record)
    trusted = replace(FP32, black_offset="none")  # a flat frame with no noise has no black
    enhance_with_denoiser(mosaic, meta, random_model(XTRANS_CONFIG), 1.0, trusted, noise=noise)
    x = seen["x"]
    colours = [0, 0, 1, 1, 1, 1, 1, 2, 2]
    np.testing.assert_allclose(x[:9].mean(axis=(1, 2)), levels[colours], atol=1e-4)
    shot = np.array([1e-3, 2e-3, 3e-3])[colours]
    np.testing.assert_allclose(
        x[9:18].mean(axis=(1, 2)), np.sqrt(shot * levels[colours]), rtol=1e-3
    )
    assert x.shape[0] == 19 and set(np.unique(x[18])) == {-1.0, 1.0}


@pytest.mark.parametrize(("height", "width"), [(72, 96), (70, 95), (61, 49)])
@pytest.mark.parametrize("shift", [(0, 0), (1, 2)])
def test_the_xtrans_half_turn_goes_there_and_back_exactly(monkeypatch, height, width, shift):
    """With a network that returns its input, averaging the frame's pass with the half-turned
    frame's gives the one pass's planes: the turned frame packs to the training tile, and its
    result goes back to each sample's own place; a network that is not symmetric gives another
    average."""
    from conftest import XTRANS

    mosaic, meta = xtrans_scene(72, 96)
    tile = tuple(map(tuple, np.roll(XTRANS, shift, (0, 1)).tolist()))
    meta = meta.replace(cfa_tile=tile, height=height, width=width)
    mosaic = mosaic[:height, :width]
    net = random_model(XTRANS_CONFIG)
    one_pass, two = replace(FP32, ensemble=1), replace(FP32, ensemble=2)
    monkeypatch.setattr(
        rawdenoise, "run_denoiser", lambda model, x, options: as_array(x)[:9].copy()
    )
    one = enhance_with_denoiser(mosaic, meta, net, 2.0, one_pass, noise=NOISE)
    both = enhance_with_denoiser(mosaic, meta, net, 2.0, two, noise=NOISE)
    assert (one.passes, both.passes) == (1, 2) and both.passes_note == (
        "the frame and it turned half round"
    )
    np.testing.assert_allclose(both.mosaic_dn, one.mosaic_dn, rtol=1e-6, atol=1e-3)
    monkeypatch.undo()
    one = enhance_with_denoiser(mosaic, meta, net, 2.0, one_pass, noise=NOISE)
    both = enhance_with_denoiser(mosaic, meta, net, 2.0, two, noise=NOISE)
    assert np.abs(both.mosaic_dn - one.mosaic_dn).max() > 1


@pytest.mark.parametrize("demosaic", ["auto", "best"])
def test_libraw_renders_an_xtrans_frame_from_its_least_size(tmp_path, demosaic):
    from darkraw.raw.rawio import (
        LIBRAW_MIN_XTRANS_SIDE,
        libraw_renders,
        render_mosaic_with_libraw,
        render_with_libraw,
    )

    side = LIBRAW_MIN_XTRANS_SIDE
    mosaic, meta = xtrans_scene(side, side + 6)
    assert libraw_renders(meta) and not libraw_renders(meta.replace(height=side - 1))
    path = write_dng(tmp_path / "x.dng", mosaic, meta)
    raw = read_raw(path)
    options = replace(FP32, strength=0, renderer="libraw", demosaic=demosaic, black_offset="none")
    result = enhance_with_denoiser(
        raw.mosaic, raw.meta, random_model(XTRANS_CONFIG), 1.0, options, source=path
    )
    assert result.rgb16 is not None  # LibRaw rendered it
    best = render_with_libraw(path, adjust_maximum=False)  # LibRaw's own demosaicking
    if demosaic == "best":
        np.testing.assert_array_equal(result.image, best)
    else:  # auto: Markesteijn's single pass, another picture than the three passes
        fast = render_mosaic_with_libraw(path, raw.mosaic, raw.meta, demosaic="fast")
        np.testing.assert_array_equal(result.image, fast)
        assert np.abs(result.image - best).max() > 1e-3


def test_demosaic_must_be_named():
    with pytest.raises(ValueError, match="demosaicking 'ahd'; expected one of auto, best, fast"):
        DenoiseOptions(demosaic="ahd")
    assert DenoiseOptions(demosaic="fast").demosaic.value == "fast"


def test_strength_must_be_a_number_at_least_zero():
    for bad in (-0.1, 2.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="strength"):
            DenoiseOptions(strength=bad)
    assert DenoiseOptions(strength=2.0).strength == 2.0


def test_model_file_round_trip_keeps_the_denoiser(tmp_path):
    net = random_model()
    path = save_model_file(tmp_path / "d.safetensors", net, dtype=torch.float32)
    loaded = load_model(path)
    assert loaded.config == net.config
    x = torch.rand(1, 8, 16, 16)
    torch.testing.assert_close(loaded(x), net(x))


@pytest.fixture(scope="module")
def bundled_denoiser():
    path = bundled_model_path("default")
    model = load_model(path) if path.is_file() else None
    if model is None or model.__class__.__name__ != "RawDenoiser":
        pytest.skip("no raw denoiser is bundled as the default model")
    return model


def test_a_higher_noise_level_smooths_more(bundled_denoiser):
    """On a noisy flat patch, the telling decides how much noise is left."""
    rng = np.random.default_rng(0)
    flat = np.full((64, 64), 0.2, dtype=np.float32)
    meta = RawMetadata.for_bayer("RGGB", 64, 64, white_level=1.0)
    level = RawNoise((2e-3,) * 4, (2e-5,) * 4, "test")
    noisy = flat + rng.normal(0, np.sqrt(2e-3 * 0.2 + 2e-5), flat.shape).astype(np.float32)
    left = []
    for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
        options = DenoiseOptions(strength=strength, precision="fp32")
        out = enhance_with_denoiser(noisy, meta, bundled_denoiser, 1.0, options, noise=level)
        left.append(float(np.std(out.mosaic_dn[8:-8, 8:-8])))
    assert left[0] > left[1] > left[2] > left[3] > left[4]
    assert left[4] < 0.3 * left[0]


@pytest.mark.parametrize("level", [0.005, 0.01, 0.1])
def test_the_bundled_denoiser_keeps_each_colours_level(bundled_denoiser, level):
    """A colour cast is a shift of one plane's level; on a flat noisy frame every plane keeps
    its level (phase 2's weights, before the mean window, put them 3-7 % apart at 0.1)."""
    rng = np.random.default_rng(1)
    shot, read, ratio = 6.3e-5, (2 / 15871) ** 2, 100.0
    clean = np.full((4, 96, 96), level, dtype=np.float32)
    noisy = rng.poisson(clean / (ratio * shot)) * shot + rng.normal(0, np.sqrt(read), clean.shape)
    noise = RawNoise((shot,) * 4, (read,) * 4, "test").amplified(ratio)
    from darkraw.nn.inputs import denoiser_input

    x = denoiser_input(np.minimum(noisy * ratio, 1.0).astype(np.float32), noise)
    out = run_denoiser(bundled_denoiser, x, FP32)
    # Within 3 % at 0.1; at 0.01 (1.6 electrons a sample) within 0.0008 of white, a third of
    # an 8-bit level once rendered.
    np.testing.assert_allclose(out.mean(axis=(1, 2)), level, rtol=0.03, atol=0.0008)
    assert out.std() < 0.5 * x[:4].std()


def test_an_infinite_correction_is_an_error_naming_the_network():
    from darkraw.errors import NetworkOutputError

    net = random_model()
    torch.nn.init.constant_(net.out.weight, 1e38)
    x = np.random.default_rng(0).random((8, 24, 24), dtype=np.float32)
    with pytest.raises(NetworkOutputError, match="NaN or infinite"):
        run_denoiser(net, x, FP32)


def frame_with_black_patch(offset_dn=(0.0, 0.0, 0.0, 0.0), seed=0):
    """A dark noisy RGGB frame (3 DN read noise) whose left quarter is black, with ``offset_dn``
    added to the R, G1, B, G2 samples."""
    mosaic, meta = scene_mosaic("RGGB", 96, 128, seed)
    black = 512.0
    lin = (mosaic.astype(np.float32) - black) / 20
    lin[:, :32] = 0.0
    rng = np.random.default_rng(seed)
    noisy = lin + rng.normal(0.0, 3.0, lin.shape)
    noisy[0::2, 0::2] += offset_dn[0]
    noisy[0::2, 1::2] += offset_dn[1]
    noisy[1::2, 1::2] += offset_dn[2]
    noisy[1::2, 0::2] += offset_dn[3]
    return (noisy + black).astype(np.float32), meta


WIDE_RANGE = BlackOffsetRange((-20 / 16383,) * 4, (20 / 16383,) * 4, "test")


def test_a_black_offset_is_measured_and_taken_out_of_the_output():
    offset = (6.0, -4.0, 3.0, 0.0)
    biased, meta = frame_with_black_patch(offset)
    plain, _ = frame_with_black_patch()
    options = DenoiseOptions(strength=0, renderer="darkraw", black_offset="darkest")
    out = enhance_with_denoiser(biased, meta, random_model(), 8.0, options, black_range=WIDE_RANGE)
    np.testing.assert_allclose(out.black_offset, offset, atol=1.0)
    off = DenoiseOptions(strength=0, renderer="darkraw", black_offset=False)
    truth = enhance_with_denoiser(plain, meta, random_model(), 8.0, off)
    assert truth.black_offset == (0.0,) * 4
    # The DN written back (what LibRaw renders and a DNG stores) carry no offset: within the
    # estimate's error (1 DN) times the ratio.
    error = (out.mosaic_dn - truth.mosaic_dn)[:, 32:]
    assert np.abs(error.mean()) < 8.0
    kept = enhance_with_denoiser(biased, meta, random_model(), 8.0, off)
    assert np.abs((kept.mosaic_dn - truth.mosaic_dn)[0::2, 32::2].mean() - 8 * 6.0) < 8.0


DARKEST = DenoiseOptions(strength=0, black_offset="darkest")


def test_without_a_calibration_the_darkest_rule_corrects_only_black_read_low():
    biased, meta = frame_with_black_patch((5.0, 5.0, -1.5, -1.5))
    out = enhance_with_denoiser(biased, meta, random_model(), 8.0, DARKEST)
    assert out.black_offset[:2] == (0.0, 0.0)
    np.testing.assert_allclose(out.black_offset[2:], -1.5, atol=1.0)


def test_the_darkest_rule_takes_a_calibrated_cameras_range():
    biased, meta = frame_with_black_patch((5.0, 5.0, 5.0, 5.0))
    meta = meta.replace(make="SONY", model="ILCE-7SM2")
    out = enhance_with_denoiser(biased, meta, random_model(), 8.0, DARKEST)
    # The frame's black reads 5 DN high: above the calibration's mean, which is taken.
    limits = black_offset_range("SONY", "ILCE-7SM2", meta.white_level - 512.0)
    np.testing.assert_allclose(out.black_offset, np.array(limits.high) * 15871, atol=1e-3)


@pytest.mark.parametrize("renderer", ["darkraw", "libraw"])
def test_black_offset_off_is_the_measured_offset_of_zero(renderer):
    biased, meta = frame_with_black_patch((4.0, 4.0, -3.0, -3.0))
    off = DenoiseOptions(renderer=renderer, black_offset=False, precision="fp32")
    nothing = BlackOffsetRange((0.0,) * 4, (0.0,) * 4, "none")
    on = DenoiseOptions(renderer=renderer, precision="fp32")
    a = enhance_with_denoiser(biased, meta, random_model(), 8.0, off, noise=NOISE)
    b = enhance_with_denoiser(
        biased, meta, random_model(), 8.0, on, noise=NOISE, black_range=nothing
    )
    assert a.black_offset == b.black_offset == (0.0,) * 4
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mosaic_dn, b.mosaic_dn)


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize("shape", [(37, 53), (64, 96)])
def test_clean_planes_go_back_to_the_files_dn_with_each_positions_black(pattern, shape):
    from darkraw.classic.pipeline import black_level_map, rggb_view
    from darkraw.nn import rawdenoise

    black = ((510.0, 512.0), (515.0, 509.0))
    meta = RawMetadata.for_bayer(pattern, *shape, black_level=black, white_level=16383)
    view = rggb_view(np.zeros(shape, dtype=np.uint16), meta)
    rng = np.random.default_rng(sum(map(ord, pattern)))
    packed = (view.mosaic.shape[0] // 2, view.mosaic.shape[1] // 2)
    clean = rng.random((4, *packed), dtype=np.float32) / 3
    got = rawdenoise._mosaic_dn(clean, view, meta)
    # The same float32 arithmetic over a full-size map of the black level.
    linear = rawdenoise._mosaic_of(clean, view)
    full = black_level_map(meta)
    want = full + linear * (np.float32(16383) - full)
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shift", [(0, 0), (4, 3)])
def test_clean_xtrans_planes_go_back_to_the_files_dn(shift):
    from darkraw.classic.pipeline import rggb_view

    from conftest import XTRANS, xtrans_meta

    tile = tuple(map(tuple, np.roll(XTRANS, shift, (0, 1)).tolist()))
    meta = xtrans_meta(67, 100).replace(cfa_tile=tile)
    view = rggb_view(np.zeros((67, 100), dtype=np.uint16), meta)
    clean = np.random.default_rng(5).random((9, *packed_size((67, 100), meta)), np.float32)
    got = rawdenoise._mosaic_dn(clean, view, meta)
    linear = rawdenoise._mosaic_of(clean, view)
    want = np.float32(1024) + linear * (np.float32(16383) - np.float32(1024))
    assert got.shape == (67, 100)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("layout", "shape"),
    [
        ("RGGB", (40, 52)),
        ("BGGR", (37, 53)),
        ("GRBG", (41, 50)),
        ("GBRG", (39, 51)),
        ((0, 0), (72, 96)),
        ((1, 1), (71, 95)),
        ((4, 3), (67, 100)),
    ],
)
def test_the_offset_tile_repeats_to_the_offsets_mosaic(layout, shape):
    """One period of the offsets' mosaic, repeated, is the full-size mosaic of the offsets:
    every Bayer layout, X-Trans tiles at several phases, odd sizes."""
    from darkraw.classic.pipeline import rggb_view

    from conftest import XTRANS, xtrans_meta

    if isinstance(layout, str):
        meta = RawMetadata.for_bayer(layout, *shape, black_level=512, white_level=16383)
    else:
        tile = tuple(map(tuple, np.roll(XTRANS, layout, (0, 1)).tolist()))
        meta = xtrans_meta(*shape).replace(cfa_tile=tile)
    offset = np.arange(1, 10 if meta.is_xtrans else 5, dtype=np.float32) / 97
    view = rggb_view(np.zeros(shape, dtype=np.uint16), meta)
    planes = np.broadcast_to(offset[:, None, None], (len(offset), *packed_size(shape, meta)))
    want = rawdenoise._mosaic_of(planes, view)
    tile = rawdenoise._offset_tile(offset, meta)
    reps = (-(-shape[0] // meta.period), -(-shape[1] // meta.period))
    np.testing.assert_array_equal(np.tile(tile, reps)[: shape[0], : shape[1]], want)
    assert len(np.unique(tile)) == len(offset)  # every plane's offset is there


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (64, 96, 3), (301, 203, 3)])
def test_a_constant_picture_is_found_in_libraws_pixels(shape):
    from darkraw.nn.enhance import _is_constant, _is_constant_pixels

    flat = np.zeros(shape, dtype=np.uint16) + np.array([7, 8, 9], dtype=np.uint16)
    varied = flat.copy()
    varied[-1, -1, 2] = 10  # off the sparse grid: only the whole read sees it
    for rgb in (flat, varied):
        assert _is_constant_pixels(rgb) == _is_constant(np.moveaxis(rgb, -1, 0))
    assert _is_constant_pixels(flat) == (shape[0] * shape[1] > 1)
    assert not _is_constant_pixels(varied)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 5), (64, 96), (301, 1203)])
def test_a_constant_mosaic_is_found_with_its_grid_or_without(shape):
    from darkraw.nn.enhance import _is_constant_mosaic

    flat = np.empty(shape, dtype=np.float32)
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        flat[r::2, c::2] = 500 + 10 * r + c  # one value per position of the tile
    varied = flat.copy()
    varied[-1, -1] += 1  # off the sparse grid: only the whole read sees it
    whole = all(flat[r::2, c::2].size > 1 for r in (0, 1) for c in (0, 1))
    assert _is_constant_mosaic(flat) == whole
    assert not _is_constant_mosaic(varied)
    varied[0, 2 % shape[1]] += 1  # on the grid
    assert not _is_constant_mosaic(varied)


@pytest.mark.parametrize("shape", [(7,), (37, 53), (3, 301, 203), (1500, 2000)])
def test_a_non_finite_value_is_found_anywhere(shape):
    from darkraw.nn.enhance import _all_finite

    values = np.zeros(shape, dtype=np.float32)
    assert _all_finite(values)
    for where, bad in ((0, np.nan), (-1, np.inf), (values.size // 2, -np.inf)):
        broken = values.copy()
        broken.flat[where] = bad
        assert not _all_finite(broken)


@pytest.mark.parametrize("renderer", ["darkraw", "libraw"])
def test_a_denoised_frame_renders_the_picture_of_enhance_with_denoiser(tmp_path, renderer):
    mosaic, meta = scene_mosaic("GBRG", 48, 64)
    source = tmp_path / "s.dng"
    write_dng(source, mosaic, meta)
    options = DenoiseOptions(precision="fp32", renderer=renderer)
    model = random_model()
    whole = enhance_with_denoiser(mosaic, meta, model, 3.0, options, noise=NOISE, source=source)
    frame = denoise_frame(mosaic, meta, model, 3.0, options, noise=NOISE, source=source)
    assert isinstance(frame, DenoisedFrame)
    np.testing.assert_array_equal(frame.mosaic_dn, whole.mosaic_dn)
    assert (frame.ratio, frame.noise, frame.strength) == (whole.ratio, whole.noise, 1.0)
    result = frame.render()
    np.testing.assert_array_equal(result.rendered, whole.rendered)
    assert result.rendered.dtype == (np.uint16 if renderer == "libraw" else np.float32)


@pytest.mark.parametrize(("pattern", "height", "width"), [("RGGB", 100, 132), ("GBRG", 101, 133)])
def test_the_first_window_is_prepared_beside_the_noise_measurement(
    tmp_path, monkeypatch, pattern, height, width
):
    """An ONNX model is told the first window's size before the frame's planes are made and its
    noise measured (OpenVINO compiles it then, in another thread): the size of the planes the
    run then cuts (odd mosaics padded to whole tiles); the output is the same."""
    import threading

    from darkraw.nn.onnx_export import export_onnx
    from darkraw.nn.runtime import OnnxDenoiser, load_onnx_denoiser

    onnx = load_onnx_denoiser(export_onnx(random_model(), tmp_path / "m.onnx"), device="cpu")
    asked: list[tuple[tuple[int, int], str]] = []

    def prepare(self, h, w):
        asked.append(((h, w), threading.current_thread().name))

    options = DenoiseOptions(tile=32, overlap=8, renderer="darkraw")
    mosaic, meta = scene_mosaic(pattern, height=height, width=width)
    plain = denoise_frame(mosaic, meta, onnx, 4.0, options, noise=NOISE).render()
    monkeypatch.setattr(OnnxDenoiser, "prepare", prepare)
    frame = denoise_frame(mosaic, meta, onnx, 4.0, options, noise=NOISE)
    for thread in threading.enumerate():
        if thread.name == "darkraw-prepare":
            thread.join()
    grid = onnx.config.pad_multiple
    packed = ((height + 1) // 2, (width + 1) // 2)
    (y0, y1, _, _), (x0, x1, _, _) = (spans[0] for spans in tile_grid(*packed, 32, 8, grid))
    assert asked == [((y1 - y0, x1 - x0), "darkraw-prepare")]
    np.testing.assert_array_equal(frame.render().image, plain.image)
    asked.clear()
    denoise_frame(mosaic, meta, onnx, 4.0, DenoiseOptions(tile=0, renderer="darkraw"), noise=NOISE)
    for thread in threading.enumerate():
        if thread.name == "darkraw-prepare":
            thread.join()
    assert asked == [(packed, "darkraw-prepare")]  # one window: the whole planes
    asked.clear()
    denoise_frame(mosaic, meta, onnx, 4.0, DenoiseOptions(strength=0), noise=NOISE)
    assert asked == []


@pytest.mark.parametrize("shift", [(0, 0), (1, 0), (2, 5), (3, 3)])
@pytest.mark.parametrize(("height", "width"), [(72, 96), (71, 97), (40, 51)])
def test_the_packed_size_is_known_before_the_planes_are_made(shift, height, width):
    from darkraw.nn.rawdenoise import packed_size, prepare_frame

    from conftest import XTRANS

    mosaic, meta = xtrans_scene(72, 102)
    tile = tuple(map(tuple, np.roll(XTRANS, shift, (0, 1)).tolist()))
    meta = meta.replace(cfa_tile=tile, height=height, width=width)
    planes = prepare_frame(mosaic[:height, :width], meta).planes
    assert planes.shape[1:] == packed_size((height, width), meta)
    bayer, bayer_meta = scene_mosaic("GBRG", 40, 52)
    bayer_meta = bayer_meta.replace(height=39, width=51)
    planes = prepare_frame(bayer[:39, :51], bayer_meta).planes
    assert planes.shape[1:] == packed_size((39, 51), bayer_meta)


# --- The self-ensemble: the frame and its transpose -------------------------------------------


def test_auto_runs_as_many_passes_as_fit_in_a_full_frames_work():
    assert ensemble_passes("auto", 1_562_500) == 8
    assert ensemble_passes("auto", 1_562_501) == 4
    assert ensemble_passes("auto", 3_125_000) == 4
    assert ensemble_passes("auto", 3_125_001) == 2
    assert ensemble_passes("auto", 6_250_000) == 2
    assert ensemble_passes("auto", 6_250_001) == 1
    assert ensemble_passes("auto", 4256 * 2848) == 1  # a 12-Mpixel frame: one pass, as timed
    assert ensemble_passes(1, 100) == 1 and ensemble_passes(2, 10**8) == 2


@pytest.mark.parametrize("ensemble", [0, 3, 5, 16, True, "2", None])
def test_other_ensembles_are_refused(ensemble):
    with pytest.raises(ValueError, match="ensemble is 1, 2, 4, 8 or 'auto'"):
        DenoiseOptions(ensemble=ensemble)


def test_two_passes_average_the_frame_and_its_transpose():
    net = random_model()
    mosaic, meta = scene_mosaic(height=48, width=64)
    options = DenoiseOptions(precision="fp32", renderer="darkraw", black_offset=False, ensemble=2)
    two = denoise_frame(mosaic, meta, net, 4.0, options, noise=NOISE)
    one = denoise_frame(mosaic, meta, net, 4.0, replace(options, ensemble=1), noise=NOISE)
    assert (two.passes, one.passes) == (2, 1)
    # By hand: the network's planes for the input and for the transposed input, averaged.
    planes = rawdenoise.prepare_frame(mosaic, meta, black_offset=False).planes
    x = denoiser_input(planes, NOISE.amplified(4.0), ratio=4.0)
    swap = [0, 3, 2, 1, 4, 7, 6, 5]
    first = run_denoiser(net, x, options)
    second = run_denoiser(net, np.ascontiguousarray(x[swap].transpose(0, 2, 1)), options)
    expected = (first + second[[0, 3, 2, 1]].transpose(0, 2, 1)) * np.float32(0.5)
    expected_dn = rawdenoise._mosaic_dn(
        np.clip(expected, 0, 1), rawdenoise.rggb_view(mosaic, meta), meta
    )
    np.testing.assert_array_equal(two.mosaic_dn, expected_dn)
    assert np.abs(two.mosaic_dn - one.mosaic_dn).max() > 0.5  # the second pass changed it


def test_with_both_passes_a_transposed_frame_gives_the_transposed_result():
    """The ensemble is exactly symmetric: the same picture whichever way the sensor lay."""
    net = random_model()
    mosaic, meta = scene_mosaic(height=40, width=56)
    options = DenoiseOptions(precision="fp32", renderer="darkraw", black_offset=False, ensemble=2)
    upright = denoise_frame(mosaic, meta, net, 4.0, options, noise=NOISE)
    meta_t = meta.replace(height=meta.width, width=meta.height)
    lying = denoise_frame(np.ascontiguousarray(mosaic.T), meta_t, net, 4.0, options, noise=NOISE)
    np.testing.assert_array_equal(lying.mosaic_dn, upright.mosaic_dn.T)


def test_auto_takes_one_pass_above_its_budget(monkeypatch):
    net = random_model()
    mosaic, meta = scene_mosaic(height=40, width=56)
    options = DenoiseOptions(precision="fp32", renderer="darkraw")
    small = denoise_frame(mosaic, meta, net, 4.0, options, noise=NOISE)
    monkeypatch.setattr(rawdenoise, "ENSEMBLE_AUTO_PIXELS", 40 * 56 * 2 - 1)
    large = denoise_frame(mosaic, meta, net, 4.0, options, noise=NOISE)
    once = denoise_frame(mosaic, meta, net, 4.0, replace(options, ensemble=1), noise=NOISE)
    assert (small.passes, large.passes, once.passes) == (8, 1, 1)
    np.testing.assert_array_equal(large.mosaic_dn, once.mosaic_dn)
    stopped = denoise_frame(mosaic, meta, net, 4.0, DenoiseOptions(strength=0), noise=NOISE)
    assert stopped.passes == 0


def test_two_passes_stay_exact_across_tiles():
    net = random_model(DenoiserConfig(width=4, levels=3))
    mosaic, meta = scene_mosaic(height=200, width=232)
    tile = 2 * default_overlap(net) + 16
    results = [
        denoise_frame(
            mosaic,
            meta,
            net,
            4.0,
            DenoiseOptions(precision="fp32", renderer="darkraw", ensemble=2, tile=t),
            noise=NOISE,
        ).mosaic_dn
        for t in (0, tile)
    ]
    # torch runs a tile with other float sums than the whole frame: 1e-6 of white.
    np.testing.assert_allclose(results[1], results[0], rtol=0, atol=0.02)


# --- Ensembles of 4 and 8: the frame mirrored and turned --------------------------------------


@pytest.mark.parametrize("passes", [4, 8])
@pytest.mark.parametrize(
    ("layout", "height", "width"),
    [
        ("RGGB", 40, 52),
        ("BGGR", 41, 52),
        ("GRBG", 40, 53),
        ("GBRG", 39, 47),
        ("RGGB", 2, 2),
        ("GRBG", 3, 5),
        ("xtrans", 70, 95),
        ("xtrans", 7, 6),
    ],
)
def test_every_pass_goes_there_and_back_exactly(monkeypatch, passes, layout, height, width):
    """With a network that returns its input, every mirrored and turned pass gives back the one
    pass's mosaic: each moved frame goes back to each sample's own place."""
    if layout == "xtrans":
        from conftest import XTRANS

        mosaic, meta = xtrans_scene(72, 96)
        tile = tuple(map(tuple, np.roll(XTRANS, (1, 2), (0, 1)).tolist()))
        meta = meta.replace(cfa_tile=tile, height=height, width=width)
        mosaic = mosaic[:height, :width]
        planes = 9
    else:
        mosaic, meta = scene_mosaic(layout, height, width)
        planes = 4
    calls = []

    def identity(model, x, options):
        calls.append(x.shape)
        return as_array(x)[:planes].copy()

    monkeypatch.setattr(rawdenoise, "run_denoiser", identity)
    net = random_model(XTRANS_CONFIG if planes == 9 else DenoiserConfig(width=4, levels=3))
    one = enhance_with_denoiser(mosaic, meta, net, 2.0, replace(FP32, ensemble=1), noise=NOISE)
    many = enhance_with_denoiser(
        mosaic, meta, net, 2.0, replace(FP32, ensemble=passes), noise=NOISE
    )
    assert many.passes == passes and len(calls) == 1 + passes
    # One size for each orientation, so that a runtime compiled per size compiles twice.
    assert len(set(calls[1:])) <= 2
    assert many.passes_note == rawdenoise.ensemble_note(passes, planes == 9)
    np.testing.assert_allclose(many.mosaic_dn, one.mosaic_dn, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("passes", [4, 8])
@pytest.mark.parametrize("layout", ["RGGB", "xtrans"])
def test_every_pass_is_a_frame_the_network_was_trained_on(monkeypatch, passes, layout):
    """On a flat field of three colours, every pass's planes hold the colours of the training
    layout (R, G1, B, G2; or R, R, G x 5, B, B): the moved frames are packed one pixel away or
    on a shift of Fujifilm's pattern, never with the colours swapped."""
    levels = np.array([0.6, 0.3, 0.1])
    if layout == "xtrans":
        from conftest import XTRANS, xtrans_meta

        height, width = 70, 95
        colours = np.tile(XTRANS, (13, 17))[:height, :width]
        meta = xtrans_meta(height, width, wb_gains=(1.8, 1.0, 1.5))
        order = [0, 0, 1, 1, 1, 1, 1, 2, 2]
    else:
        height, width = 41, 53
        colours = np.tile([[0, 1], [1, 2]], (21, 27))[:height, :width]
        _, meta = scene_mosaic("RGGB", height, width)
        order = [0, 1, 2, 1]
    black, white = float(np.mean(meta.black_tile)), float(meta.white_level)
    mosaic = (black + levels[colours] * (white - black)).astype(np.float32)
    seen = []

    def record(model, x, options):
        x = as_array(x)
        seen.append(x[: len(order)].mean(axis=(1, 2)))
        return x[: len(order)].copy()

    monkeypatch.setattr(rawdenoise, "run_denoiser", record)
    net = random_model(XTRANS_CONFIG if layout == "xtrans" else DenoiserConfig(width=4, levels=3))
    options = replace(FP32, ensemble=passes, black_offset=False)
    enhance_with_denoiser(mosaic, meta, net, 1.0, options, noise=NOISE)
    assert len(seen) == passes
    for means in seen:
        np.testing.assert_allclose(means, levels[order], atol=1e-4)


def test_with_eight_passes_a_mirrored_or_turned_frame_gives_the_same_moved_result():
    """All eight passes make the ensemble exactly symmetric: the same picture however the
    frame is mirrored or turned (to float rounding)."""
    net = random_model()
    mosaic, meta = scene_mosaic(height=40, width=56)
    options = DenoiseOptions(precision="fp32", renderer="darkraw", black_offset=False, ensemble=8)
    upright = denoise_frame(mosaic, meta, net, 4.0, options, noise=NOISE).mosaic_dn
    once = denoise_frame(mosaic, meta, net, 4.0, replace(options, ensemble=1), noise=NOISE)
    assert np.abs(upright - once.mosaic_dn).max() > 0.5  # the other passes changed it
    for move in rawdenoise.BAYER_PASSES[1:]:
        moved = np.ascontiguousarray(rawdenoise._moved(mosaic, move))
        pattern = rawdenoise._moved(np.array([["R", "G"], ["G", "B"]]), move)
        moved_meta = meta.replace(
            cfa_tile=tuple(
                tuple({"R": 0, "G": 1, "B": 2}[c] for c in row) for row in pattern.tolist()
            ),
            height=moved.shape[0],
            width=moved.shape[1],
        )
        result = denoise_frame(moved, moved_meta, net, 4.0, options, noise=NOISE).mosaic_dn
        np.testing.assert_allclose(result, rawdenoise._moved(upright, move), rtol=0, atol=0.02)


def test_the_raw_denoiser_says_its_passes_and_windows():
    import re

    from darkraw import progress

    mosaic, meta = scene_mosaic("RGGB", 96, 128)
    options = replace(FP32, tile=48, overlap=16, ensemble=2, renderer="darkraw")
    lines: list[str] = []
    with progress.listening(lines.append):
        enhance_with_denoiser(mosaic, meta, random_model(), 4.0, options)
        one = replace(options, ensemble=1, tile=0)
        enhance_with_denoiser(mosaic, meta, random_model(), 4.0, one, noise=NOISE)
    assert lines[0] == "measuring the noise" and lines[-1] == "network"
    windows = lines[1:-1]
    first = [line for line in windows if line.startswith("pass 1/2, ")]
    n = len(first)
    assert n > 1 and windows == [
        f"pass {p}/2, network, window {k}/{n}" for p in (1, 2) for k in range(1, n + 1)
    ]
    assert all(re.fullmatch(r"pass [12]/2, network, window \d/\d", line) for line in windows)
