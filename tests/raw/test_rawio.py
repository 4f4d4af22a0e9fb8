import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from darkraw.errors import RawReadError, UnsupportedSensorError
from darkraw.raw.dng import write_dng
from darkraw.raw.rawio import BareMosaicSpec, read_raw

from conftest import fifo_that_cannot_hang, mosaic_from_rgb, shared_data, smooth_scene


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


# --- issue 26: headers LibRaw accepts but no camera writes, damaged files, limits ----------------


def patched_dng(path, tag, fmt, *values, black=0.0):
    """A 64x96 DNG (white 16383, data up to about 12400) with one tag's value overwritten."""
    import struct

    mosaic, meta = mosaic_from_rgb(smooth_scene(64, 96), "RGGB")
    write_dng(path, mosaic, meta.replace(black_tile=((black, black), (black, black))))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        struct.pack_into(fmt, data, tif.pages.first.tags[tag].valueoffset, *values)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("white", [0, 1, 15])
def test_white_level_that_is_no_saturation_level_is_refused(tmp_path, white):
    # LibRaw reads a WhiteLevel of 0 as 65535 and takes 1 or 15 as they are; each rendered white.
    path = patched_dng(tmp_path / "w.dng", "WhiteLevel", "<I", white)
    with pytest.raises(RawReadError, match=rf"w\.dng: white level {white} .*at least 16") as err:
        read_raw(path)
    assert "\n" not in str(err.value)


def test_white_level_far_below_the_data_is_refused(tmp_path):
    # 255 on 16-bit data whose pixels reach about 12400: most of the frame "above saturation".
    path = patched_dng(tmp_path / "w255.dng", "WhiteLevel", "<I", 255)
    with pytest.raises(RawReadError, match=r"w255\.dng: white level 255 is far below the data"):
        read_raw(path)


def test_white_level_check_keeps_clipped_and_dark_frames(tmp_path):
    # A frame clipped at the ADC's maximum (one value above white), and a dark frame well below
    # its white level, are what cameras write: both read.
    from darkraw.raw.metadata import RawMetadata

    meta = RawMetadata.for_bayer("RGGB", 24, 32, white_level=255)
    clipped = write_dng(tmp_path / "clipped.dng", np.full((24, 32), 65535, np.uint16), meta)
    assert read_raw(clipped).mosaic.max() == 65535
    dark = write_dng(tmp_path / "dark.dng", np.full((24, 32), 3, np.uint16), meta)
    assert read_raw(dark).meta.white_level == 255


def test_black_level_at_or_above_white_is_one_line(tmp_path):
    path = patched_dng(tmp_path / "b.dng", "BlackLevel", "<8I", *(20000, 1) * 4)
    with pytest.raises(RawReadError, match=r"b\.dng: .*white level 16383.0 must exceed the black"):
        read_raw(path)


def linearised_dng(path, table):
    """A 64x96 CFA DNG (RGGB, white 16383) with a LinearizationTable."""
    mosaic, _ = mosaic_from_rgb(smooth_scene(64, 96), "RGGB")
    tags = [
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, (0, 1, 1, 2), True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50717, "I", 1, 16383, True),
        (50712, "H", len(table), tuple(int(v) for v in table), True),
    ]
    tifffile.imwrite(path, mosaic, photometric=32803, metadata=None, extratags=tags)
    return path


def test_linearisation_table_of_zeros_is_refused(tmp_path):
    # LibRaw maps every stored value through the table: an all-zero mosaic, rendered black.
    path = linearised_dng(tmp_path / "lin.dng", np.zeros(4096))
    with pytest.raises(RawReadError, match=r"lin\.dng: linearisation table maps every value to 0"):
        read_raw(path)
    identity = read_raw(linearised_dng(tmp_path / "ident.dng", np.arange(16384)))
    assert identity.mosaic.max() > 10000


@pytest.mark.parametrize(
    "error",
    [NotImplementedError("filters: 148"), ValueError("two\nlines"), IndexError("index 9")],
    ids=["NotImplementedError", "ValueError", "IndexError"],
)
def test_any_exception_from_rawpy_is_a_read_error(monkeypatch, dng, error):
    """rawpy raises ``NotImplementedError: filters: 148`` on some damaged DNGs (found by the fuzz
    test at DARKRAW_FUZZ_SCALE=25; which file does it depends on what LibRaw read before, so a
    stand-in for rawpy raises it here): every such error is one line naming the file."""
    import darkraw.raw.rawio as rawio

    class Damaged:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

        def __getattr__(self, name):
            raise error

    monkeypatch.setattr(rawio.rawpy, "imread", lambda path: Damaged())
    path, _ = dng
    name = type(error).__name__
    with pytest.raises(RawReadError, match=rf"scene\.dng: .*\({name}: ") as err:
        read_raw(path)
    assert "\n" not in str(err.value)


def tiff_with_subifds(path, count):
    """A TIFF whose IFD0 (an 8x8 RGB image) lists ``count`` SubIFDs, all one more 8x8 RGB IFD."""
    import struct

    def ifd(entries):
        out = struct.pack("<H", len(entries))
        for tag, kind, n, value in sorted(entries):
            out += struct.pack("<HHI", tag, kind, n) + value
        return out + struct.pack("<I", 0)

    short, long = (lambda v: struct.pack("<HH", v, 0)), (lambda v: struct.pack("<I", v))
    pixels = bytes(8 * 8 * 3)
    base = [
        (256, 3, 1, short(8)),
        (257, 3, 1, short(8)),
        (258, 3, 1, short(8)),
        (259, 3, 1, short(1)),
        (262, 3, 1, short(2)),
        (273, 4, 1, long(8)),
        (277, 3, 1, short(3)),
        (278, 3, 1, short(8)),
        (279, 4, 1, long(len(pixels))),
    ]
    sub_at = 8 + len(pixels)
    sub = ifd(base)
    list_at = sub_at + len(sub)
    offsets = struct.pack(f"<{count}I", *([sub_at] * count))
    ifd0 = ifd([*base, (330, 4, count, long(list_at)), (50706, 1, 4, bytes((1, 4, 0, 0)))])
    path.write_bytes(b"II*\0" + long(list_at + len(offsets)) + pixels + sub + offsets + ifd0)
    return path


def test_a_million_subifds_are_not_walked(tmp_path):
    import time

    path = tiff_with_subifds(tmp_path / "subifds.dng", 1_000_000)
    start = time.perf_counter()
    with pytest.raises(RawReadError, match=r"subifds\.dng: not a raw photo LibRaw can read"):
        read_raw(path)
    assert time.perf_counter() - start < 1.0


def test_fifo_and_device_inputs_are_refused_before_opening(tmp_path):
    spec = BareMosaicSpec("RGGB", 1023)
    with (
        fifo_that_cannot_hang(tmp_path / "pipe.npy") as fifo,
        pytest.raises(RawReadError, match=r"pipe\.npy: not a regular file"),
    ):
        read_raw(fifo, spec)
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    with pytest.raises(RawReadError, match=r"zero\.png: not a regular file"):
        read_raw(zero, spec)
    device = tmp_path / "zero.ARW"
    device.symlink_to("/dev/zero")
    with pytest.raises(RawReadError, match=r"zero\.ARW: not a regular file"):
        read_raw(device)


def test_pixel_budget_is_checked_before_reading(tmp_path, monkeypatch, dng):
    path, mosaic = dng  # 64 x 96 = 6144 pixels
    monkeypatch.setenv("DARKRAW_MAX_PIXELS", "6000")
    with pytest.raises(RawReadError, match=r"scene\.dng: .*6000 pixels.*DARKRAW_MAX_PIXELS"):
        read_raw(path)
    np.save(tmp_path / "m.npy", mosaic)
    cv2.imwrite(str(tmp_path / "m.png"), mosaic)
    tifffile.imwrite(tmp_path / "m.tif", mosaic)
    spec = BareMosaicSpec("GRBG", 16383)
    for name in ("m.npy", "m.png", "m.tif"):
        with pytest.raises(RawReadError, match=rf"{name}: .*6000 pixels.*DARKRAW_MAX_PIXELS"):
            read_raw(tmp_path / name, spec)
    monkeypatch.setenv("DARKRAW_MAX_PIXELS", "6144")
    assert read_raw(path).mosaic.shape == (64, 96)
    assert read_raw(tmp_path / "m.png", spec).mosaic.shape == (64, 96)
    monkeypatch.setenv("DARKRAW_MAX_PIXELS", "many")
    with pytest.raises(RawReadError, match="DARKRAW_MAX_PIXELS must be"):
        read_raw(path)


def test_default_pixel_budget_refuses_a_huge_declared_mosaic_without_allocating(tmp_path):
    """An .npy header declaring 20000 x 20000 float64 (3.2 GB) is refused from the header."""
    import tracemalloc

    path = tmp_path / "huge.npy"
    header = {"descr": "<f8", "fortran_order": False, "shape": (20000, 20000)}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(bytes(8 * 64))
    tracemalloc.start()
    try:
        with pytest.raises(RawReadError, match=r"huge\.npy: .*400 Mpixel.*limit of 200 Mpixel"):
            read_raw(path, BareMosaicSpec("RGGB", 1.0))
        assert tracemalloc.get_traced_memory()[1] < 50e6
    finally:
        tracemalloc.stop()


def test_a_header_declaring_more_pixels_than_its_file_holds_is_refused_before_reading(tmp_path):
    """30000 x 30000 declared in a 3 KB DNG: refused from the header, not by LibRaw's read."""
    import struct

    mosaic, meta = mosaic_from_rgb(smooth_scene(24, 32), "RGGB")
    path = write_dng(tmp_path / "huge.dng", mosaic, meta)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        for name in ("ImageWidth", "ImageLength"):
            struct.pack_into("<I", data, tif.pages.first.tags[name].valueoffset, 30000)
    path.write_bytes(bytes(data))
    pattern = r"huge\.dng: corrupt or truncated raw data \(the header declares 30000x30000 pixels"
    with pytest.raises(RawReadError, match=pattern):
        read_raw(path)


# --- issue 26, item 15: an ordinary photo given as raw data -------------------------------------


def ordinary_photo(path, mode, image_format):
    """A 48x64 Pillow image of ``mode`` ("RGB", "RGBA", "L") saved as ``image_format``."""
    colour = {"RGB": (200, 10, 10), "RGBA": (200, 10, 10, 128), "L": 100}[mode]
    Image.new(mode, (64, 48), colour).save(path, format=image_format)
    return path


PHOTOS = [
    ("rgb.jpg", "RGB", "JPEG", "8-bit RGB JPEG"),
    ("grey.jpeg", "L", "JPEG", "8-bit greyscale JPEG"),
    ("rgb.png", "RGB", "PNG", "8-bit RGB PNG"),
    ("rgba.png", "RGBA", "PNG", "8-bit RGBA PNG"),
    ("grey.png", "L", "PNG", "8-bit greyscale PNG"),
    ("rgb.tif", "RGB", "TIFF", "8-bit RGB TIFF"),
    ("rgba.tiff", "RGBA", "TIFF", "8-bit RGBA TIFF"),
    ("grey.tif", "L", "TIFF", "8-bit greyscale TIFF"),
    ("jpeg.ARW", "RGB", "JPEG", "8-bit RGB JPEG"),
    ("png.DNG", "RGB", "PNG", "8-bit RGB PNG"),
]
PHOTO_IDS = [name for name, *_ in PHOTOS]


@pytest.mark.parametrize("with_spec", [False, True], ids=["no spec", "spec"])
@pytest.mark.parametrize(("name", "mode", "image_format", "what"), PHOTOS, ids=PHOTO_IDS)
def test_an_ordinary_photo_is_told_it_is_not_raw_data(
    tmp_path, name, mode, image_format, what, with_spec
):
    """Both routes: through LibRaw (``.jpg`` or a renamed photo, spec or not), and the bare-mosaic
    reader (``.png``/``.tif``): without a spec it was told to give one, with one an RGB image was
    "not a single-channel mosaic", and RGBA (as a packed mosaic) and grey 8-bit ones were read."""
    import re

    path = ordinary_photo(tmp_path / name, mode, image_format)
    spec = BareMosaicSpec("RGGB", 255) if with_spec else None
    pattern = rf"{re.escape(name)}: (not a raw photo LibRaw can read: )?an ordinary photo "
    pattern += rf"\({what}\), not raw data"
    with pytest.raises(RawReadError, match=pattern) as err:
        read_raw(path, spec)
    assert "\n" not in str(err.value) and "CFA metadata" not in str(err.value)


def test_16_bit_single_channel_png_and_tiff_are_still_bare_mosaics(tmp_path):
    mosaic = np.random.default_rng(5).integers(0, 65535, (16, 20)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "m.png"), mosaic)
    tifffile.imwrite(tmp_path / "m.tif", mosaic)
    spec = BareMosaicSpec("RGGB", 65535)
    for name in ("m.png", "m.tif"):
        np.testing.assert_array_equal(read_raw(tmp_path / name, spec).mosaic, mosaic)
        with pytest.raises(RawReadError, match=rf"{name}: a bare mosaic carries no metadata"):
            read_raw(tmp_path / name)
    # 16-bit, but RGB: a photo or not, no single-channel mosaic (the message is unchanged).
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.zeros((16, 20, 3), np.uint16))
    with pytest.raises(RawReadError, match=r"rgb16\.png: expected a single-channel mosaic"):
        read_raw(tmp_path / "rgb16.png", spec)


# --- issue 26, item 5: strip or tile offsets into the file's own header -------------------------


def tiled_dng(path):
    """A 64x96 CFA DNG (RGGB, white 16383) stored in 16x16 tiles."""
    mosaic, _ = mosaic_from_rgb(smooth_scene(64, 96), "RGGB")
    tags = [
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, (0, 1, 1, 2), True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50717, "I", 1, 16383, True),
    ]
    tifffile.imwrite(path, mosaic, photometric=32803, tile=(16, 16), metadata=None, extratags=tags)
    return path


def with_first_data_offset(path, target):
    """``path`` with its first strip's (or tile's) offset set to ``target``: a byte offset, or
    the name of a tag whose out-of-line value it then points at."""
    import struct

    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        offsets = tags.get("StripOffsets") or tags["TileOffsets"]
        at = offsets.valueoffset
        offset = target if isinstance(target, int) else tags[target].valueoffset
    struct.pack_into("<I", data, at, offset)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("target", "where"),
    [
        (8, "the IFD at byte 8"),
        (100, "the IFD at byte 8"),
        (0, "the TIFF header"),
        ("ColorMatrix1", "the value of tag ColorMatrix1"),
    ],
    ids=["8 (the IFD)", "100 (within the IFD)", "0 (the TIFF header)", "a tag's value"],
)
def test_strip_offsets_into_the_header_are_refused(tmp_path, dng, target, where):
    """LibRaw reads the pixels from wherever the offsets say: from the header itself it rendered a
    picture of IFD entries, with exit 0."""
    path, _ = dng
    bad = tmp_path / "bad.dng"
    bad.write_bytes(path.read_bytes())
    with_first_data_offset(bad, target)
    offset = target if isinstance(target, int) else r"\d+"
    pattern = rf"bad\.dng: strip offset {offset} points into {where}, not at image data"
    with pytest.raises(RawReadError, match=pattern) as err:
        read_raw(bad)
    assert "\n" not in str(err.value)
    assert read_raw(path).mosaic.shape == (64, 96)  # the DNG as written still reads


def test_tile_offsets_into_the_header_are_refused(tmp_path):
    good = tiled_dng(tmp_path / "tiled.dng")
    assert read_raw(good).mosaic.shape == (64, 96)
    bad = tmp_path / "bad.dng"
    bad.write_bytes(good.read_bytes())
    with_first_data_offset(bad, 8)
    pattern = r"bad\.dng: tile offset 8 points into the IFD at byte 8, not at image data"
    with pytest.raises(RawReadError, match=pattern):
        read_raw(bad)


def test_libraw_renderings_refuse_strips_in_the_header_too(tmp_path, dng):
    from darkraw.raw.rawio import render_mosaic_with_libraw, render_with_libraw

    path, mosaic = dng
    meta = read_raw(path).meta
    bad = tmp_path / "bad.dng"
    bad.write_bytes(path.read_bytes())
    with_first_data_offset(bad, 8)
    pattern = r"bad\.dng: strip offset 8 points into the IFD at byte 8"
    with pytest.raises(RawReadError, match=pattern):
        render_with_libraw(bad)
    with pytest.raises(RawReadError, match=pattern):
        render_mosaic_with_libraw(bad, mosaic, meta)
    assert render_with_libraw(path).shape == (3, 64, 96)


def _same_file(fd: int, path: str) -> bool:
    a, b = os.fstat(fd), os.stat(path)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def test_libraw_muting_of_stderr_is_undone_when_threads_cross():
    """Two threads inside LibRaw at once (a batch reads one file while it renders another):
    the first in mutes descriptor 2, the last out restores it, in whatever order they leave."""
    from darkraw.raw.rawio import _MutedStderr

    original = os.fstat(2)
    muted = _MutedStderr()
    first, second = muted.held(), muted.held()
    first.__enter__()
    assert _same_file(2, os.devnull)
    second.__enter__()
    first.__exit__(None, None, None)  # the first out is not the last: still muted
    assert _same_file(2, os.devnull)
    second.__exit__(None, None, None)
    now = os.fstat(2)
    assert (now.st_dev, now.st_ino) == (original.st_dev, original.st_ino)


def test_the_command_lines_messages_pass_while_libraw_is_muted(tmp_path):
    script = tmp_path / "muted.py"
    script.write_text(
        "import os, sys\n"
        "from darkraw import cli\n"
        "from darkraw.raw import rawio\n"
        "with cli._stderr_apart_from_libraw():\n"
        "    with rawio._libraw_stderr_captured():\n"
        "        print('a line of ours', file=sys.stderr)\n"
        "        os.write(2, b'LibRaw: Unexpected end of file\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "a line of ours\nafter\n"


def test_rendering_a_file_just_read_reuses_its_decoding_once(dng, imreads):
    from darkraw.raw.rawio import render_mosaic_with_libraw

    path, _ = dng
    raw = read_raw(path, keep_decoded=True)
    imreads.clear()
    dimmer = raw.mosaic.astype(np.float32) * 0.5
    first = render_mosaic_with_libraw(path, dimmer, raw.meta, planar=False)
    assert imreads == []
    # Rendering overwrote that decoding's mosaic: a second rendering decodes the file again,
    # and both give the same picture.
    again = render_mosaic_with_libraw(path, dimmer, raw.meta, planar=False)
    assert imreads == [str(path)]
    np.testing.assert_array_equal(first, again)


def test_a_file_changed_since_it_was_read_is_decoded_again(tmp_path, dng, imreads):
    from darkraw.raw.rawio import render_mosaic_with_libraw

    path, mosaic = dng
    raw = read_raw(path, keep_decoded=True)
    write_dng(path, mosaic[::-1].copy(), raw.meta)
    imreads.clear()
    render_mosaic_with_libraw(path, raw.mosaic, raw.meta, planar=False)
    assert imreads == [str(path)]


def test_the_three_files_read_last_keep_their_decoding(tmp_path, imreads):
    from darkraw.raw.rawio import render_mosaic_with_libraw

    mosaic, meta = mosaic_from_rgb(smooth_scene(32, 48), "RGGB")
    paths = [write_dng(tmp_path / f"{i}.dng", mosaic, meta) for i in range(4)]
    for path in paths:
        read_raw(path, keep_decoded=True)
    imreads.clear()
    for path in paths:
        render_mosaic_with_libraw(path, mosaic, meta, planar=False)
    assert imreads == [str(paths[0])]


def test_a_read_keeps_no_decoding_unless_asked(dng, imreads):
    from darkraw.raw import rawio

    path, _ = dng
    raw = read_raw(path)
    assert rawio._DECODED.take(path) is None
    imreads.clear()
    rawio.render_mosaic_with_libraw(path, raw.mosaic, raw.meta, planar=False)
    assert imreads == [str(path)]
