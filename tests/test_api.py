import subprocess
import sys

import numpy as np
import pytest

import darkraw
from darkraw.nn.infer import InferenceOptions
from darkraw.raw.dng import write_dng
from darkraw.synth.simulate import darken_mosaic

from conftest import mosaic_from_rgb, smooth_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def dark(tmp_path):
    mosaic, meta = mosaic_from_rgb(smooth_scene(30, 46), "BGGR")
    dark, dark_meta = darken_mosaic(mosaic, meta, 50, np.random.default_rng(0))
    return write_dng(tmp_path / "dark.dng", dark, dark_meta), dark, dark_meta


def test_enhance_a_path(dark, tiny_model_file):
    path, _, _ = dark
    image = darkraw.enhance(path, model=tiny_model_file, ratio=50)
    assert image.shape == (30, 46, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1


def test_an_array_gives_what_its_file_gives(dark, tiny_model_file):
    path, mosaic, meta = dark
    # fp32: in bf16 (native on some CPUs) inputs 1e-7 apart can round a level apart.
    fp32 = InferenceOptions(precision="fp32")
    from_file = darkraw.enhance(str(path), model=tiny_model_file, ratio=50, inference=fp32)
    from_array = darkraw.enhance(
        mosaic,
        model=tiny_model_file,
        ratio=50,
        inference=fp32,
        pattern="BGGR",
        white_level=meta.white_level,
        black_level=meta.black_tile[0][0],
        wb_gains=meta.wb_gains,
        color_matrix=meta.rgb_cam,
    )
    # The DNG stores the white balance and matrix as rationals, a few 1e-7 off.
    np.testing.assert_allclose(from_array, from_file, atol=1e-4)


def test_colour_of_an_array_comes_from_its_arguments(dark, tiny_model_file):
    _, mosaic, meta = dark
    bare = {"pattern": "BGGR", "white_level": meta.white_level, "ratio": 50}
    gray = darkraw.enhance(mosaic, model=tiny_model_file, **bare)
    tinted = darkraw.enhance(mosaic, model=tiny_model_file, wb_gains=(3.0, 1.0, 0.5), **bare)
    assert not np.array_equal(gray, tinted)
    with pytest.raises(ValueError, match="for mosaic arrays"):
        darkraw.enhance(dark[0], model=tiny_model_file, wb_gains=(1.0, 1.0, 1.0))


def test_a_loaded_network_and_auto_ratio(dark, tiny_model_file):
    from darkraw.nn.infer import load_model

    network = load_model(tiny_model_file)
    image = darkraw.enhance(dark[0], model=network)
    assert image.shape == (30, 46, 3)


def test_classic(dark):
    path, _, _ = dark
    image = darkraw.enhance(path, model="classic", ratio=50)
    assert image.shape == (30, 46, 3)
    assert 0.1 < image.mean() < 0.9


@pytest.mark.parametrize(
    ("array", "kwargs", "message"),
    [
        (np.zeros((8, 8), np.uint16), {}, "needs pattern= and white_level="),
        (np.zeros((8, 8, 3), np.uint16), {"pattern": "RGGB", "white_level": 1023}, "2-D"),
    ],
)
def test_bad_arrays(array, kwargs, message):
    with pytest.raises(ValueError, match=message):
        darkraw.enhance(array, model="classic", **kwargs)


def test_missing_model_is_a_one_line_error(dark, tmp_path):
    with pytest.raises(darkraw.DarkrawError, match="no such model file") as err:
        darkraw.enhance(dark[0], model=tmp_path / "missing.safetensors")
    assert "\n" not in str(err.value)


def test_enhance_is_the_function_after_the_batch_module_is_imported(dark, tiny_model_file):
    import darkraw.batch as batch

    assert callable(batch.enhance_batch)
    image = darkraw.enhance(dark[0], model=tiny_model_file, ratio=50)
    assert image.shape == (30, 46, 3)


def test_import_darkraw_does_not_import_torch_or_opencv():
    code = "import sys, darkraw; print('torch' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
