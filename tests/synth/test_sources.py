import numpy as np
import pytest
from PIL import Image

from darkraw.errors import DarkrawError
from darkraw.raw.dng import write_dng
from darkraw.raw.fileio import read_image
from darkraw.synth.sources import (
    SourceConfig,
    SourceKind,
    collect_sources,
    load_clean,
    source_kind,
    unprocess_photo,
)
from darkraw.synth.unprocess import UnprocessParams

from conftest import mosaic_from_rgb, psnr, smooth_scene

PARAMS = UnprocessParams(
    rgb_cam=((1.6, -0.4, -0.2), (-0.3, 1.6, -0.3), (0.0, -0.5, 1.5)),
    wb_gains=(2.0, 1.0, 1.7),
    brightness=1.0,
)


def write_photo(path, height=48, width=64, seed=0):
    rgb = (smooth_scene(height, width, seed) * 255).round().astype(np.uint8)
    Image.fromarray(np.moveaxis(rgb, 0, -1)).save(path)
    return path


def test_source_kinds_and_collection(tmp_path):
    write_photo(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    write_photo(tmp_path / "sub" / "b.jpg")
    (tmp_path / "c.DNG").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    found = collect_sources([tmp_path])
    assert [p.name for p in found] == ["a.png", "c.DNG", "b.jpg"]
    assert source_kind(found[0]) is SourceKind.PHOTO
    assert source_kind(found[1]) is SourceKind.RAW
    with pytest.raises(DarkrawError, match="no such file"):
        collect_sources([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DarkrawError, match="no photos or raw files"):
        collect_sources([tmp_path / "empty"])


def test_unprocessed_photo_renders_back_to_itself():
    """At brightness 1 the reference is the photo: raw and target agree on exposure."""
    rgb = smooth_scene(40, 50, seed=2).astype(np.float32)
    clean = unprocess_photo(rgb, PARAMS, "BGGR")
    assert clean.raw_lin.shape == (40, 50) and clean.meta.cfa_name == "BGGR"
    assert clean.meta.white_level == 1.0 and clean.raw_lin.max() <= 1.0
    assert psnr(clean.reference, rgb) > 45


def test_odd_photo_is_cut_to_whole_bayer_tiles():
    clean = unprocess_photo(smooth_scene(41, 51).astype(np.float32), PARAMS)
    assert clean.raw_lin.shape == (40, 50) and clean.reference.shape == (3, 40, 50)
    with pytest.raises(ValueError, match=r"expected a photo of shape \(3, H, W\)"):
        unprocess_photo(np.zeros((40, 50, 3), dtype=np.float32), PARAMS)


def test_load_clean_photo_is_reproducible(tmp_path):
    path = write_photo(tmp_path / "p.png")
    a = load_clean(path, np.random.default_rng(1))
    b = load_clean(path, np.random.default_rng(1))
    c = load_clean(path, np.random.default_rng(2))
    np.testing.assert_array_equal(a.raw_lin, b.raw_lin)
    assert not np.array_equal(a.raw_lin, c.raw_lin)
    assert a.source == path
    photo = read_image(path)
    # Brightness is drawn around 0.8, so the reference is a slightly darker photo.
    assert 0.3 * photo.mean() < a.reference.mean() < 1.3 * photo.mean()


def test_load_clean_raw_file(tmp_path):
    rgb = smooth_scene(48, 64, seed=4)
    dn, meta = mosaic_from_rgb(rgb, "GBRG")
    path = tmp_path / "clean.dng"
    write_dng(path, dn, meta)
    clean = load_clean(path, np.random.default_rng(0), SourceConfig(gamma="bt709"))
    assert clean.meta.cfa_name == "GBRG" and clean.meta.white_level == 1.0
    np.testing.assert_allclose(clean.raw_lin, (dn - 512.0) / (16383 - 512), atol=1e-6)
    assert clean.reference.shape == (3, 48, 64)


def test_load_clean_reports_the_bad_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DarkrawError, match=r"broken\.png: cannot read the photo"):
        load_clean(bad, np.random.default_rng(0))
