import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from darkraw.errors import RawReadError, UnsupportedSensorError
from darkraw.raw.dng import write_dng
from darkraw.raw.rawio import BareMosaicSpec, read_raw

from conftest import mosaic_from_rgb, shared_data, smooth_scene


@pytest.fixture
def dng(tmp_path):
    mosaic, meta = mosaic_from_rgb(smooth_scene(64, 96), "GRBG")
    return write_dng(tmp_path / "scene.dng", mosaic, meta), mosaic


def test_missing_file(tmp_path):
    with pytest.raises(RawReadError, match=r"nope\.ARW: no such file"):
        read_raw(tmp_path / "nope.ARW")


def test_empty_file(tmp_path):
    (tmp_path / "empty.dng").write_bytes(b"")
    with pytest.raises(RawReadError, match="empty file"):
        read_raw(tmp_path / "empty.dng")


def test_jpeg_renamed_to_arw(tmp_path):
    path = tmp_path / "photo.ARW"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(path, format="JPEG")
    with pytest.raises(RawReadError, match=r"photo\.ARW: not a raw photo"):
        read_raw(path)


def test_random_bytes_with_raw_extension(tmp_path):
    path = tmp_path / "noise.nef"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(RawReadError, match=r"noise\.nef"):
        read_raw(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_dng(tmp_path, dng, keep):
    path, _ = dng
    data = path.read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(RawReadError, match=r"cut\.dng: "):
        read_raw(cut)


def test_directory_is_not_a_raw_file(tmp_path):
    with pytest.raises(RawReadError, match="is a directory"):
        read_raw(tmp_path)


def test_monochrome_dng_is_unsupported(tmp_path):
    path = tmp_path / "mono.dng"
    tifffile.imwrite(
        path,
        np.full((32, 32), 1000, np.uint16),
        photometric="minisblack",
        extratags=[(50706, "B", 4, (1, 4, 0, 0), True), (50717, "I", 1, 4095, True)],
    )
    with pytest.raises(RawReadError, match=r"mono\.dng"):
        read_raw(path)


def test_bare_npy_png_tiff(tmp_path):
    mosaic = np.random.default_rng(3).integers(25, 1023, (16, 20)).astype(np.uint16)
    np.save(tmp_path / "m.npy", mosaic)
    cv2.imwrite(str(tmp_path / "m.png"), mosaic)
    tifffile.imwrite(tmp_path / "m.tif", mosaic)
    spec = BareMosaicSpec(pattern="GRBG", white_level=1023, black_level=25)
    for name in ("m.npy", "m.png", "m.tif"):
        raw = read_raw(tmp_path / name, spec)
        np.testing.assert_array_equal(raw.mosaic, mosaic)
        assert raw.meta.cfa_name == "GRBG"
        assert raw.meta.black_tile == ((25.0, 25.0), (25.0, 25.0))
        assert raw.meta.white_level == 1023


def test_bare_packed_array_in_raster_order(tmp_path):
    mosaic = np.arange(8 * 10, dtype=np.uint16).reshape(8, 10)
    # (h, w, 4) with channels in the raster order of the 2x2 tile.
    packed = np.stack(
        [mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2]], -1
    )
    np.save(tmp_path / "p.npy", packed)
    raw = read_raw(tmp_path / "p.npy", BareMosaicSpec(pattern="BGGR", white_level=4095))
    np.testing.assert_array_equal(raw.mosaic, mosaic)


def test_bare_mosaic_needs_metadata_and_finite_values(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((8, 8)))
    with pytest.raises(RawReadError, match="--pattern"):
        read_raw(tmp_path / "m.npy")
    bad = np.zeros((8, 8))
    bad[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(RawReadError, match="NaN"):
        read_raw(tmp_path / "nan.npy", BareMosaicSpec("RGGB", 1.0))
    np.save(tmp_path / "rgb.npy", np.zeros((8, 8, 3)))
    with pytest.raises(RawReadError, match=r"single-channel mosaic.*\(8, 8, 3\)"):
        read_raw(tmp_path / "rgb.npy", BareMosaicSpec("RGGB", 1.0))


def test_unsupported_sensor_is_a_read_error():
    assert issubclass(UnsupportedSensorError, RawReadError)


# The files and facts of ../shared/data/README.md.
@pytest.mark.parametrize(
    ("name", "shape", "pattern", "black", "white"),
    [
        ("HERO7_GOPR9231.DNG", (3000, 4000), "RGGB", 0, 16383),
        ("Fusion_GPBK7066.DNG", (3000, 3104), "RGGB", 0, 16383),
        ("RAW_KODAK_DC50.KDC", (512, 768), "GRBG", 0, 16383),
    ],
)
def test_real_raw_files(name, shape, pattern, black, white):
    raw = read_raw(shared_data("raw", name))
    assert raw.mosaic.shape == shape
    assert raw.meta.cfa_name == pattern
    assert set(np.ravel(raw.meta.black_tile)) == {black}
    assert raw.meta.white_level == white
    if name.startswith(("HERO7", "Fusion")):
        assert raw.meta.rgb_cam is not None and raw.meta.wb_gains is not None
        assert raw.meta.make == "GoPro"
    else:
        assert raw.meta.rgb_cam is None  # the Kodak DC50 file has no colour matrix


def test_real_bare_mosaics():
    png = read_raw(
        shared_data("raw", "halide_bayer_small.png"),
        BareMosaicSpec(pattern="GRBG", white_level=1023, black_level=25),
    )
    assert png.mosaic.shape == (344, 256)
    assert png.mosaic.dtype == np.uint16 and png.mosaic.max() < 2048  # about 10-bit data
    npy = read_raw(
        shared_data("raw", "aisp_vivoX90_x90_3_4.npy"),
        BareMosaicSpec(pattern="RGGB", white_level=4095),
    )
    assert npy.mosaic.shape == (1024, 1024)
