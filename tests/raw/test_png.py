"""darkraw.raw.png writes PNGs that Pillow and zlib read back exactly, with Pillow's metadata
chunks, however the image is cut into deflate chunks; quantized_hwc equals to_hwc(quantize)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_exif import known_source

from darkraw.raw import fileio, png
from darkraw.raw.exif import OutputTags, exif_block, output_tags, srgb_icc_profile
from darkraw.raw.fileio import quantize, quantized_hwc, to_hwc, write_image
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.png import CHUNK_BYTES, _adler32_combine, _zlib_header, write_png

SIZES = [(1, 1), (3, 5), (17, 1000), (1, 300), (300, 400)]


@pytest.fixture(params=["zlib", "zlib-ng"])
def deflate(request, monkeypatch):
    """Each deflate library the writer may use: zlib-ng where installed, zlib as its fallback."""
    if request.param == "zlib":
        monkeypatch.setattr(png, "DEFLATE", zlib)
    else:
        monkeypatch.setattr(png, "DEFLATE", pytest.importorskip("zlib_ng.zlib_ng"))
    return request.param


def source_tags() -> OutputTags:
    """A source's EXIF with a GPS IFD, as test_fileio_metadata gives it."""
    meta = RawMetadata.for_bayer("RGGB", 4, 4, make="Acme", model="Nightcam", flip=6)
    return output_tags(known_source(), meta)


def random_image(height: int, width: int, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(seed)
    return rng.integers(0, top, (height, width, 3), endpoint=True, dtype=dtype)


def smooth_image(height: int, width: int, dtype: type = np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [0.5 + 0.45 * np.sin(xx / 23 + k) * np.cos(yy / 17 - k) for k in range(3)]
    return np.rint(np.stack(planes, axis=-1) * top).astype(dtype)


def chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """The file's chunks as (type, data), each CRC checked."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    found, pos = [], 8
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        kind, data = raw[pos + 4 : pos + 8], raw[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        found.append((kind, data))
        pos += 12 + length
    assert pos == len(raw)
    return found


def read_back(path: Path) -> np.ndarray:
    with Image.open(path) as pil:
        pil.load()
        if pil.mode == "RGB":
            return np.asarray(pil)
    # Pillow opens 16-bit RGB PNGs as 8-bit RGB; decode them from the stream instead.
    return decoded(path)


def decoded(path: Path) -> np.ndarray:
    """The pixels from the IDAT chunks, joined, inflated by zlib and unfiltered here."""
    found = chunks(path)
    width, height, depth, colour = struct.unpack(">IIBB", found[0][1][:10])
    assert colour == 2
    stream = zlib.decompress(b"".join(data for kind, data in found if kind == b"IDAT"))
    lines = np.frombuffer(stream, np.uint8).reshape(height, -1)
    assert (lines[:, 0] == 2).all()  # every row Up-filtered
    # Up: each byte was minus the byte above; a running sum down the rows, modulo 256, undoes it.
    raw = np.cumsum(lines[:, 1:], axis=0, dtype=np.uint64).astype(np.uint8)
    if depth == 16:
        return raw.view(">u2").astype(np.uint16).reshape(height, width, 3)
    return raw.reshape(height, width, 3)


@pytest.mark.parametrize("make", [random_image, smooth_image])
@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("chunk_bytes", [1, 100, CHUNK_BYTES])
def test_8_bit_images_read_back_exactly(tmp_path, deflate, make, height, width, chunk_bytes):
    hwc = make(height, width)
    path = tmp_path / "x.png"
    write_png(path, hwc, icc=None, exif=None, chunk_bytes=chunk_bytes)
    np.testing.assert_array_equal(read_back(path), hwc)
    np.testing.assert_array_equal(decoded(path), hwc)


@pytest.mark.parametrize("make", [random_image, smooth_image])
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_16_bit_images_read_back_exactly(tmp_path, deflate, make, height, width):
    hwc = make(height, width, np.uint16)
    path = tmp_path / "x.png"
    write_png(path, hwc, icc=None, exif=None, chunk_bytes=100)
    assert chunks(path)[0][1][8] == 16
    np.testing.assert_array_equal(decoded(path), hwc)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("chunk_bytes", [100, CHUNK_BYTES])
def test_libpng_reads_the_file_back_exactly(tmp_path, deflate, dtype, chunk_bytes):
    # libpng (through OpenCV) checks every CRC and the stream's Adler-32, and reads 16 bits.
    cv2 = pytest.importorskip("cv2")
    hwc = random_image(37, 53, dtype)
    path = tmp_path / "x.png"
    write_png(path, hwc, icc=srgb_icc_profile(), exif=None, chunk_bytes=chunk_bytes)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back is not None
    np.testing.assert_array_equal(back[..., ::-1], hwc)


def test_several_chunks_are_several_idats_of_one_stream(tmp_path):
    hwc = smooth_image(40, 30)
    path = tmp_path / "x.png"
    write_png(path, hwc, icc=None, exif=None, chunk_bytes=3 * (1 + 90))
    idats = [data for kind, data in chunks(path) if kind == b"IDAT"]
    assert len(idats) == 14  # 40 rows, 3 a chunk
    assert idats[0][:2] == _zlib_header(png.DEFAULT_LEVEL)
    np.testing.assert_array_equal(decoded(path), hwc)


@pytest.mark.parametrize("chunk_bytes", [100, CHUNK_BYTES])
def test_a_piece_too_long_for_one_idat_is_cut_into_several(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(png, "_MAX_IDAT", 7)
    hwc = random_image(20, 30)
    path = tmp_path / "x.png"
    write_png(path, hwc, icc=None, exif=None, chunk_bytes=chunk_bytes)
    idats = [data for kind, data in chunks(path) if kind == b"IDAT"]
    assert max(len(data) for data in idats[1:-1]) == 7
    assert len(idats[0]) == 2 + 7
    np.testing.assert_array_equal(read_back(path), hwc)


def test_chunks_primed_with_the_data_before_them_cost_little(tmp_path):
    # Rows that repeat every 8: a chunk of 4 rows finds its matches only before it.
    hwc = np.tile(random_image(8, 200), (64, 1, 1))
    whole, split = tmp_path / "whole.png", tmp_path / "split.png"
    write_png(whole, hwc, icc=None, exif=None)
    write_png(split, hwc, icc=None, exif=None, chunk_bytes=4 * 601)
    assert split.stat().st_size < 1.5 * whole.stat().st_size
    np.testing.assert_array_equal(read_back(split), hwc)


def test_metadata_reads_back_as_from_pillow(tmp_path):
    hwc = smooth_image(20, 30)
    tags = source_tags()
    exif = exif_block(tags.image, tags.exif, tags.gps)
    ours, theirs = tmp_path / "ours.png", tmp_path / "theirs.png"
    write_png(ours, hwc, icc=tags.icc, exif=exif)
    Image.fromarray(hwc).save(
        theirs, format="PNG", compress_level=1, icc_profile=tags.icc, exif=b"Exif\0\0" + exif
    )
    with Image.open(ours) as a, Image.open(theirs) as b:
        assert a.info["icc_profile"] == b.info["icc_profile"] == tags.icc
        assert a.info["exif"] == b.info["exif"] == b"Exif\0\0" + exif
        assert dict(a.getexif()) == dict(b.getexif())
        assert a.getexif()[271] == "Acme"
        assert a.getexif().get_ifd(0x8825) == b.getexif().get_ifd(0x8825)
    kinds = [kind for kind, _ in chunks(ours)]
    assert kinds[:3] == [b"IHDR", b"iCCP", b"eXIf"]
    assert kinds[-1] == b"IEND"
    assert set(kinds[3:-1]) == {b"IDAT"}
    assert [kind for kind, _ in chunks(theirs)][:3] == kinds[:3]


def test_an_exif_segment_prefix_is_dropped_and_empty_metadata_left_out(tmp_path):
    exif = exif_block(*(source_tags().image, (), ()))
    path = tmp_path / "x.png"
    write_png(path, random_image(2, 2), icc=srgb_icc_profile(), exif=b"Exif\0\0" + exif)
    assert dict(chunks(path))[b"eXIf"] == exif
    write_png(path, random_image(2, 2), icc=b"", exif=None)
    assert [kind for kind, _ in chunks(path)] == [b"IHDR", b"IDAT", b"IEND"]


@pytest.mark.parametrize("level", range(10))
def test_every_zlib_level_gives_zlibs_header_and_a_readable_file(tmp_path, deflate, level):
    assert _zlib_header(level) == zlib.compress(b"", level)[:2]
    hwc = smooth_image(50, 60)
    write_png(tmp_path / "x.png", hwc, icc=None, exif=None, level=level, chunk_bytes=1000)
    np.testing.assert_array_equal(read_back(tmp_path / "x.png"), hwc)


@pytest.mark.parametrize("strategy", ["huffman", "default"])
@pytest.mark.parametrize("chunk_bytes", [CHUNK_BYTES, 7 * (1 + 3 * 120)])
def test_flat_and_busy_rows_read_back_in_either_strategy(tmp_path, deflate, strategy, chunk_bytes):
    hwc = random_image(90, 120)
    hwc[20:70] = 0  # flat rows: their chunks are mostly zero bytes after the Up filter
    hwc[40:50] = 255
    path = tmp_path / "x.png"
    write_png(path, hwc, icc=None, exif=None, strategy=strategy, chunk_bytes=chunk_bytes)
    np.testing.assert_array_equal(read_back(path), hwc)


def test_flat_chunks_are_coded_as_runs_and_busy_ones_by_huffman_codes(tmp_path):
    flat = np.zeros((400, 500, 3), np.uint8)
    write_png(tmp_path / "flat.png", flat, icc=None, exif=None, chunk_bytes=3001 * 20)
    # Huffman codes alone spend at least a bit on each of the 600,400 filtered bytes.
    assert (tmp_path / "flat.png").stat().st_size < 600_400 / 8 / 10
    busy = smooth_image(400, 500) // 4 + random_image(400, 500) % 8
    sizes = {}
    for strategy in ("huffman", "default"):
        path = tmp_path / f"{strategy}.png"
        write_png(path, busy, icc=None, exif=None, strategy=strategy)
        np.testing.assert_array_equal(read_back(path), busy)
        sizes[strategy] = path.stat().st_size
    # A photo-like picture's residuals repeat little: the fast level's short matches cost more.
    assert sizes["huffman"] < sizes["default"]


def test_an_unknown_strategy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="strategy"):
        write_png(tmp_path / "x.png", random_image(2, 2), icc=None, exif=None, strategy="lzma")
    assert not (tmp_path / "x.png").exists()


def test_zlib_ng_deflates_where_it_is_installed_at_its_fast_level():
    pytest.importorskip("zlib_ng")
    assert png.DEFLATE.__name__ == "zlib_ng.zlib_ng" and png.DEFAULT_LEVEL == 2
    assert fileio.PNG_COMPRESS_LEVEL == png.DEFAULT_LEVEL


def test_adler32_of_parts_combines_into_the_whole():
    data = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    for cut in (0, 1, 65520, 65521, 200_000, len(data)):
        first, second = data[:cut], data[cut:]
        combined = _adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(data)
    ones = b"\xff" * 100_000
    assert _adler32_combine(zlib.adler32(ones), zlib.adler32(ones), 100_000) == zlib.adler32(
        ones + ones
    )


@pytest.mark.parametrize(
    ("hwc", "level", "message"),
    [
        (np.zeros((4, 4), np.uint8), 1, "shape"),
        (np.zeros((4, 4, 4), np.uint8), 1, "shape"),
        (np.zeros((0, 4, 3), np.uint8), 1, "shape"),
        (np.zeros((4, 4, 3), np.float32), 1, "uint8 or uint16"),
        (np.zeros((4, 4, 3), np.uint8), 10, "level"),
    ],
)
def test_what_cannot_be_written_is_refused(tmp_path, hwc, level, message):
    with pytest.raises(ValueError, match=message):
        write_png(tmp_path / "x.png", hwc, icc=None, exif=None, level=level)
    assert not (tmp_path / "x.png").exists()


def test_write_image_writes_its_png_through_write_png(tmp_path):
    image = np.random.default_rng(2).random((3, 31, 47)).astype(np.float32)
    tags = source_tags()
    path = write_image(tmp_path / "x.png", image, tags)
    np.testing.assert_array_equal(read_back(path), to_hwc(quantize(image, 8)))
    exif = exif_block(tags.image, tags.exif, tags.gps)
    with Image.open(path) as pil:
        assert pil.info["icc_profile"] == tags.icc
        assert pil.info["exif"] == b"Exif\0\0" + exif
    path = write_image(tmp_path / "y.png", image)
    with Image.open(path) as pil:
        assert pil.info["icc_profile"] == OutputTags().icc


def awkward_image(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    """Values in and well outside [0, 1], exact halves of a step, both signs of zero."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(-0.3, 1.3, shape).astype(dtype)
    halves = (np.arange(200) + 0.5) / 255, (np.arange(200) + 0.5) / 65535
    edges = [-np.inf, -1e30, -0.0, 0.0, 1.0, 1e30, np.inf]
    planted = np.concatenate([edges, *halves])
    flat = image.reshape(-1)
    count = min(flat.size, planted.size)
    flat[:count] = planted[:count]
    return image


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 5, 3), (3, 1, 700), (3, 301, 400)])
@pytest.mark.parametrize("band_bytes", [None, 5000])
def test_quantized_hwc_is_to_hwc_of_quantize_bit_for_bit(
    monkeypatch, bits, dtype, shape, band_bytes
):
    if band_bytes is not None:  # many bands, on the pool's threads for the largest image
        monkeypatch.setattr(fileio, "_QUANTIZE_BAND_BYTES", band_bytes)
    image = awkward_image(shape, dtype, seed=shape[1])
    expected = to_hwc(quantize(image, bits))
    got = quantized_hwc(image, bits)
    assert got.dtype == expected.dtype
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    # A strided view of the image (every other column) as well.
    np.testing.assert_array_equal(
        quantized_hwc(image[:, :, ::2], bits), to_hwc(quantize(image[:, :, ::2], bits))
    )


def test_quantized_hwc_refuses_what_quantize_and_to_hwc_refuse():
    with pytest.raises(ValueError, match="bits"):
        quantized_hwc(np.zeros((3, 2, 2), np.float32), 12)
    with pytest.raises(ValueError, match="shape"):
        quantized_hwc(np.zeros((2, 2, 3), np.float32), 8)


@pytest.mark.parametrize("bits", [8, 16])
def test_libraws_16_bit_pixels_quantise_as_their_float_planes_would(bits):
    from darkraw.raw.fileio import quantized_rgb16
    from darkraw.raw.rawio import planar_float

    every = np.arange(65536, dtype=np.uint16)
    rgb = np.stack([every, every[::-1], np.roll(every, 12345)], axis=-1).reshape(256, 256, 3)
    want = quantized_hwc(planar_float(rgb), bits)
    np.testing.assert_array_equal(quantized_rgb16(rgb, bits), want)
    if bits == 16:
        np.testing.assert_array_equal(want, rgb)  # 16 bits come back unchanged
    with pytest.raises(ValueError, match="uint16 pixels"):
        quantized_rgb16(rgb.astype(np.int32), bits)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_write_image_writes_the_same_file_from_libraws_pixels_or_their_planes(tmp_path, suffix):
    from darkraw.raw.rawio import planar_float

    rgb = random_image(37, 53, np.uint16)
    a, b = tmp_path / f"pixels{suffix}", tmp_path / f"planes{suffix}"
    write_image(a, rgb, source_tags())
    write_image(b, planar_float(rgb), source_tags())
    assert a.read_bytes() == b.read_bytes()


def test_libraws_pixels_as_float_pixels_are_their_planes_transposed():
    from darkraw.raw.rawio import pixels_float, planar_float

    every = np.arange(65536, dtype=np.uint16)
    rgb = np.stack([every, every[::-1], np.roll(every, 999)], axis=-1).reshape(128, 512, 3)
    got = pixels_float(rgb)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, to_hwc(planar_float(rgb)))
