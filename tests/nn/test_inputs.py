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
