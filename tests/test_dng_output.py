"""``darkraw enhance --format dng``: the denoised raw as a DNG with the source's metadata."""

import shutil
import subprocess

import numpy as np
import pytest
import rawpy
import tifffile

from darkraw.batch import enhance_batch, plan_outputs
from darkraw.classic.denoise import Denoiser
from darkraw.classic.pipeline import ClassicOptions
from darkraw.errors import OutputError
from darkraw.raw.dng import write_dng
from darkraw.raw.exif import SourceMetadata, ascii_entry, read_source_metadata
from darkraw.raw.rawio import read_raw

from conftest import mosaic_from_rgb, smooth_scene, xtrans_meta

LENS_MODEL = 42036


def known_source() -> SourceMetadata:
    """A source with a lens name, GPS and XMP, as a camera's DNG would have them."""
    return SourceMetadata(
        exif=(ascii_entry(LENS_MODEL, "Acme 35mm f/1.8"),),
        gps=(ascii_entry(1, "N"),),
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>',
    )


FAST = ClassicOptions(ratio=4.0, denoiser=Denoiser.NONE)


def dark_dng(path, pattern="RGGB", source=None, size=(48, 64)):
    mosaic, meta = mosaic_from_rgb(smooth_scene(*size) * 0.2, pattern)
    meta = meta.replace(make="Acme", model="Nightcam", iso=6400.0, exposure_time=0.02, flip=6)
    noisy = mosaic + np.random.default_rng(0).normal(0, 20, mosaic.shape)
    return write_dng(path, noisy, meta, known_source() if source is None else source)


def enhance(src, out, **kwargs):
    report = enhance_batch([src], out, progress=False, log=lambda _: None, **kwargs)
    assert report.ok, report.failed
    return report


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_denoised_dng_keeps_size_layout_and_metadata(tmp_path, pattern, one_torch_thread):
    src = dark_dng(tmp_path / "dark.dng", pattern)
    out = tmp_path / "out.dng"
    enhance(src, out, options=ClassicOptions(ratio=4.0), model="default")
    before, after = read_raw(src), read_raw(out)
    assert after.mosaic.shape == before.mosaic.shape
    assert after.meta.cfa_tile == before.meta.cfa_tile
    assert after.meta.black_tile == before.meta.black_tile
    assert after.meta.white_level == before.meta.white_level
    assert after.meta.flip == 6
    assert (after.meta.make, after.meta.model, after.meta.iso) == ("Acme", "Nightcam", 6400)
    assert after.mosaic.mean() > 2 * before.mosaic.mean()  # amplified by the ratio
    meta = read_source_metadata(out)
    assert {e.tag: e for e in meta.exif}[LENS_MODEL].text() == "Acme 35mm f/1.8"
    assert meta.gps == known_source().gps
    assert meta.xmp == known_source().xmp
    with rawpy.imread(str(out)) as raw:
        assert raw.postprocess().mean() > 0


def test_a_source_without_exif_still_gives_a_dng_and_a_png(tmp_path, one_torch_thread):
    src = dark_dng(tmp_path / "dark.dng", source=SourceMetadata())
    enhance(src, tmp_path / "out.dng", options=ClassicOptions(ratio=4.0), model="default")
    enhance(src, tmp_path / "out.png", options=FAST)
    assert read_raw(tmp_path / "out.dng").meta.iso == 6400  # from LibRaw's reading


def test_classic_pipeline_gives_a_linear_dng(tmp_path):
    src = dark_dng(tmp_path / "dark.dng")
    enhance(src, tmp_path / "out.dng", options=FAST)
    with tifffile.TiffFile(tmp_path / "out.dng") as tif:
        page = tif.pages.first
        assert page.photometric == 34892
        assert page.shape == (64, 48, 3)  # turned as the camera recorded (flip 6)
        assert page.tags["Orientation"].value == 1
        assert page.tags["ExifTag"].value["LensModel"] == "Acme 35mm f/1.8"


def test_xtrans_gives_a_linear_dng(tmp_path):
    meta = xtrans_meta(make="Fuji", model="X", iso=800.0)
    mosaic = np.full((36, 48), 1400, np.uint16)
    src = write_dng(tmp_path / "xt.dng", mosaic, meta)
    enhance(src, tmp_path / "xt-out.dng", options=FAST)
    with rawpy.imread(str(tmp_path / "xt-out.dng")) as raw:
        assert raw.raw_type == rawpy.RawType.Stack
    with tifffile.TiffFile(tmp_path / "xt-out.dng") as tif:
        assert tif.pages.first.photometric == 34892


def test_dng_in_a_folder_gets_a_suffix_and_is_not_read_back(tmp_path):
    folder = tmp_path / "shoot"
    folder.mkdir()
    src = dark_dng(folder / "IMG_1.dng")
    assert plan_outputs([src], folder, "dng") == [folder / "IMG_1-darkraw.dng"]
    enhance(folder, folder, options=FAST, fmt="dng")
    assert sorted(p.name for p in folder.iterdir()) == ["IMG_1-darkraw.dng", "IMG_1.dng"]
    report = enhance_batch([folder], folder, FAST, fmt="dng", progress=False, log=lambda _: None)
    assert report.ours == [folder / "IMG_1-darkraw.dng"]
    assert report.skipped == [folder / "IMG_1-darkraw.dng"]


def test_no_output_overwrites_an_input(tmp_path):
    src = dark_dng(tmp_path / "IMG_1.dng")
    data = src.read_bytes()
    for name in ("IMG_1.dng", "./IMG_1.dng"):
        with pytest.raises(OutputError, match="never writes over an input"):
            enhance_batch([src], tmp_path / name, FAST, overwrite=True, progress=False)
    assert src.read_bytes() == data


def run_editor(program: str, dng, tmp_path) -> tuple[subprocess.CompletedProcess, object]:
    """Run ``program`` on ``dng`` as a user would (its own HOME): darktable-cli and
    rawtherapee-cli render it to a JPEG, exiftool reads its lens model and ISO."""
    out = tmp_path / "render.jpg"
    commands = {
        "darktable-cli": [
            program,
            str(dng),
            str(out),
            "--core",
            "--configdir",
            str(tmp_path / "dt"),
            "--library",
            ":memory:",
        ],
        "rawtherapee-cli": [program, "-o", str(out), "-Y", "-c", str(dng)],
        "exiftool": [program, "-s3", "-LensModel", "-ISO", str(dng)],
    }
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(commands[program], capture_output=True, text=True, env=env, timeout=300)
    return done, out


@pytest.mark.parametrize("program", ["darktable-cli", "rawtherapee-cli", "exiftool"])
def test_editors_open_the_dng(tmp_path, program, one_torch_thread):
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (Debian: darktable, rawtherapee, exiftool)")
    # RawTherapee refuses frames under about 256 pixels a side (200x200 too); 256x256 it opens.
    src = dark_dng(tmp_path / "dark.dng", size=(256, 256))
    dng = tmp_path / "out.dng"
    enhance(src, dng, options=ClassicOptions(ratio=4.0), model="default")
    done, out = run_editor(program, dng, tmp_path)
    assert done.returncode == 0, done.stderr[-400:]
    if program == "exiftool":
        assert done.stdout.split("\n")[:2] == ["Acme 35mm f/1.8", "6400"]
    else:
        assert out.stat().st_size > 1000


@pytest.mark.parametrize("program", ["darktable-cli", "rawtherapee-cli"])
def test_editors_open_the_dng_of_an_xtrans_file(tmp_path, program, one_torch_thread):
    """The default model's X-Trans twin gives an X-Trans CFA DNG that the editors render."""
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (Debian: darktable, rawtherapee)")
    from conftest import XTRANS, smooth_scene, xtrans_meta

    rgb = smooth_scene(516, 522, seed=4)
    linear = np.take_along_axis(rgb, np.tile(XTRANS, (86, 87))[None], axis=0)[0]
    rng = np.random.default_rng(1)
    noisy = 1024 + rng.poisson(linear * (16383 - 1024) / 20) + rng.normal(0, 2, linear.shape)
    meta = xtrans_meta(516, 522, wb_gains=(1.8, 1.0, 1.5), make="FUJIFILM", model="X-T3")
    src = write_dng(tmp_path / "xt.dng", np.clip(np.rint(noisy), 0, 16383).astype(np.uint16), meta)
    dng = tmp_path / "xt-out.dng"
    enhance(src, dng, options=ClassicOptions(ratio=20.0), model="default")
    with rawpy.imread(str(dng)) as raw:
        assert raw.raw_type == rawpy.RawType.Flat and raw.raw_pattern.shape == (6, 6)
    done, out = run_editor(program, dng, tmp_path)
    assert done.returncode == 0, done.stderr[-400:]
    assert out.stat().st_size > 1000
