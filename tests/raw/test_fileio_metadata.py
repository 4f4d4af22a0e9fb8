"""PNG, JPEG and TIFF outputs carry the source's EXIF and an sRGB ICC profile."""

import numpy as np
import pytest
import tifffile
from PIL import Image
from test_exif import LENS_MODEL, known_source

from darkraw.raw.exif import (
    ISO_SPEED,
    ORIENTATION,
    OutputTags,
    SourceMetadata,
    output_tags,
    srgb_icc_profile,
)
from darkraw.raw.fileio import write_image
from darkraw.raw.metadata import RawMetadata


@pytest.fixture
def image():
    return np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)


def tags():
    meta = RawMetadata.for_bayer("RGGB", 4, 4, make="Acme", model="Nightcam", flip=6)
    return output_tags(known_source(), meta)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_png_and_jpeg_carry_exif_and_icc(tmp_path, image, suffix):
    path = write_image(tmp_path / f"x{suffix}", image, tags())
    with Image.open(path) as pil:
        assert pil.info["icc_profile"] == srgb_icc_profile()
        exif = pil.getexif()
        assert exif[271] == "Acme"
        assert exif[ORIENTATION] == 1
        assert exif.get_ifd(0x8769)[ISO_SPEED] == 6400
        assert exif.get_ifd(0x8769)[LENS_MODEL] == "Acme 35mm f/1.8"
        assert exif.get_ifd(0x8825)[1] == "N"


def test_16_bit_tiff_carries_exif_gps_and_icc(tmp_path, image):
    path = write_image(tmp_path / "x.tif", image, tags())
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.dtype == np.uint16
        assert page.tags["InterColorProfile"].value == srgb_icc_profile()
        assert page.tags["Make"].value == "Acme"
        assert page.tags["ExifTag"].value["LensModel"] == "Acme 35mm f/1.8"
        assert page.tags["GPSTag"].value["GPSLatitudeRef"] == "N"
        np.testing.assert_array_equal(page.asarray()[..., 0] > 0, image[0] * 65535 >= 0.5)


def test_16_bit_tiff_strips_are_deflated_after_the_horizontal_predictor(tmp_path):
    from darkraw.raw.fileio import TIFF_ROWS_PER_STRIP, read_image

    height = 2 * TIFF_ROWS_PER_STRIP + 5
    yy, xx = np.mgrid[0:height, 0:300] / 40.0
    image = np.stack([0.5 + 0.4 * np.sin(xx + k) * np.cos(yy - k) for k in range(3)])
    path = write_image(tmp_path / "x.tiff", image.astype(np.float32))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.compression == 8 and page.predictor == 2  # Adobe Deflate, horizontal
        assert len(page.dataoffsets) == 3
        want = np.rint(np.moveaxis(image.astype(np.float32), 0, -1) * 65535).astype(np.uint16)
        np.testing.assert_array_equal(page.asarray(), want)
    np.testing.assert_array_equal(read_image(path), np.moveaxis(want, -1, 0) / np.float32(65535))
    # Smooth samples: the differences the predictor leaves deflate better than the samples.
    plain = tmp_path / "plain.tiff"
    tifffile.imwrite(plain, want, photometric="rgb", compression="zlib", rowsperstrip=128)
    assert path.stat().st_size < 0.9 * plain.stat().st_size


def test_an_output_without_source_metadata_still_gets_the_profile(tmp_path, image):
    path = write_image(tmp_path / "x.png", image)
    with Image.open(path) as pil:
        assert pil.info["icc_profile"] == OutputTags().icc
    path = write_image(tmp_path / "y.jpg", image, output_tags(SourceMetadata(), None))
    with Image.open(path) as pil:
        assert pil.getexif()[305] == "darkraw"
        assert pil.getexif()[ORIENTATION] == 1


@pytest.mark.parametrize(("quality", "sampling"), [(95, 0), (90, 0), (89, 2), (60, 2)])
def test_high_quality_jpegs_keep_the_colour_at_full_resolution(tmp_path, image, quality, sampling):
    from PIL import JpegImagePlugin

    path = write_image(tmp_path / "x.jpg", image, jpeg_quality=quality)
    with Image.open(path) as pil:
        assert JpegImagePlugin.get_sampling(pil) == sampling  # 0: 4:4:4, 2: 4:2:0


def test_jpeg_quality_is_an_option(tmp_path, image):
    low = write_image(tmp_path / "low.jpg", image, jpeg_quality=20).stat().st_size
    high = write_image(tmp_path / "high.jpg", image, jpeg_quality=98).stat().st_size
    assert low < high
    with pytest.raises(ValueError, match="JPEG quality"):
        write_image(tmp_path / "bad.jpg", image, jpeg_quality=0)
    assert not (tmp_path / "bad.jpg").exists()
