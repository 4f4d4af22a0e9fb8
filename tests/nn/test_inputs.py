import numpy as np
import pytest

from darkraw.classic.pipeline import (
    auto_ratio,
    pack,
    sampled_raw_lin,
    subtract_black_level,
)
from darkraw.nn.inputs import amplify, denoiser_planes
from darkraw.raw.metadata import RawMetadata

PATTERNS = ["RGGB", "BGGR", "GRBG", "GBRG"]


def meta_of(pattern: str, height: int, width: int) -> RawMetadata:
    """Bayer metadata whose four black levels differ, as some cameras' do."""
    black = (500.0, 510.0, 505.0, 498.5)
    return RawMetadata.for_bayer(pattern, height, width, black_level=black, white_level=16383)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("ratio", [1.0, 3.7, 300.0])
@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_denoiser_planes_equal_the_general_path(pattern, ratio, dtype):
    """The one-pass planes (even Bayer mosaics) are bit for bit those of black level, pack and
    amplify, for every layout, integer and float mosaics and ratios that clip at white."""
    meta = meta_of(pattern, 64, 96)
    rng = np.random.default_rng(0)
    mosaic = (rng.random((64, 96)) * 16383).astype(dtype)
    general = amplify(pack(subtract_black_level(mosaic, meta), meta), ratio)
    fast = denoiser_planes(mosaic, meta, ratio)
    assert fast.dtype == np.float32 and fast.shape == (4, 32, 48)
    np.testing.assert_array_equal(fast, general)


def test_denoiser_planes_of_odd_sizes_take_the_general_path():
    meta = meta_of("GRBG", 63, 95)
    mosaic = np.random.default_rng(1).integers(0, 16383, size=(63, 95)).astype(np.uint16)
    general = amplify(pack(subtract_black_level(mosaic, meta), meta), 2.0)
    np.testing.assert_array_equal(denoiser_planes(mosaic, meta, 2.0), general)


@pytest.mark.parametrize(("height", "width"), [(8, 10), (1000, 1000), (1001, 1999), (2000, 3001)])
def test_auto_ratio_of_the_sampled_values_is_the_whole_frames(height, width):
    meta = meta_of("BGGR", height, width)
    mosaic = np.random.default_rng(2).integers(400, 3000, size=(height, width)).astype(np.uint16)
    values, step = sampled_raw_lin(mosaic, meta)
    np.testing.assert_array_equal(values, subtract_black_level(mosaic, meta).ravel()[::step])
    assert auto_ratio(values) == auto_ratio(subtract_black_level(mosaic, meta))


@pytest.mark.parametrize(("height", "width"), [(8, 10), (1001, 1999)])
def test_a_tile_taken_from_the_sampled_values_is_taken_at_each_samples_place(height, width):
    meta = meta_of("GBRG", height, width)
    mosaic = np.random.default_rng(3).integers(400, 3000, size=(height, width)).astype(np.uint16)
    less = np.array([[0.01, 0.02], [0.03, 0.04]], dtype=np.float32)
    values, step = sampled_raw_lin(mosaic, meta, less)
    reps = (-(-height // 2), -(-width // 2))
    full = subtract_black_level(mosaic, meta) - np.tile(less, reps)[:height, :width]
    np.testing.assert_array_equal(values, full.ravel()[::step])


@pytest.mark.parametrize("shape", [(4, 37, 53), (2, 4, 9, 8), (5,)])
def test_amplify_is_times_ratio_clipped_at_white_into_any_buffer(shape):
    planes = np.random.default_rng(1).normal(0.2, 0.3, shape).astype(np.float32)
    want = np.minimum(planes * np.float32(7.5), np.float32(1.0))
    np.testing.assert_array_equal(amplify(planes, 7.5), want)
    out = np.full(shape, np.nan, dtype=np.float32)
    assert amplify(planes, 7.5, out=out) is out
    np.testing.assert_array_equal(out, want)
    assert (want < 0).any()  # not clipped below: the noise around black stays
    with pytest.raises(ValueError, match="out must be"):
        amplify(planes, 2.0, out=np.empty(shape, dtype=np.float64))


@pytest.mark.parametrize("with_map", [True, False])
def test_denoiser_input_amplifies_in_place_as_amplify_then_input(with_map):
    from darkraw.nn.inputs import denoiser_input
    from darkraw.synth.noiselevel import RawNoise

    planes = np.random.default_rng(2).random((4, 33, 41), dtype=np.float32) * 0.05
    noise = RawNoise((1e-3, 2e-3, 3e-3, 2e-3), (1e-5,) * 4, "test").amplified(20.0)
    want = denoiser_input(amplify(planes, 20.0), noise, with_map=with_map)
    got = denoiser_input(planes, noise, with_map=with_map, ratio=20.0)
    np.testing.assert_array_equal(got, want)
    assert got.shape == ((8 if with_map else 4), 33, 41)


def test_each_xtrans_plane_takes_its_colours_noise():
    from darkraw.nn.inputs import denoiser_input, noise_entries
    from darkraw.synth.noiselevel import RawNoise

    assert noise_entries(4) == (0, 1, 2, 3)
    assert noise_entries(9) == (0, 0, 1, 1, 1, 1, 1, 2, 2)
    with pytest.raises(ValueError, match="9"):
        noise_entries(5)
    planes = np.full((9, 12, 12), 0.25, dtype=np.float32)
    noise = RawNoise((1e-3, 2e-3, 3e-3, 4e-3), (1e-5, 2e-5, 3e-5, 4e-5), "test")
    x = denoiser_input(planes, noise)
    assert x.shape == (19, 12, 12)
    want = [np.sqrt(noise.shot[e] * 0.25 + noise.read[e]) for e in noise_entries(9)]
    np.testing.assert_allclose(x[9:18, 5, 5], want, rtol=1e-5)
    np.testing.assert_array_equal(x[:9], planes)
    # The last channel says which kind of 3x3 block each packed pixel is: a checkerboard, the
    # tile's top-left kind 1.
    np.testing.assert_array_equal(x[18, :2, :2], [[1, -1], [-1, 1]])
    assert denoiser_input(planes, noise, with_map=False).shape == (10, 12, 12)
    assert denoiser_input(planes[:4], noise).shape == (8, 12, 12)


WINDOWS = [
    (slice(0, 45), slice(0, 61)),  # the whole frame
    (slice(0, 1), slice(60, 61)),  # a corner sample
    (slice(7, 30), slice(13, 40)),  # inside: its 3x3 means reach beyond it
    (slice(44, 45), slice(0, 61)),  # the last row
    (slice(1, 44), slice(1, 60)),  # all but the border
]


@pytest.mark.parametrize("count", [4, 9])
@pytest.mark.parametrize("with_map", [True, False])
@pytest.mark.parametrize("with_opencv", [True, False])
def test_frame_input_windows_are_the_whole_inputs_bit_for_bit(
    count, with_map, with_opencv, monkeypatch
):
    """A frame run once takes its input window by window: each window's planes, noise map and
    X-Trans block kinds are the whole input's at the same samples, exactly."""
    from darkraw.classic import filters
    from darkraw.nn.inputs import FrameInput, denoiser_input
    from darkraw.synth.noiselevel import RawNoise

    monkeypatch.setattr(filters, "USE_OPENCV", with_opencv)
    rng = np.random.default_rng(5)
    planes = rng.random((count, 45, 61), dtype=np.float32) * 0.05 - 0.002
    noise = RawNoise((1e-3, 2e-3, 3e-3, 2e-3), (1e-5, 2e-5, 3e-5, 4e-5), "test").amplified(20.0)
    want = denoiser_input(planes, noise, with_map=with_map, ratio=20.0)
    given = planes.copy()
    frame = FrameInput.amplified_in_place(given, noise, with_map=with_map, ratio=20.0)
    np.testing.assert_array_equal(given, want[:count])  # the planes became the amplified ones
    assert frame.planes is given and frame.shape == want.shape
    np.testing.assert_array_equal(frame.whole(), want)
    for rows, cols in WINDOWS:
        out = np.empty((want.shape[0], rows.stop - rows.start, cols.stop - cols.start), np.float32)
        frame.fill(rows, cols, out)
        np.testing.assert_array_equal(out, want[:, rows, cols])


def test_frame_input_refuses_what_it_cannot_take():
    from darkraw.nn.inputs import FrameInput
    from darkraw.synth.noiselevel import RawNoise

    noise = RawNoise((1e-3,) * 4, (1e-5,) * 4, "test")
    with pytest.raises(ValueError, match="float32"):
        FrameInput.amplified_in_place(np.zeros((4, 8, 8)), noise, ratio=2.0)
    with pytest.raises(ValueError, match="float32"):
        FrameInput.amplified_in_place(np.zeros((3, 8, 8), np.float32), noise, ratio=2.0)
    frame = FrameInput.amplified_in_place(np.zeros((4, 8, 8), np.float32), noise, ratio=2.0)
    with pytest.raises(ValueError, match="out must be"):
        frame.fill(slice(0, 4), slice(0, 4), np.empty((8, 4, 5), np.float32))
