"""The raw denoiser in ONNX Runtime: equal to torch, exact tiles, refused files, the bundled
export kept in step with its weights."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from darkraw.errors import CheckpointError, DarkrawError
from darkraw.nn import runtime
from darkraw.nn.denoiser import DenoiserConfig, RawDenoiser, box_mean
from darkraw.nn.enhance import load_network
from darkraw.nn.infer import save_model_file
from darkraw.nn.inputs import denoiser_input
from darkraw.nn.modelfiles import (
    bundled_int8_path,
    bundled_model_path,
    bundled_onnx_path,
    json_entry,
    read_metadata,
)
from darkraw.nn.onnx_export import export_onnx
from darkraw.nn.rawdenoise import DenoiseOptions, run_denoiser
from darkraw.nn.runtime import OnnxDenoiser, add_correction, load_onnx_denoiser
from darkraw.synth.noiselevel import RawNoise

TINY = DenoiserConfig(width=4, levels=3, mean_window=7)


def bayer_of(network):
    """The Bayer network of what ``load_network("default")`` gives (its X-Trans twin beside it,
    ``darkraw.nn.enhance.DefaultDenoiser``), or the network itself."""
    return getattr(network, "bayer", network)


def trained_like(config: DenoiserConfig = TINY, seed: int = 0) -> RawDenoiser:
    """A denoiser whose output layer is not zero (a fresh one returns its input unchanged)."""
    model = RawDenoiser(config, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = trained_like()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", weights_sha256="x")
    return model, load_onnx_denoiser(path, device="cpu", expect_weights="x")


def planes(shape, seed=0, channels=8):
    x = np.random.default_rng(seed).random((channels, *shape), dtype=np.float32) * 0.4
    x[4:] = 0.03
    return x


@pytest.mark.parametrize("shape", [(1, 1), (3, 9), (4, 4), (5, 6), (17, 8), (37, 53), (64, 40)])
def test_onnx_runtime_equals_torch_at_every_size(exported, shape):
    model, onnx = exported
    x = planes(shape)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)[None]).numpy()
    got = onnx(x[None])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_narrower_first_level_exports_and_runs_as_in_torch(tmp_path):
    config = DenoiserConfig(width=4, levels=3, mean_window=7, first_width=2)
    model = trained_like(config)
    onnx = load_onnx_denoiser(export_onnx(model, tmp_path / "narrow.onnx"), device="cpu")
    assert onnx.config == config
    x = planes((37, 53))
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)[None]).numpy()
    np.testing.assert_allclose(onnx(x[None]), expected, atol=1e-5)


def test_onnx_runtime_plans_no_memory_pattern(exported):
    """Its tensors come from the arena as needed, not from one fresh block planned per window
    size: the command's peak RSS 0.1-0.2 GB lower, no slower (docs/speed-log.md)."""
    _, onnx = exported
    assert onnx._session.get_session_options().enable_mem_pattern is False


def test_onnx_tiles_join_exactly(exported):
    _, onnx = exported
    x = planes((150, 170), seed=3)
    whole = run_denoiser(onnx, x, DenoiseOptions(tile=0))
    tiled = run_denoiser(onnx, x, DenoiseOptions(tile=96))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


@pytest.mark.parametrize("tile", [0, 96])
def test_a_frame_input_made_by_window_runs_as_the_whole_input(exported, tile):
    """The default's single pass takes its input window by window (FrameInput): the same
    clean planes, bit for bit, as the whole input made first, in ONNX Runtime and in torch."""
    from darkraw.nn.inputs import FrameInput, denoiser_input
    from darkraw.synth.noiselevel import RawNoise

    model, onnx = exported
    raw = np.random.default_rng(6).random((4, 150, 170), dtype=np.float32) * 0.01
    noise = RawNoise((1e-4,) * 4, (1e-6,) * 4, "test").amplified(30.0)
    whole = denoiser_input(raw, noise, ratio=30.0)
    by_window = FrameInput.amplified_in_place(raw.copy(), noise, ratio=30.0)
    for network, precision in ((onnx, "auto"), (model, "fp32")):
        options = DenoiseOptions(tile=tile, precision=precision)
        want = run_denoiser(network, whole, options)
        np.testing.assert_array_equal(run_denoiser(network, by_window, options), want)


def test_onnx_and_torch_tiled_runs_agree(exported):
    model, onnx = exported
    x = planes((90, 120), seed=4)
    a = run_denoiser(onnx, x, DenoiseOptions(tile=72))
    b = run_denoiser(model, x, DenoiseOptions(tile=72, precision="fp32"))
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("shape", [(20, 13), (1, 1), (3, 40), (9, 9), (10, 8), (64, 33)])
@pytest.mark.parametrize("window", [9, 31])
@pytest.mark.parametrize("with_opencv", [True, False])
def test_numpy_box_mean_equals_torch(shape, window, with_opencv, monkeypatch):
    from darkraw.classic import filters

    monkeypatch.setattr(filters, "USE_OPENCV", with_opencv)
    x = np.random.default_rng(1).random((2, 3, *shape), dtype=np.float32) - 0.5
    expected = box_mean(torch.from_numpy(x), window).numpy()
    np.testing.assert_allclose(runtime.box_mean(x, window), expected, atol=1e-6)


def test_non_finite_output_is_an_error_naming_the_model(exported, monkeypatch):
    _, onnx = exported
    broken = OnnxDenoiser(onnx.config, onnx.path, {}, onnx.providers, onnx._session, "raw")
    monkeypatch.setattr(
        OnnxDenoiser, "raw_correction", lambda self, x: np.full_like(x[:, :4], np.nan)
    )
    from darkraw.errors import NetworkOutputError

    with pytest.raises(NetworkOutputError, match=f"model {onnx.path} gives NaN"):
        run_denoiser(broken, planes((16, 16)))


def test_refused_files_are_one_line_errors(tmp_path, exported):
    with pytest.raises(CheckpointError, match="no such ONNX model file"):
        load_onnx_denoiser(tmp_path / "none.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(CheckpointError, match="not a readable ONNX model") as err:
        load_onnx_denoiser(garbage)
    assert "\n" not in str(err.value)
    _, onnx = exported
    with pytest.raises(CheckpointError, match="exported from other weights"):
        load_onnx_denoiser(onnx.path, expect_weights="y")
    with pytest.raises(ValueError, match="device must be"):
        load_onnx_denoiser(onnx.path, device="tpu")


def test_a_sid_export_is_not_taken_for_a_denoiser(tmp_path):
    from darkraw.nn.model import ModelConfig, build_model

    path = export_onnx(build_model(ModelConfig(width=4, fc_hidden=8)), tmp_path / "sid.onnx")
    with pytest.raises(CheckpointError, match="not a raw denoiser's config"):
        load_onnx_denoiser(path)


def test_cuda_without_a_cuda_provider_says_what_to_install(exported, monkeypatch):
    _, onnx = exported
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DarkrawError, match="onnxruntime-gpu"):
        load_onnx_denoiser(onnx.path, device="cuda")


def test_the_bundled_export_is_of_the_bundled_weights():
    weights = bundled_model_path("default")
    digest = json_entry(weights, read_metadata(weights), "sha256")
    network = bayer_of(load_network("default", device="cpu", precision="fp32"))
    assert isinstance(network, OnnxDenoiser)
    assert network.path == bundled_onnx_path("default")
    torch_net = load_onnx_denoiser(network.path, expect_weights=digest)
    from darkraw.nn.infer import resolve_model

    x = planes((40, 44), seed=5)
    with torch.inference_mode():
        expected = resolve_model("default")(torch.from_numpy(x)[None]).numpy()
    np.testing.assert_allclose(torch_net(x[None]), expected, atol=1e-5)


def test_the_bundled_xtrans_export_is_of_the_bundled_xtrans_weights():
    from darkraw.nn.infer import resolve_model

    weights = bundled_model_path("xtrans")
    digest = json_entry(weights, read_metadata(weights), "sha256")
    onnx = load_onnx_denoiser(bundled_onnx_path("xtrans"), expect_weights=digest)
    assert onnx.config.planes == 9 and onnx.config.in_channels == 19
    x = np.random.default_rng(6).random((1, 19, 40, 44), dtype=np.float32)
    with torch.inference_mode():
        expected = resolve_model("xtrans")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx(x), expected, atol=1e-5)


def test_the_bundled_int8_version_is_current_and_close_to_fp32():
    """Quantisation-aware trained from the bundled weights (its digest matches), and on a
    smooth noisy frame its clean planes are within a small share of an 8-bit level of fp32's."""
    path = bundled_int8_path("default")
    if not path.is_file():
        pytest.skip("no int8 version is bundled")
    weights = bundled_model_path("default")
    digest = json_entry(weights, read_metadata(weights), "sha256")
    int8 = load_onnx_denoiser(path, expect_weights=digest)
    fp32 = load_onnx_denoiser(bundled_onnx_path("default"), expect_weights=digest)
    assert int8.precision == "int8" and fp32.precision == "fp32"
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:96, 0:104] / 100.0
    clean = np.stack([0.2 + 0.1 * np.sin(3 * yy + k) * np.cos(2 * xx) for k in range(4)])
    noisy = clean + rng.normal(size=clean.shape) * np.sqrt(2e-3 * clean + 1e-4)
    noise = RawNoise((2e-3,) * 4, (1e-4,) * 4, "test")
    x = denoiser_input(noisy.astype(np.float32), noise)
    a, b = run_denoiser(int8, x), run_denoiser(fp32, x)
    psnr = 10 * np.log10(1 / np.mean((a - b) ** 2))
    assert psnr > 40, psnr


def test_a_stale_bundled_export_falls_back_to_torch(tmp_path, monkeypatch):
    import darkraw.nn.modelfiles as modelfiles

    weights = save_model_file(tmp_path / "denoiser_model.safetensors", trained_like(seed=7))
    export_onnx(trained_like(seed=8), tmp_path / "denoiser_model.onnx", weights_sha256="old")
    monkeypatch.setattr(modelfiles, "bundled_model_path", lambda name: weights)
    import darkraw.nn.enhance as enhance

    network = bayer_of(load_network("default"))
    assert isinstance(network, RawDenoiser)
    monkeypatch.setattr(enhance, "torch_available", lambda: False)
    with pytest.raises(CheckpointError, match="other weights"):
        load_network("default")


@pytest.mark.parametrize("window", [0, 31])
@pytest.mark.parametrize("with_opencv", [True, False])
def test_add_correction_is_planes_plus_correction_less_its_mean(window, with_opencv, monkeypatch):
    from darkraw.classic import filters

    monkeypatch.setattr(filters, "USE_OPENCV", with_opencv)
    rng = np.random.default_rng(0)
    correction = rng.normal(size=(4, 40, 57)).astype(np.float32) * 0.01
    planes = rng.random((4, 40, 57), dtype=np.float32)
    expected = (correction - (runtime.box_mean(correction, window) if window else 0)) + planes
    out = correction.copy()
    assert add_correction(out, planes, window)
    np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_add_correction_reports_values_that_are_not_finite():
    correction = np.zeros((4, 8, 9), dtype=np.float32)
    correction[2, 3, 4] = np.nan
    assert not add_correction(correction, np.zeros_like(correction), 3)


# --- choosing the bundled denoiser's int8 version ---------------------------------------------


def test_fast_cpu_int8_reads_the_dot_product_flags():
    assert runtime.fast_cpu_int8("vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512_vnni\n")
    assert runtime.fast_cpu_int8("flags\t: sse avx_vnni\n")
    assert not runtime.fast_cpu_int8("flags\t: sse avx2 fma avx512f\n")
    assert not runtime.fast_cpu_int8("")


@pytest.fixture
def int8_beside(tmp_path, monkeypatch):
    """A stand-in for the bundled int8 file (the fp32 export under another name: the choice,
    not the arithmetic, is under test), and a way to say whether the CPU has VNNI."""
    import shutil

    import darkraw.nn.enhance as enhance

    path = tmp_path / "denoiser_model_int8.onnx"
    shutil.copy(bundled_onnx_path("default"), path)
    monkeypatch.setattr(enhance, "bundled_int8_path", lambda name: path)

    def vnni(present: bool) -> None:
        monkeypatch.setattr(enhance, "cpu_int8_fast", lambda: present)

    # ONNX Runtime's int8 choice is under test: OpenVINO's bf16, which auto prefers, and its
    # int8 are not on offer; nor is the x86 rule (int8 without the dot product), tested below.
    monkeypatch.setattr(enhance, "cpu_bf16_fast", lambda: False)
    monkeypatch.setattr(enhance, "openvino_available", lambda: False)
    monkeypatch.setattr(enhance, "x86_cpu", lambda: False)

    return path, vnni


def test_auto_takes_the_int8_version_on_a_cpu_with_vnni(int8_beside):
    path, vnni = int8_beside
    vnni(True)
    assert load_network("default", device="cpu").path == path
    vnni(False)
    assert load_network("default", device="cpu").path == bundled_onnx_path("default")
    assert load_network("default", device="cpu", precision="int8").path == path


def test_fp32_is_taken_when_asked_or_without_an_int8_file(int8_beside):
    path, vnni = int8_beside
    vnni(True)
    assert load_network("default", precision="fp32").path == bundled_onnx_path("default")
    path.unlink()
    assert load_network("default").path == bundled_onnx_path("default")
    with pytest.raises(CheckpointError, match="no int8 version"):
        load_network("default", precision="int8")


def test_a_stale_int8_file_is_not_used(int8_beside):
    onnx = pytest.importorskip("onnx")
    path, vnni = int8_beside
    vnni(True)
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == runtime.WEIGHTS_KEY:
            prop.value = "0" * 64
    onnx.save(model, str(path))
    assert load_network("default").path == bundled_onnx_path("default")
    with pytest.raises(CheckpointError, match="other weights"):
        load_network("default", precision="int8")


def test_int8_is_refused_where_torch_runs():
    from darkraw.nn.infer import InferenceOptions
    from darkraw.nn.precision import Precision, autocast_dtype

    with pytest.raises(ValueError, match="raw denoiser"):
        InferenceOptions(precision="int8")
    with pytest.raises(ValueError, match="raw denoiser's int8 version"):
        autocast_dtype(Precision.INT8, torch.device("cpu"))


def test_each_files_line_says_when_int8_ran(int8_beside, tmp_path):
    onnx = pytest.importorskip("onnx")
    from darkraw.batch import enhance_batch
    from darkraw.raw.dng import write_dng

    from conftest import mosaic_from_rgb, smooth_scene

    path, vnni = int8_beside
    vnni(True)
    model = onnx.load(str(path))
    model.metadata_props.add(key=runtime.PRECISION_KEY, value="int8")
    onnx.save(model, str(path))
    mosaic, meta = mosaic_from_rgb(smooth_scene(64, 96), "RGGB")
    dng = write_dng(tmp_path / "dark.dng", mosaic, meta)
    lines: list[str] = []
    report = enhance_batch([dng], tmp_path / "out", model="default", log=lines.append)
    assert report.written and "model default (int8)," in lines[-1]
    lines.clear()
    vnni(False)
    enhance_batch([dng], tmp_path / "out2", model="default", log=lines.append)
    assert "model default," in lines[-1]


def test_auto_keeps_fp32_where_onnx_runtime_would_use_a_gpu(int8_beside, monkeypatch):
    import darkraw.nn.enhance as enhance

    path, vnni = int8_beside
    vnni(True)
    opened = []
    real = enhance.load_onnx_denoiser

    def recording(file, **kwargs):
        opened.append(file)
        return real(file, **kwargs)

    monkeypatch.setattr(enhance, "load_onnx_denoiser", recording)
    monkeypatch.setattr(enhance, "cuda_in_use", lambda device: True)
    assert load_network("default").path == bundled_onnx_path("default")
    assert path not in opened  # the int8 file is not even opened
    assert not runtime.cuda_in_use("cpu") and runtime.cuda_in_use("cuda")


def test_auto_asks_onnx_runtime_for_cuda_only_where_its_cuda_library_is(tmp_path, monkeypatch):
    import importlib.machinery

    asked = []

    class FakeOrt:
        @staticmethod
        def get_available_providers():
            asked.append(True)
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    package = tmp_path / "onnxruntime"
    (package / "capi").mkdir(parents=True)
    spec = importlib.machinery.ModuleSpec("onnxruntime", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: spec)
    monkeypatch.setattr(runtime, "_onnxruntime", lambda: FakeOrt)
    assert not runtime.cuda_in_use("auto") and not asked  # no library: ONNX Runtime not asked
    (package / "capi" / runtime.CUDA_PROVIDER_LIBRARIES[0]).write_bytes(b"")
    assert runtime.cuda_in_use("auto") and asked
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)
    assert not runtime.cuda_in_use("auto")  # ONNX Runtime not installed


def test_choosing_the_device_does_not_import_onnx_runtime_without_its_cuda_library():
    import subprocess

    if runtime._cuda_provider_shipped():
        pytest.skip("onnxruntime-gpu is installed here")
    code = (
        "import sys\n"
        "from darkraw.nn.runtime import cuda_in_use\n"
        "assert not cuda_in_use('auto')\n"
        "assert 'onnxruntime' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- OpenVINO's bf16 ----------------------------------------------------------------------------

needs_openvino = pytest.mark.skipif(
    not runtime.openvino_available(), reason="OpenVINO is not installed (darkraw[openvino])"
)


@needs_openvino
def test_openvino_sends_and_writes_no_telemetry(tmp_path):
    import os
    import subprocess

    # bf16 runs in OpenVINO on every CPU (in fp32 where the CPU has no native bf16).
    code = (
        "import sys\n"
        "from darkraw.nn.enhance import load_network\n"
        "load_network('default', precision='bf16')\n"
        "assert 'openvino' in sys.modules, 'OpenVINO not used'\n"
        "assert 'openvino_telemetry' not in sys.modules, 'telemetry imported'\n"
        "import openvino.tools.ovc.telemetry_utils as used\n"
        "assert used.tm.__name__.endswith('telemetry_stub'), used.tm.__name__\n"
        "import openvino_telemetry\n"  # let back for anyone else who imports it
    )
    env = dict(os.environ, HOME=str(tmp_path), USERPROFILE=str(tmp_path))
    env.pop("CI", None)  # OpenVINO's telemetry stays quiet where CI=true
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "intel").exists()  # where OpenVINO counts its imports


@needs_openvino
@pytest.mark.parametrize("shape", [(1, 1), (3, 9), (17, 8), (37, 53), (64, 40)])
def test_openvino_bf16_is_close_to_fp32_at_every_size(exported, shape):
    _, onnx = exported
    bf16 = runtime.load_openvino_denoiser(onnx.path, expect_weights="x")
    assert bf16.precision == "bf16" and bf16.providers == ("OpenVINO CPU",)
    assert bf16.config == onnx.config
    x = planes(shape, seed=3)[None]
    want, got = onnx.raw_correction(x), bf16.raw_correction(x)
    assert got.shape == want.shape and got.dtype == np.float32
    # bf16 keeps 8 significant bits: within a few per cent of the correction's size.
    assert np.abs(got - want).max() <= 0.03 * np.abs(want).max() + 1e-6
    np.testing.assert_allclose(bf16(x), onnx(x), atol=0.03 * np.abs(want).max() + 1e-6)


@needs_openvino
def test_openvino_runs_sizes_one_after_another(exported):
    """One infer request serves windows of changing sizes (a frame's last row of tiles)."""
    _, onnx = exported
    bf16 = runtime.load_openvino_denoiser(onnx.path)
    for shape in [(40, 48), (24, 48), (40, 48), (9, 13)]:
        x = planes(shape, seed=sum(shape))[None]
        want = onnx.raw_correction(x)
        assert np.abs(bf16.raw_correction(x) - want).max() <= 0.03 * np.abs(want).max() + 1e-6


def _signal_stack_is_mapped() -> bool:
    """Whether this thread's alternate signal stack (if any) lies in mapped memory."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    stack = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    if not stack.sp:
        return True
    with open("/proc/self/maps") as maps:
        spans = [line.split()[0].split("-") for line in maps]
    return any(int(lo, 16) <= stack.sp < int(hi, 16) for lo, hi in spans)


@needs_openvino
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_releasing_openvino_models_in_any_order_keeps_the_signal_stack(exported):
    """OpenVINO's CPU plugin unmaps the signal stack it gave its thread; released out of order
    (or in another thread), a model per Core left the thread's stack unmapped and the next
    Python signal handler crashed. Models share one Core, which is never released."""
    import gc

    _, onnx = exported
    first = runtime.load_openvino_denoiser(onnx.path)
    first.raw_correction(planes((8, 8))[None])
    second = runtime.load_openvino_denoiser(onnx.path)
    second.raw_correction(planes((8, 8))[None])
    del first
    gc.collect()
    del second
    gc.collect()
    assert _signal_stack_is_mapped()


@needs_openvino
@pytest.mark.parametrize("shape", [(40, 48), (3, 9)])
def test_openvino_prepared_size_runs_without_compiling_again(exported, shape, monkeypatch):
    """prepare() compiles the size the run then uses (tiny windows padded as the run pads)."""
    _, onnx = exported
    bf16 = runtime.load_openvino_denoiser(onnx.path)
    bf16.prepare(*shape)

    class NoCompiling:
        def compile_model(self, *args, **kwargs):
            pytest.fail("compiled again")

    monkeypatch.setattr(bf16._session, "_core", NoCompiling())
    x = planes(shape, seed=5)[None]
    want = onnx.raw_correction(x)
    assert np.abs(bf16.raw_correction(x) - want).max() <= 0.03 * np.abs(want).max() + 1e-6


def _blobs(folder):
    return sorted(folder.glob("*.blob"))


@needs_openvino
def test_openvino_keeps_compiled_models_for_the_next_process(exported, tmp_path, monkeypatch):
    """A window size compiled once is loaded from the cache folder after, with the same output;
    a damaged file there is compiled again and replaced."""
    _, onnx = exported
    x = planes((40, 48), seed=7)[None]
    want = runtime.load_openvino_denoiser(onnx.path).raw_correction(x)  # no folder (conftest)
    folder = tmp_path / "made" / "here"
    monkeypatch.setenv(runtime.CACHE_ENV, str(folder))
    np.testing.assert_array_equal(runtime.load_openvino_denoiser(onnx.path).raw_correction(x), want)
    (blob,) = _blobs(folder)
    written = blob.read_bytes()
    np.testing.assert_array_equal(runtime.load_openvino_denoiser(onnx.path).raw_correction(x), want)
    assert _blobs(folder) == [blob] and blob.read_bytes() == written
    blob.chmod(0o600)
    damaged = b"not a compiled model" * 50
    blob.write_bytes(damaged)
    np.testing.assert_array_equal(runtime.load_openvino_denoiser(onnx.path).raw_correction(x), want)
    # Compiled again: a whole file in its place (OpenVINO's header, the size of the first).
    replaced = blob.read_bytes()
    assert replaced != damaged and replaced[:16] == written[:16]
    assert abs(len(replaced) - len(written)) <= 64


@needs_openvino
def test_openvino_compiles_without_a_cache_folder_it_cannot_use(exported, tmp_path, monkeypatch):
    _, onnx = exported
    x = planes((24, 32), seed=8)[None]
    want = runtime.load_openvino_denoiser(onnx.path).raw_correction(x)
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv(runtime.CACHE_ENV, str(blocker / "cache"))  # cannot be made
    np.testing.assert_array_equal(runtime.load_openvino_denoiser(onnx.path).raw_correction(x), want)
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "refused"))
    model = runtime.load_openvino_denoiser(onnx.path)
    core = model._session._core

    class RefusesTheFolder:
        def compile_model(self, graph, device, settings):
            if "CACHE_DIR" in settings:
                raise RuntimeError("cannot write there")
            return core.compile_model(graph, device, settings)

    monkeypatch.setattr(model._session, "_core", RefusesTheFolder())
    np.testing.assert_array_equal(model.raw_correction(x), want)


def test_compiled_model_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "mine"))
    assert runtime.compiled_model_folder() == tmp_path / "mine"
    monkeypatch.setenv(runtime.CACHE_ENV, " ")
    assert runtime.compiled_model_folder() is None
    monkeypatch.delenv(runtime.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.compiled_model_folder() == tmp_path / "xdg" / "darkraw" / "openvino"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runtime.compiled_model_folder() == tmp_path / "home" / ".cache" / "darkraw" / "openvino"


def test_the_cache_folder_keeps_the_newest_compiled_models(tmp_path):
    kept = runtime.CACHED_MODELS_KEPT
    for i in range(kept + 5):
        blob = tmp_path / f"{i}.blob"
        blob.write_bytes(b"x")
        os.utime(blob, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "other.txt").write_text("not ours")
    runtime._prune(tmp_path)
    assert sorted(int(p.stem) for p in _blobs(tmp_path)) == list(range(5, kept + 5))
    assert (tmp_path / "other.txt").exists()


def test_prepare_is_nothing_to_onnx_runtime(exported):
    _, onnx = exported
    onnx.prepare(40, 48)
    x = planes((40, 48), seed=6)[None]
    np.testing.assert_array_equal(onnx.raw_correction(x), onnx.raw_correction(x))


@needs_openvino
def test_openvino_refuses_files_in_one_line(tmp_path, exported):
    onnx_lib = pytest.importorskip("onnx")
    _, onnx = exported
    with pytest.raises(CheckpointError, match="no such ONNX model file"):
        runtime.load_openvino_denoiser(tmp_path / "none.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(CheckpointError, match="not a readable ONNX model") as err:
        runtime.load_openvino_denoiser(garbage)
    assert "\n" not in str(err.value) and "garbage.onnx" in str(err.value)
    with pytest.raises(CheckpointError, match="exported from other weights"):
        runtime.load_openvino_denoiser(onnx.path, expect_weights="y")
    quantised = onnx_lib.load(str(onnx.path))
    quantised.metadata_props.add(key=runtime.PRECISION_KEY, value="int8")
    onnx_lib.save(quantised, str(tmp_path / "int8.onnx"))
    with pytest.raises(CheckpointError, match="quantised export"):
        runtime.load_openvino_denoiser(tmp_path / "int8.onnx")


@pytest.fixture
def bf16_choice(monkeypatch):
    """Say whether the CPU has native bf16 and whether OpenVINO is installed."""
    import darkraw.nn.enhance as enhance

    def choose(*, bf16: bool, installed: bool = True, vnni: bool = False) -> None:
        monkeypatch.setattr(enhance, "cpu_bf16_fast", lambda: bf16)
        monkeypatch.setattr(enhance, "openvino_available", lambda: installed)
        monkeypatch.setattr(enhance, "cpu_int8_fast", lambda: vnni)

    return choose


@needs_openvino
def test_auto_takes_openvino_bf16_on_a_cpu_with_native_bf16(bf16_choice, monkeypatch):
    import darkraw.nn.enhance as enhance

    bf16_choice(bf16=True, vnni=True)
    network = load_network("default", device="cpu")
    assert network.precision == "bf16" and network.path == bundled_onnx_path("default")
    assert load_network("default", precision="fp32").precision == "fp32"
    assert load_network("default", precision="int8").precision == "int8"
    bf16_choice(bf16=False, vnni=True)
    assert load_network("default", device="cpu").precision == "int8"
    bf16_choice(bf16=True, installed=False, vnni=False)
    monkeypatch.setattr(enhance, "x86_cpu", lambda: False)  # x86 takes int8: tested below
    assert load_network("default", device="cpu").precision == "fp32"


@needs_openvino
def test_auto_runs_int8_in_openvino_on_an_x86_cpu_without_bf16_or_vnni(bf16_choice, monkeypatch):
    import darkraw.nn.enhance as enhance

    bf16_choice(bf16=False, vnni=False)
    monkeypatch.setattr(enhance, "x86_cpu", lambda: True)
    network = bayer_of(load_network("default", device="cpu"))
    assert network.precision == "int8" and network.providers == ("OpenVINO CPU",)
    assert network.path == bundled_int8_path("default")
    assert load_network("default", precision="int8").providers == ("OpenVINO CPU",)
    # Its rounding is not ONNX Runtime's, but as close to fp32 (docs/inference.md).
    x = planes((40, 56), seed=7)[None]
    fp32 = bayer_of(load_network("default", device="cpu", precision="fp32"))(x)
    onnx_int8 = load_onnx_denoiser(bundled_int8_path("default"))(x)
    error, onnx_error = (np.sqrt(np.mean((y - fp32) ** 2)) for y in (network(x), onnx_int8))
    assert 0 < error < 1.5 * onnx_error
    # With VNNI, ONNX Runtime's int8 is exact and was no slower.
    bf16_choice(bf16=False, vnni=True)
    network = load_network("default", device="cpu")
    assert network.precision == "int8" and network.providers == ("CPUExecutionProvider",)
    bf16_choice(bf16=False, vnni=False)
    monkeypatch.setattr(enhance, "cuda_in_use", lambda device: True)
    assert load_network("default").precision == "fp32"


@needs_openvino
def test_openvino_runs_int8_only_from_a_quantised_export():
    with pytest.raises(CheckpointError, match="not a quantised export"):
        runtime.load_openvino_denoiser(bundled_onnx_path("default"), precision="int8")
    with pytest.raises(CheckpointError, match="runs with precision int8"):
        runtime.load_openvino_denoiser(bundled_int8_path("default"), precision="fp32")


@needs_openvino
def test_auto_runs_fp32_in_openvino_on_an_x86_cpu_without_bf16_or_int8(
    bf16_choice, monkeypatch, tmp_path
):
    import darkraw.nn.enhance as enhance

    bf16_choice(bf16=False, vnni=False)
    monkeypatch.setattr(enhance, "x86_cpu", lambda: True)
    monkeypatch.setattr(enhance, "bundled_int8_path", lambda name: tmp_path / "none.onnx")
    network = bayer_of(load_network("default", device="cpu"))
    assert network.precision == "fp32" and network.providers == ("OpenVINO CPU",)
    assert network.path == bundled_onnx_path("default")
    # The same arithmetic as ONNX Runtime's fp32, which --precision fp32 still takes.
    onnx = bayer_of(load_network("default", device="cpu", precision="fp32"))
    assert onnx.providers == ("CPUExecutionProvider",)
    x = planes((40, 56), seed=7)[None]
    np.testing.assert_allclose(network(x), onnx(x), rtol=0, atol=1e-5)
    monkeypatch.setattr(enhance, "x86_cpu", lambda: False)  # not measured on other CPUs
    assert load_network("default", device="cpu").providers == ("CPUExecutionProvider",)
    bf16_choice(bf16=False, vnni=False, installed=False)
    monkeypatch.setattr(enhance, "x86_cpu", lambda: True)
    assert load_network("default", device="cpu").providers == ("CPUExecutionProvider",)


def test_auto_runs_int8_in_onnx_runtime_on_an_x86_cpu_without_openvino(bf16_choice, monkeypatch):
    """The plain install on an AVX2-only x86 CPU runs the int8 version in ONNX Runtime (faster
    than its fp32 there, and as close to fp32: docs/inference.md); other CPUs keep fp32."""
    import darkraw.nn.enhance as enhance

    bf16_choice(bf16=False, vnni=False, installed=False)
    monkeypatch.setattr(enhance, "x86_cpu", lambda: True)
    network = bayer_of(load_network("default", device="cpu"))
    assert network.precision == "int8" and network.providers == ("CPUExecutionProvider",)
    assert network.path == bundled_int8_path("default")
    monkeypatch.setattr(enhance, "x86_cpu", lambda: False)
    network = bayer_of(load_network("default", device="cpu"))
    assert network.precision == "fp32" and network.path == bundled_onnx_path("default")
    bf16_choice(bf16=False, vnni=True, installed=False)  # an 8-bit dot product on any CPU
    assert load_network("default", device="cpu").precision == "int8"


def test_auto_keeps_onnx_runtime_where_it_would_use_a_gpu(bf16_choice, monkeypatch):
    import darkraw.nn.enhance as enhance

    bf16_choice(bf16=True, vnni=False)
    monkeypatch.setattr(enhance, "cuda_in_use", lambda device: True)
    monkeypatch.setattr(
        enhance, "load_openvino_denoiser", lambda *a, **k: pytest.fail("OpenVINO was opened")
    )
    assert load_network("default").precision == "fp32"


def test_bf16_asked_without_openvino_names_the_extra(monkeypatch, exported):
    import sys

    from darkraw.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    assert not runtime.openvino_available()
    with pytest.raises(MissingExtraError, match=r"darkraw\[openvino\]"):
        load_network("default", precision="bf16")
    with pytest.raises(MissingExtraError, match=r"darkraw\[openvino\]"):
        load_network(exported[1].path, precision="bf16")
    assert load_network("default", precision="auto").precision in ("int8", "fp32")


def test_bf16_on_cuda_is_refused_for_the_raw_denoiser_only(exported):
    with pytest.raises(DarkrawError, match="on the CPU"):
        load_network("default", device="cuda", precision="bf16")
    with pytest.raises(DarkrawError, match="on the CPU"):
        load_network(exported[1].path, device="cuda", precision="bf16")
    # The SID network's bf16 is torch's autocast, on a GPU as well.
    assert not isinstance(load_network("sid", device="cuda", precision="bf16"), OnnxDenoiser)


@needs_openvino
def test_an_onnx_file_runs_in_openvino_when_bf16_is_asked(exported):
    _, onnx = exported
    assert load_network(onnx.path, precision="bf16").precision == "bf16"
    assert load_network(onnx.path).precision == "fp32"


@needs_openvino
def test_each_files_line_says_when_bf16_ran(bf16_choice, tmp_path):
    from darkraw.batch import enhance_batch
    from darkraw.raw.dng import write_dng

    from conftest import mosaic_from_rgb, smooth_scene

    bf16_choice(bf16=True)
    mosaic, meta = mosaic_from_rgb(smooth_scene(64, 96), "RGGB")
    dng = write_dng(tmp_path / "dark.dng", mosaic, meta)
    lines: list[str] = []
    report = enhance_batch([dng], tmp_path / "out", model="default", log=lines.append)
    assert report.written and "model default (bf16)," in lines[-1]


@needs_openvino
def test_openvino_reads_the_metadata_through_onnx_runtime_where_it_keeps_none(
    exported, monkeypatch
):
    """OpenVINO releases that do not keep the ONNX file's metadata still get the export's."""
    _, onnx = exported
    monkeypatch.setattr(runtime, "_openvino_metadata", lambda model: {})
    bf16 = runtime.load_openvino_denoiser(onnx.path, expect_weights="x")
    assert bf16.config == onnx.config and bf16.card == onnx.card
    monkeypatch.setattr(runtime, "_onnxruntime_metadata", lambda path: {})
    with pytest.raises(CheckpointError, match="no config in its metadata"):
        runtime.load_openvino_denoiser(onnx.path)


def test_the_default_runs_its_xtrans_twin_on_xtrans_files_loaded_once(tmp_path, monkeypatch):
    import darkraw.nn.enhance as enhance
    import darkraw.nn.modelfiles as modelfiles
    from darkraw.nn.denoiser import DenoiserConfig, build_denoiser
    from darkraw.raw.metadata import RawMetadata

    from conftest import xtrans_meta

    files = {
        "default": save_model_file(tmp_path / "denoiser_model.safetensors", trained_like(seed=1)),
        "xtrans": save_model_file(
            tmp_path / "denoiser_xtrans_model.safetensors",
            build_denoiser(DenoiserConfig(width=4, levels=2, planes=9)),
        ),
    }
    monkeypatch.setattr(modelfiles, "bundled_model_path", files.__getitem__)
    monkeypatch.setattr(enhance, "bundled_model_path", files.__getitem__)
    loads = []
    load_one = enhance._load_one
    monkeypatch.setattr(enhance, "_load_one", lambda *a: loads.append(a[0]) or load_one(*a))
    network = load_network("default")
    assert isinstance(network, enhance.DefaultDenoiser) and enhance.is_denoiser(network)
    assert network.config.planes == 4 and loads == ["default"]
    bayer = RawMetadata.for_bayer("GRBG", 8, 8)
    assert network.for_file(bayer) is network.bayer and loads == ["default"]
    twin = network.for_file(xtrans_meta())
    assert twin.config.planes == 9 and network.for_file(xtrans_meta()) is twin
    assert loads == ["default", "xtrans"]
    # Without the twin's file the default is the Bayer network alone.
    files["xtrans"].unlink()
    assert not isinstance(load_network("default"), enhance.DefaultDenoiser)
