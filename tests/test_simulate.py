import numpy as np
import pytest

from darkraw.metadata import RawMetadata
from darkraw.simulate import darken_mosaic

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
