"""Reading a raw file's capture metadata (darkraw.raw.exif) and the EXIF blocks it writes."""

import struct

import numpy as np
import tifffile

from darkraw.raw.dng import write_dng
from darkraw.raw.exif import (
    DATE_TIME_ORIGINAL,
    EXPOSURE_TIME,
    F_NUMBER,
    GPS_IFD,
    ISO_SPEED,
    MAKE,
    ORIENTATION,
    SourceMetadata,
    TagEntry,
    ascii_entry,
    exif_block,
    output_tags,
    rational_entry,
    read_source_metadata,
    short_entry,
    srgb_icc_profile,
)
from darkraw.raw.metadata import RawMetadata

from conftest import mosaic_from_rgb, smooth_scene

LENS_MODEL = 42036
FOCAL_LENGTH = 37386
XMP_PACKET = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def known_source() -> SourceMetadata:
    """A source with EXIF, GPS and XMP, as a camera's DNG would have them."""
    return SourceMetadata(
        image=(ascii_entry(306, "2024:01:02 03:04:05"), ascii_entry(33432, "(c) Someone")),
        exif=(
            rational_entry(EXPOSURE_TIME, 1 / 50),
            rational_entry(F_NUMBER, 1.8),
            short_entry(ISO_SPEED, 6400),
            ascii_entry(DATE_TIME_ORIGINAL, "2024:01:02 03:04:05"),
            rational_entry(FOCAL_LENGTH, 35),
            ascii_entry(LENS_MODEL, "Acme 35mm f/1.8"),
        ),
        gps=(
            TagEntry(0, 1, 4, bytes([2, 3, 0, 0])),
            ascii_entry(1, "N"),
            TagEntry(2, 5, 3, struct.pack("<6I", 48, 1, 51, 1, 2400, 100)),
        ),
        xmp=XMP_PACKET,
    )


def small_dng(tmp_path, source=None, name="s.dng"):
    mosaic, meta = mosaic_from_rgb(smooth_scene(24, 32), "RGGB")
    meta = meta.replace(make="Acme", model="Nightcam", iso=6400.0, exposure_time=0.02)
    return write_dng(tmp_path / name, mosaic, meta, source), meta


def test_metadata_round_trips_through_a_dng(tmp_path):
    path, _ = small_dng(tmp_path, known_source())
    back = read_source_metadata(path)
    wanted = known_source()
    got_exif = {e.tag: e for e in back.exif}
    for entry in wanted.exif:
        assert got_exif[entry.tag] == entry
    assert back.gps == wanted.gps
    assert back.xmp == XMP_PACKET
    assert back.find(MAKE).text() == "Acme"
    assert back.find(306).text() == "2024:01:02 03:04:05"
    with tifffile.TiffFile(path) as tif:
        exif = tif.pages.first.tags["ExifTag"].value
        assert exif["LensModel"] == "Acme 35mm f/1.8"
        assert exif["ISOSpeedRatings"] == 6400
        assert tif.pages.first.tags["GPSTag"].value["GPSLatitudeRef"] == "N"


def test_big_endian_tiff_ep_exif_in_ifd0_is_read_little_endian(tmp_path):
    # A Kodak KDC keeps ExposureTime and FNumber in IFD0 of a big-endian TIFF.
    path = tmp_path / "ep.tif"
    tifffile.imwrite(
        path,
        np.zeros((8, 8), np.uint16),
        byteorder=">",
        extratags=[(EXPOSURE_TIME, 5, 1, (1, 230), True), (F_NUMBER, 5, 1, (62, 10), True)],
    )
    back = read_source_metadata(path)
    got = {e.tag: e for e in back.exif}
    assert got[EXPOSURE_TIME].value == struct.pack("<II", 1, 230)
    assert got[F_NUMBER].numbers() == [6.2]


def test_a_file_that_is_no_tiff_gives_empty_metadata(tmp_path):
    path = tmp_path / "x.raf"
    path.write_bytes(b"FUJIFILMCCD-RAW " + bytes(100))
    assert read_source_metadata(path).empty
    assert read_source_metadata(tmp_path / "missing.dng").empty


def test_output_tags_fill_make_exposure_and_iso_from_libraw_and_reset_orientation():
    meta = RawMetadata.for_bayer("RGGB", 4, 4, make="Acme", iso=400.0, exposure_time=0.5)
    tags = output_tags(SourceMetadata(), meta.replace(flip=6))
    image = {e.tag: e for e in tags.image}
    assert image[MAKE].text() == "Acme"
    assert image[ORIENTATION].numbers() == [1.0]
    exif = {e.tag: e for e in tags.exif}
    assert exif[ISO_SPEED].numbers() == [400.0]
    assert exif[EXPOSURE_TIME].numbers() == [0.5]
    assert tags.icc[36:40] == b"acsp"  # an ICC profile's signature


def test_bundled_icc_profile_is_littlecms_srgb():
    """The bundled profile renders colours exactly as the sRGB profile Pillow makes (a
    transform between the two changes no pixel), and says it is that profile."""
    import io

    from PIL import Image, ImageCms

    data = srgb_icc_profile()
    bundled = ImageCms.ImageCmsProfile(io.BytesIO(data))
    assert ImageCms.getProfileDescription(bundled).strip() == "sRGB built-in"
    assert data[12:20] == b"mntrRGB " and data[36:40] == b"acsp"
    made = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for source, target in ((bundled, made), (made, bundled)):
        moved = ImageCms.profileToProfile(pixels, source, target)
        assert np.array_equal(np.asarray(moved), np.asarray(pixels))


def test_exif_block_is_read_by_pillow():
    from PIL import Image

    source = known_source()
    block = exif_block(output_tags(source, None).image, source.exif, source.gps)
    exif = Image.Exif()
    exif.load(block)
    assert exif[ORIENTATION] == 1
    assert exif.get_ifd(0x8769)[LENS_MODEL] == "Acme 35mm f/1.8"
    assert exif.get_ifd(GPS_IFD)[1] == "N"
