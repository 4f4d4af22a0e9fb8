import shutil
import subprocess

import numpy as np
import pytest
import rawpy

from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions, run_classic
from darkraw.raw.cfa import BayerPattern
from darkraw.raw.dng import write_dng
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw

from conftest import mosaic_from_rgb, smooth_scene


@pytest.mark.parametrize("pattern", [p.value for p in BayerPattern])
def test_dng_round_trip_mosaic_and_metadata(tmp_path, pattern):
    rgb = smooth_scene(24, 32)
    mosaic, meta = mosaic_from_rgb(rgb, pattern)
    meta = meta.replace(
        black_tile=((500.0, 510.0), (520.0, 530.0)),
        exposure_time=0.04,
        iso=800,
        flip=6,
        make="Acme",
        model="Nightcam",
    )
    path = write_dng(tmp_path / "x.dng", mosaic, meta)
    back = read_raw(path)
    np.testing.assert_array_equal(back.mosaic, mosaic)
    got = back.meta
    assert got.cfa_tile == meta.cfa_tile
    assert got.black_tile == meta.black_tile
    assert got.white_level == meta.white_level
    assert got.flip == 6
    assert got.iso == 800
    assert got.exposure_time == pytest.approx(0.04, rel=1e-6)
    assert (got.make, got.model) == ("Acme", "Nightcam")
    np.testing.assert_allclose(got.wb_gains, meta.wb_gains, rtol=1e-4)
    np.testing.assert_allclose(got.rgb_cam, meta.rgb_cam, atol=2e-3)


def test_dng_without_colour_data_writes_identity_and_no_white_balance(tmp_path):
    meta = RawMetadata.for_bayer("RGGB", 22, 22, white_level=4095)
    mosaic = np.full((22, 22), 100, dtype=np.uint16)
    back = read_raw(write_dng(tmp_path / "plain.dng", mosaic, meta)).meta
    np.testing.assert_allclose(back.rgb_cam, np.eye(3), atol=1e-3)
    # No AsShotNeutral: unknown gains must come back unknown (the reader then uses gray world),
    # not as the camera asking for unit gains.
    assert back.wb_gains is None
    assert back.iso is None and back.exposure_time is None


def test_dng_matches_libraw_rendering_orientation(tmp_path):
    mosaic = np.zeros((24, 32), dtype=np.uint16)
    mosaic[:4, :6] = 16383  # a bright block in the top-left corner of the sensor
    meta = RawMetadata.for_bayer("RGGB", 24, 32, flip=5)
    path = write_dng(tmp_path / "rot.dng", mosaic, meta)
    with rawpy.imread(str(path)) as raw:
        out = raw.postprocess(no_auto_bright=True, user_wb=[1, 1, 1, 1])
    assert out.shape[:2] == (32, 24)  # rotated 90 degrees
    # flip 5 (rotate 90 counter-clockwise) moves the top-left corner to the bottom-left.
    assert out[-2, 1].mean() > out[1, -2].mean()


def test_write_dng_rejects_mismatch_and_leaves_nothing(tmp_path):
    meta = RawMetadata.for_bayer("RGGB", 24, 32)
    with pytest.raises(ValueError, match="differs from metadata"):
        write_dng(tmp_path / "bad.dng", np.zeros((24, 30), np.uint16), meta)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("dcraw") is None, reason="dcraw is not installed")
@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_dcraw_reads_our_dng(tmp_path, pattern):
    mosaic, meta = mosaic_from_rgb(smooth_scene(24, 32), pattern, black=0)
    meta = meta.replace(iso=400, exposure_time=0.5)
    path = write_dng(tmp_path / "d.dng", mosaic, meta)
    info = subprocess.run(["dcraw", "-i", "-v", str(path)], capture_output=True, text=True).stdout
    expected = {"RGGB": "RG/GB", "GBRG": "GB/RG"}[pattern]
    assert f"Filter pattern: {expected}" in info
    assert "ISO speed: 400" in info
    assert "Camera multipliers: 2.1" in info
    pgm = subprocess.run(["dcraw", "-D", "-4", "-c", str(path)], capture_output=True).stdout
    pixels = np.frombuffer(pgm[-24 * 32 * 2 :], dtype=">u2").reshape(24, 32)
    np.testing.assert_array_equal(pixels, mosaic)


def test_xtrans_dng_is_read_as_xtrans(tmp_path):
    from conftest import xtrans_meta

    meta = xtrans_meta(wb_gains=(1.8, 1.0, 1.5))
    mosaic = np.random.default_rng(0).integers(1024, 16383, (36, 48)).astype(np.uint16)
    back = read_raw(write_dng(tmp_path / "xt.dng", mosaic, meta))
    assert back.meta.is_xtrans and back.meta.cfa_name == "X-Trans"
    assert back.meta.cfa_tile == meta.cfa_tile
    np.testing.assert_array_equal(back.mosaic, mosaic)
    image = run_classic(back.mosaic, back.meta, ClassicOptions(1.0, Denoiser.NONE)).image
    assert image.shape == (3, 36, 48)
    image = run_classic(back.mosaic, back.meta, ClassicOptions(1.0, Denoiser.NONE)).image
    assert image.shape == (3, 36, 48)


@pytest.mark.parametrize("pattern", [p.value for p in BayerPattern])
def test_dng_with_source_metadata_keeps_every_bayer_layout(tmp_path, pattern):
    from test_exif import known_source

    from darkraw.raw.exif import read_source_metadata

    mosaic, meta = mosaic_from_rgb(smooth_scene(24, 32), pattern)
    path = write_dng(tmp_path / "x.dng", mosaic, meta, known_source())
    import tifffile

    with tifffile.TiffFile(path) as tif:
        cfa = tuple(tif.pages.first.tags["CFAPattern"].value)
    assert cfa == tuple(c for row in meta.cfa_tile for c in row)
    back = read_raw(path)
    assert back.meta.cfa_name == pattern
    np.testing.assert_array_equal(back.mosaic, mosaic)
    assert read_source_metadata(path).xmp is not None


def test_source_colour_profile_replaces_the_derived_matrix(tmp_path):
    from darkraw.raw.exif import SourceMetadata, TagEntry, read_source_metadata, short_entry

    mosaic, meta = mosaic_from_rgb(smooth_scene(24, 32), "RGGB")
    matrix = np.array([[0.9, -0.3, -0.1], [-0.4, 1.3, 0.1], [-0.1, 0.2, 0.6]])
    ints = np.ravel([[round(v * 10000), 10000] for v in matrix.ravel()]).astype("<i4")
    profile = (
        TagEntry(50721, 10, 9, ints.tobytes()),
        short_entry(50778, 21),
        TagEntry(50964, 10, 9, ints.tobytes()),  # ForwardMatrix1
    )
    path = write_dng(tmp_path / "x.dng", mosaic, meta, SourceMetadata(dng=profile))
    back = {e.tag: e for e in read_source_metadata(path).dng}
    np.testing.assert_allclose(back[50721].numbers(), matrix.ravel(), atol=1e-4)
    assert back[50778].numbers() == [21.0]
    assert 50964 in back
    from darkraw.raw.metadata import rgb_cam_from_cam_xyz

    got = np.asarray(read_raw(path).meta.rgb_cam)
    np.testing.assert_allclose(got, rgb_cam_from_cam_xyz(matrix), atol=2e-3)


def test_linear_dng_is_read_as_a_three_channel_picture(tmp_path):
    import tifffile

    from darkraw.raw.dng import write_linear_dng

    rgb = smooth_scene(30, 40)
    meta = RawMetadata.for_bayer("RGGB", 30, 40, make="Acme", model="X", iso=200.0)
    path = write_linear_dng(tmp_path / "lin.dng", rgb, meta)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.photometric == 34892
        assert page.shape == (30, 40, 3)
        assert page.tags["ExifTag"].value["ISOSpeedRatings"] == 200
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_type == rawpy.RawType.Stack
        out = raw.postprocess(use_camera_wb=True, no_auto_bright=True, gamma=(1, 1), output_bps=16)
    np.testing.assert_allclose(out.astype(float) / 65535, np.moveaxis(rgb, 0, -1), atol=0.02)
