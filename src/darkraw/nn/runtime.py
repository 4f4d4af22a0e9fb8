"""Running the raw denoiser without torch: its ONNX export in ONNX Runtime, or in OpenVINO.

Enhancing a photo needs no training machinery, and torch is a 1.4 GB install (several GB with
CUDA) that takes 1.5 s to import. The bundled denoiser therefore ships as an ONNX file beside
its safetensors weights (``darkraw/data/denoiser_model.onnx``, written by
:func:`darkraw.nn.onnx_export.export_model_file`), and this module runs it.

ONNX Runtime is the runtime ``pip install darkraw`` brings: on tiles of 256-1024 packed pixels
it runs this network in fp32 at 140-160 GFLOP/s, the fp32 peak of a 2-core AMD EPYC with
AVX-512, as OpenVINO does, and it installs 78 MB against OpenVINO's 180 MB, which keeps the
plain install within its 400 MB; ``onnxruntime-gpu`` (installed instead) gives the CUDA path,
and its int8 kernels run the bundled int8 version on CPUs with an 8-bit dot product.

OpenVINO (``pip install 'darkraw[openvino]'``) is taken where it is installed and the CPU has
native bf16 arithmetic (AVX-512 BF16 on AMD, AMX on Intel: :func:`cpu_bf16_fast`): it runs the
fp32 export with bf16 arithmetic inside, measured 2.0x faster than ONNX Runtime's fp32 and 1.3x
faster than its int8 on a 12-Mpixel frame, and 6x closer to fp32 than the int8 version
(``docs/inference.md``). ONNX Runtime has no bf16 kernels on x86. On an x86 CPU with neither
bf16 nor an 8-bit dot product (AVX2 only) it runs the int8 version, 1.2x faster than ONNX
Runtime's int8 there (which the plain install runs) on a Zen 3.

The graph returns the network's *correction*; the noisy planes are added here in fp32, so that
whatever arithmetic a runtime uses inside cannot round the signal.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from darkraw.classic.filters import opencv
from darkraw.errors import CheckpointError, DarkrawError, MissingExtraError
from darkraw.nn.denoiser_config import DenoiserConfig, is_denoiser_config
from darkraw.nn.precision import cpuinfo, fast_cpu_bf16
from darkraw.parallel import cpu_threads, thread_map

#: Devices ``--device`` names: ``auto`` takes CUDA where onnxruntime-gpu sees a GPU, else the CPU.
DEVICES = ("auto", "cpu", "cuda")

#: ``metadata_props`` keys of an exported denoiser.
CONFIG_KEY = "darkraw.config"
CARD_KEY = "darkraw.card"
#: The sha256 entry of the safetensors model file the graph was exported from: a bundled ONNX
#: file whose entry differs from its weights' is stale and is not used.
WEIGHTS_KEY = "darkraw.weights_sha256"
#: What the graph's output is: ``correction`` (added to the noisy planes by the runtime).
OUTPUT_KEY = "darkraw.output"
#: The graph's arithmetic, ``int8`` for a quantised export (absent: fp32).
PRECISION_KEY = "darkraw.precision"

#: Smallest packed side the exported graph takes: it pads each side to a multiple of 8 by
#: reflection, which needs the pad to be shorter than the side.
MIN_SIDE = 5

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError(
            None, "running the raw denoiser needs onnxruntime: pip install onnxruntime"
        ) from None
    return onnxruntime


#: What to install for OpenVINO's bf16 path.
OPENVINO_EXTRA = "pip install 'darkraw[openvino]'"


#: OpenVINO's usage telemetry, which ``import openvino`` starts where it can import it.
_TELEMETRY = "openvino_telemetry"


def _openvino() -> Any:
    """OpenVINO, imported with its usage telemetry off.

    ``import openvino`` starts OpenVINO's telemetry (the ``openvino-telemetry`` package, one of
    its dependencies): every import counted in a file under ``~/intel`` and sent to Google
    Analytics from a background thread. A photographer enhancing files expects no such thing
    (and the batch machines darkraw runs on have no network). Where that package cannot be
    imported OpenVINO takes its own stub, which sends and writes nothing, so it is held out of
    reach for the import alone (a ``None`` in ``sys.modules``) and let back afterwards, for any
    other code of the process that wants it; the import is also 0.01-0.05 s shorter. Where
    OpenVINO was imported before darkraw asked for it, it stays as it was.
    """
    held = "openvino" not in sys.modules and _TELEMETRY not in sys.modules
    if held:
        sys.modules[_TELEMETRY] = None  # type: ignore[assignment]
    try:
        import openvino
    except ImportError:
        raise MissingExtraError(
            None, f"precision bf16 runs the raw denoiser in OpenVINO: {OPENVINO_EXTRA}"
        ) from None
    finally:
        if held and sys.modules.get(_TELEMETRY, 0) is None:
            del sys.modules[_TELEMETRY]
    return openvino


_CORE: Any = None
_CORE_LOCK = threading.Lock()


def _openvino_core() -> Any:
    """The process's one OpenVINO ``Core``, made on first use and never released.

    OpenVINO's CPU plugin (one per ``Core``) gives the thread that makes it a new signal stack
    (``sigaltstack``) and, when destroyed, unmaps that stack but restores the previous one only
    if the destroying thread's current stack is still its own. Two Cores released in the order
    they were made, or one released in another thread, so leave a thread's signal stack in
    unmapped (or reused) memory, and the next Python signal handler run there crashes: a
    segfault on the SIGCHLD of a data loader's workers ended test runs where batches rendered
    in a second thread. One Core that lives as long as the process makes a single stack that
    is never unmapped while anything runs (a test checks the thread's stack stays mapped).
    """
    global _CORE
    ov = _openvino()  # raises MissingExtraError where OpenVINO cannot be imported
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = ov.Core()
        return _CORE


def openvino_available() -> bool:
    """Whether OpenVINO can be imported (found, not imported)."""
    return _importable("openvino")


#: What to install for the commands and networks that need torch.
TORCH_EXTRA = "pip install 'darkraw[train]'"


def torch_available() -> bool:
    """Whether torch can be imported (found, not imported: importing it takes 1.5 s)."""
    return _importable("torch")


def _importable(module: str) -> bool:
    """Whether a top-level module can be imported, found without importing it (``None`` in
    ``sys.modules`` marks one made unimportable)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_torch(what: str, path: str | Path | None = None) -> None:
    """Raise a one-line :class:`MissingExtraError` naming the extra when torch is missing."""
    if not torch_available():
        raise MissingExtraError(path, f"{what} needs torch: {TORCH_EXTRA}")


@dataclass
class OnnxDenoiser:
    """The raw denoiser as an ONNX Runtime session; called like :class:`RawDenoiser` on numpy.

    Attributes:
        config: the network's shape, from the file's metadata.
        path: the ONNX file.
        card: the model card stored with it.
        providers: the runtime's devices in use: ONNX Runtime's execution providers
            (``CPUExecutionProvider``, ...), or ``OpenVINO CPU``.
        precision: the arithmetic it runs in: ``fp32``, ``int8`` (a quantised export), or
            ``bf16`` (the fp32 export in OpenVINO with bf16 inside).
    """

    config: DenoiserConfig
    path: Path
    card: dict[str, Any]
    providers: tuple[str, ...]
    _session: Any = field(repr=False)
    _input: str = field(repr=False)
    precision: str = "fp32"

    def correction(self, x: np.ndarray) -> np.ndarray:
        """What the network adds to the noisy planes of ``x``, ``(N, C, h, w)`` float32 to
        ``(N, P, h, w)`` float32: :meth:`raw_correction` less its local mean, exactly as
        :meth:`darkraw.nn.denoiser.RawDenoiser.correction`."""
        correction = self.raw_correction(x)
        if self.config.mean_window:
            correction = correction - box_mean(correction, self.config.mean_window)
        return correction

    def raw_correction(self, x: np.ndarray) -> np.ndarray:
        """The graph's output: the correction before its local mean is removed
        (:meth:`darkraw.nn.denoiser.RawDenoiser.raw_correction`)."""
        c = self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c or min(x.shape[2:]) < 1:
            raise ValueError(f"expected input of shape (N, {c}, h, w), got {tuple(x.shape)}")
        h, w = x.shape[2:]
        pad_h, pad_w = self._padding(h, w)
        if pad_h or pad_w:
            # torch pads by replication where reflection cannot reach (the graph reflects).
            x = np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")
        out = self._session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})
        correction: np.ndarray = np.asarray(out[0], dtype=np.float32)[:, :, :h, :w]
        return correction

    def prepare(self, h: int, w: int) -> None:
        """Make ready to run windows of ``h x w`` packed pixels (:meth:`raw_correction`), so that
        a caller can do it beside other work: OpenVINO compiles the model for that size (about
        0.1 s, half of it on one core); ONNX Runtime needs nothing. Errors are left to the run,
        which meets them again."""
        prepare = getattr(self._session, "prepare", None)
        if prepare is None:
            return
        pad_h, pad_w = self._padding(h, w)
        try:
            prepare((1, self.config.in_channels, h + pad_h, w + pad_w))
        except Exception:  # the run compiles again and reports it
            return

    def _padding(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns the window gets before the graph: none unless it is smaller than
        the graph's own reflection can pad to its pooling grid."""
        grid = self.config.pad_multiple
        pad_h, pad_w = -h % grid, -w % grid
        return (pad_h, pad_w) if pad_h >= h or pad_w >= w else (0, 0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Clean planes of ``x`` (``(N, C, h, w)``): the noisy ones plus the correction, in fp32."""
        clean: np.ndarray = x[:, : self.config.planes].astype(np.float32) + self.correction(x)
        return clean


def box_mean(x: np.ndarray, window: int) -> np.ndarray:
    """The mean of ``(..., h, w)`` over a ``window`` x ``window`` box around each pixel (the part
    of the box inside the frame at its edges), as :func:`darkraw.nn.denoiser.box_mean`.

    Planes are independent, so a frame's are spread over the CPU's cores
    (:func:`~darkraw.parallel.thread_map`).
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.float32)
    if x.size == 0:
        return out
    h, w = x.shape[-2:]
    planes, outs = x.reshape(-1, h, w), out.reshape(-1, h, w)
    mean_into = _plane_mean(h, w, window)
    thread_map(lambda i: mean_into(planes[i], outs[i]), range(planes.shape[0]), size=x.size)
    return out


def _plane_mean(h: int, w: int, window: int) -> Callable[[np.ndarray, np.ndarray], None]:
    """A function that writes :func:`box_mean` of an ``(h, w)`` float32 plane into ``out``.

    With OpenCV, its box filter of the sums (zeros beyond the frame, sums in double precision)
    times the inverse of the counts: 0.022 s for a 12-Mpixel frame's four planes in
    :func:`add_correction`, against 0.06 s for numpy's running sums (float32, within 1e-9 of
    the exact means where OpenCV's are within 5e-11), the fallback.
    """
    half = window // 2
    rows = _window_counts(h, half, 0, 2)
    cols = _window_counts(w, half, 1, 2)
    cv2 = opencv()
    if cv2 is not None:
        inverse = np.float32(1.0) / (rows * cols)

        def with_opencv(plane: np.ndarray, out: np.ndarray) -> None:
            cv2.boxFilter(
                np.ascontiguousarray(plane),
                -1,
                (window, window),
                dst=out,
                normalize=False,
                borderType=cv2.BORDER_CONSTANT,
            )
            out *= inverse

        return with_opencv

    def with_numpy(plane: np.ndarray, out: np.ndarray) -> None:
        along_rows = _window_sums(plane, half, 0)
        along_rows /= rows
        _window_sums(along_rows, half, 1, out=out)
        out /= cols

    return with_numpy


def add_correction(correction: np.ndarray, planes: np.ndarray, window: int) -> bool:
    """``correction`` becomes the clean planes, in place: ``planes + correction - box_mean(
    correction, window)`` (no mean removed for ``window`` 0), one plane per thread.

    Args:
        correction: ``(P, h, w)`` float32, the graph's output assembled over the frame.
        planes: ``(P, h, w)`` the noisy planes it corrects.

    Returns:
        Whether every value is finite (broken weights give NaN or infinity).
    """
    if correction.ndim != 3 or correction.dtype != np.float32 or planes.shape != correction.shape:
        raise ValueError(
            f"expected float32 (P, h, w) correction and planes of its shape, got "
            f"{correction.shape} {correction.dtype} and {planes.shape}"
        )
    h, w = correction.shape[1:]
    mean_into = _plane_mean(h, w, window) if window else None

    def one(i: int) -> bool:
        if mean_into is not None:
            mean = np.empty((h, w), dtype=np.float32)
            mean_into(correction[i], mean)
            np.subtract(correction[i], mean, out=correction[i])
        np.add(correction[i], planes[i], out=correction[i])
        return bool(np.isfinite(correction[i]).all())

    return all(thread_map(one, range(correction.shape[0]), size=correction.size))


def _window_sums(x: np.ndarray, half: int, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    """Sums of the 2-D ``x`` over ``[i - half, i + half]`` along ``axis``, clipped to the frame:
    differences of one running sum, written by slices into ``out`` (a new array if ``None``)."""
    n = x.shape[axis]
    csum = np.cumsum(x, axis=axis)
    sums = np.empty(x.shape, dtype=csum.dtype) if out is None else out

    def cut(a: np.ndarray, start: int, stop: int) -> np.ndarray:
        return a[start:stop] if axis == 0 else a[:, start:stop]

    if n <= 2 * half + 1:
        # Every window reaches an edge: index arrays are simplest and the frame is small.
        hi = np.minimum(np.arange(n) + half, n - 1)
        lo = np.arange(n) - half - 1
        sums[...] = np.take(csum, hi, axis=axis)
        inside = np.flatnonzero(lo >= 0)
        if inside.size:
            index: list[slice | np.ndarray] = [slice(None), slice(None)]
            index[axis] = inside
            sums[tuple(index)] -= np.take(csum, lo[inside], axis=axis)
        return sums
    width = 2 * half + 1
    # Windows cut by the left edge (i <= half), whole ones, then those cut by the right edge.
    cut(sums, 0, half + 1)[...] = cut(csum, half, width)
    np.subtract(cut(csum, width, n), cut(csum, 0, n - width), out=cut(sums, half + 1, n - half))
    np.subtract(cut(csum, n - 1, n), cut(csum, n - width, n - half - 1), out=cut(sums, n - half, n))
    return sums


def _window_counts(n: int, half: int, axis: int, ndim: int) -> np.ndarray:
    """How many samples each clipped window holds, shaped to broadcast along ``axis``."""
    index = np.arange(n)
    counts = np.minimum(index + half, n - 1) - np.maximum(index - half, 0) + 1
    shape = [1] * ndim
    shape[axis] = n
    return counts.reshape(shape).astype(np.float32)


def load_onnx_denoiser(
    path: str | Path,
    *,
    device: str = "auto",
    threads: int = 0,
    expect_weights: str | None = None,
) -> OnnxDenoiser:
    """An exported raw denoiser, ready to run.

    Args:
        path: the ``.onnx`` file.
        device: ``auto``, ``cpu`` or ``cuda`` (see :data:`DEVICES`).
        threads: CPU threads (0: every core this process may use).
        expect_weights: the sha256 of the safetensors weights the file must have been exported
            from (a bundled file is checked against its weights); ``None`` checks nothing.

    Raises:
        CheckpointError: (one line naming the file) missing, not ONNX, not a darkraw denoiser
            export, or exported from other weights than ``expect_weights``.
        MissingExtraError: onnxruntime is not installed.
        DarkrawError: ``device cuda`` without a GPU that onnxruntime can use.
    """
    path = Path(path)
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if not path.is_file():
        raise CheckpointError(path, "no such ONNX model file")
    ort = _onnxruntime()
    providers = _providers(ort.get_available_providers(), device)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    # ONNX Runtime's memory pattern plans one block for a window size's every tensor, all fresh
    # memory; without it the tensors come from its arena as they are needed and reuse each
    # other's. A 12-Mpixel frame in int8 (AMD EPYC, Zen 4): the command's peak RSS 1.11-1.20
    # against 1.31 GB, no slower (2.40-2.54 against 2.46-2.70 s); a batch of 8 14.8-15.4 against
    # 15.5-16.7 s and 1.44 against 1.63-1.68 GB (docs/speed-log.md). Measured on the CPU only,
    # so a GPU session keeps ONNX Runtime's default.
    options.enable_mem_pattern = _PROVIDERS["cuda"] in providers
    try:
        session = ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own untyped errors for bad files
        reason = " ".join(str(err).split())[:200]
        raise CheckpointError(path, f"not a readable ONNX model ({reason})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    inputs = session.get_inputs()
    config = _checked_config(path, meta, len(inputs), expect_weights)
    return OnnxDenoiser(
        config=config,
        path=path,
        card=_card(path, meta),
        providers=tuple(session.get_providers()),
        _session=session,
        _input=inputs[0].name,
        precision=meta.get(PRECISION_KEY, "fp32"),
    )


def load_openvino_denoiser(
    path: str | Path,
    *,
    threads: int = 0,
    expect_weights: str | None = None,
    precision: str = "bf16",
) -> OnnxDenoiser:
    """An export run by OpenVINO on the CPU: the fp32 one with bf16 arithmetic inside or in
    fp32, or the int8 one.

    ``precision="bf16"`` on a CPU without native bf16 runs in fp32 (:func:`cpu_bf16_fast` says
    which). ``"fp32"`` is what ``--precision auto`` runs on an x86 CPU with neither native bf16
    nor an 8-bit dot product where the int8 version is missing: the same arithmetic as ONNX
    Runtime's fp32 (5e-9 RMS apart on a 776x1128 window), 12 % faster a window on the AVX-512
    EPYC (``docs/inference.md``), as OpenVINO was 15 % faster for the SID network on a Zen 3.
    ``"int8"`` takes the int8 export (its quantised convolutions in int8, the rest in fp32),
    what ``auto`` runs on an x86 CPU without an 8-bit dot product where OpenVINO is installed:
    restricted to AVX2 its output equals its VNNI kernels' bit for bit; a 776x1128 window
    0.29-0.32 s against fp32's 0.39-0.43 s (AVX-512 EPYC), and on a real Zen 3 the network 1.2x
    faster than ONNX Runtime's int8. Its rounding differs from ONNX Runtime's by 8e-4 RMS on a
    window, as far from fp32 (1.7e-3 RMS both; the correction itself is 1.3e-2), and scored the
    same on the acceptance benchmark, on the EPYC and on the Zen 3 (``docs/inference.md``).

    Args and raises: as :func:`load_onnx_denoiser`, and CheckpointError for an export of
    the other kind (int8 for ``bf16``/``fp32``, fp32 for ``int8``); MissingExtraError names
    the extra to install when OpenVINO is missing; ValueError for another ``precision``.
    """
    if precision not in ("bf16", "fp32", "int8"):
        raise ValueError(f"OpenVINO runs the raw denoiser in bf16, fp32 or int8, not {precision!r}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such ONNX model file")
    core = _openvino_core()
    try:
        model = core.read_model(str(path))
    except Exception as err:  # OpenVINO raises its own untyped errors for bad files
        reason = " ".join(str(err).split())[:200]
        raise CheckpointError(path, f"not a readable ONNX model ({reason})") from None
    meta = _openvino_metadata(model) or _onnxruntime_metadata(path)
    config = _checked_config(path, meta, len(model.inputs), expect_weights)
    quantised = meta.get(PRECISION_KEY, "fp32") == "int8"
    if quantised != (precision == "int8"):
        problem = (
            "a quantised export, which runs with precision int8"
            if quantised
            else "not a quantised export, which precision int8 needs"
        )
        raise CheckpointError(path, problem)
    settings = {
        "INFERENCE_NUM_THREADS": threads or cpu_threads(),
        # An int8 export's unquantised layers stay fp32, as ONNX Runtime runs them and as the
        # quantisation-aware training simulated them.
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    return OnnxDenoiser(
        config=config,
        path=path,
        card=_card(path, meta),
        providers=("OpenVINO CPU",),
        _session=_OpenVinoSession(core, model, settings, path),
        _input=model.inputs[0].get_any_name(),
        precision=precision,
    )


class _OpenVinoSession:
    """An OpenVINO model behind the ``run`` of an ONNX Runtime session, compiled for each
    window size it is given.

    Compiled for the window's static size, compiling and a 12-Mpixel frame's four 776x1128
    windows took 0.91-0.99 s against 1.03-1.10 s for the dynamic model, with the same output
    (``docs/inference.md``). The last
    :data:`_SIZES_KEPT` sizes stay compiled (a frame's windows have one size,
    :func:`~darkraw.nn.tiling.tile_grid`, and a batch's frames mostly one; a self-ensemble's
    passes lying on their side another). Calls are serialised: an infer request is not
    reentrant.
    """

    def __init__(self, core: Any, model: Any, settings: Mapping[str, Any], path: Path) -> None:
        self._core, self._model, self._settings, self._path = core, model, dict(settings), path
        self._requests: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, outputs: Any, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        (x,) = feeds.values()
        with self._lock:
            request = self._request(tuple(int(n) for n in x.shape))
            # share_inputs: the window is read in place (it lives until infer returns);
            # outputs are copied out of the request's buffer, which the next call reuses.
            result = request.infer({0: x}, share_inputs=True, share_outputs=False)
        return [np.asarray(result[0])]

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Compile the model for ``shape`` now (in the caller's thread) unless it is."""
        with self._lock:
            self._request(shape)

    def _request(self, shape: tuple[int, ...]) -> Any:
        request = self._requests.pop(shape, None)
        if request is None:
            self._model.reshape(list(shape))
            request = self._compiled(shape).create_infer_request()
            while len(self._requests) >= _SIZES_KEPT:
                self._requests.popitem(last=False)
        self._requests[shape] = request
        return request

    def _compiled(self, shape: tuple[int, ...]) -> Any:
        """The model compiled for ``shape``: from the compiled-model folder where it holds it
        (:func:`compiled_model_folder`), else compiled, and kept there for the next process."""
        folder = _writable(compiled_model_folder())
        try:
            if folder is not None:
                # A folder OpenVINO cannot use is no reason to fail: then it compiles without.
                with contextlib.suppress(Exception):
                    cached = {**self._settings, "CACHE_DIR": str(folder)}
                    compiled = self._core.compile_model(self._model, "CPU", cached)
                    _prune(folder)
                    return compiled
            return self._core.compile_model(self._model, "CPU", self._settings)
        except Exception as err:  # OpenVINO raises its own untyped errors
            reason = " ".join(str(err).split())[:200]
            raise CheckpointError(
                self._path, f"OpenVINO cannot compile it for {shape} ({reason})"
            ) from None


#: The environment variable naming the folder OpenVINO keeps the models it compiled in; set
#: empty, it keeps none.
CACHE_ENV = "DARKRAW_CACHE_DIR"

#: Compiled models kept in that folder, newest first (1-2 MB each: one per network, window size
#: and arithmetic; a frame's windows have one size, a camera's frames mostly one).
CACHED_MODELS_KEPT = 16


def compiled_model_folder() -> Path | None:
    """Where OpenVINO keeps the models it compiled, so that the next command loads a window
    size's compiled model instead of compiling it again; ``None`` where none is kept.

    Compiling the int8 version for a 1424x1128 window took 0.41-0.54 s of CPU on a 2-core Zen 3
    (AVX2 only), most of it OpenVINO's low-precision passes, against 0.18-0.21 s to load it
    compiled; the fp32 one 0.22 against 0.15 s. The compilation runs beside the frame's noise
    measurement, which waits for the CPU it takes (``docs/speed-log.md``).

    ``$DARKRAW_CACHE_DIR`` names the folder (set empty: none is kept); otherwise it is
    ``darkraw/openvino`` in ``$XDG_CACHE_HOME`` or ``~/.cache``. OpenVINO names each file by a
    hash of the graph, its input shape and its settings, checks a file's header before loading
    it, and compiles again (replacing the file) where it is damaged (a test writes one).
    """
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return Path(chosen).expanduser() if chosen.strip() else None
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    try:
        root = Path(base) if base else Path.home() / ".cache"
    except RuntimeError:  # no home folder to be found
        return None
    return root / "darkraw" / "openvino"


def _writable(folder: Path | None) -> Path | None:
    """``folder``, made where missing, if this process can write in it; else ``None``."""
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


def _prune(folder: Path) -> None:
    """Delete all but the :data:`CACHED_MODELS_KEPT` newest compiled models in ``folder``."""
    try:
        blobs = [(entry.stat().st_mtime, entry) for entry in folder.glob("*.blob")]
    except OSError:
        return
    if len(blobs) <= CACHED_MODELS_KEPT:
        return
    blobs.sort(key=lambda item: item[0], reverse=True)
    for _, entry in blobs[CACHED_MODELS_KEPT:]:
        with contextlib.suppress(OSError):
            entry.unlink()


#: Window sizes an OpenVINO model keeps compiled (each holds its own buffers, about 0.2 GB for
#: a 776x1128 window).
_SIZES_KEPT = 2


def _openvino_metadata(model: Any) -> dict[str, str]:
    """The ONNX file's ``metadata_props``, which OpenVINO keeps under ``framework`` (empty
    where this OpenVINO does not)."""
    try:
        entries = model.get_rt_info()["framework"]
        return {str(key): value.astype(str) for key, value in entries.items()}
    except Exception:
        return {}


def _onnxruntime_metadata(path: Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` as ONNX Runtime reads them (empty where it cannot)."""
    try:
        session = _onnxruntime().InferenceSession(str(path), providers=[_PROVIDERS["cpu"]])
        return dict(session.get_modelmeta().custom_metadata_map)
    except Exception:
        return {}


def _checked_config(
    path: Path, meta: Mapping[str, str], inputs: int, expect_weights: str | None
) -> DenoiserConfig:
    """The config of darkraw's raw denoiser export; any other file is refused (one line
    naming it)."""
    config = _config(path, meta)
    if meta.get(OUTPUT_KEY) != "correction":
        raise CheckpointError(path, "not a raw denoiser exported by darkraw (no correction output)")
    if expect_weights is not None and meta.get(WEIGHTS_KEY) != expect_weights:
        raise CheckpointError(path, "exported from other weights than the model file beside it")
    if inputs != 1:
        raise CheckpointError(path, f"expected one input, the graph has {inputs}")
    return config


#: CPU flags of an 8-bit dot product instruction (``/proc/cpuinfo``), with which ONNX Runtime's
#: int8 kernels are fastest and exact. Without them (AVX2 only) pairs of its u8 x s8 products
#: are added in 16 bits (``vpmaddubsw``), which can saturate: on a Zen 3 that moved 0.4 % of a
#: window's outputs of the bundled int8 version, by at most 2.2e-3 (``docs/inference.md``).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def fast_cpu_int8(cpuinfo: str) -> bool:
    """Whether a CPU, described by ``/proc/cpuinfo``'s text, has an 8-bit dot product."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return any(flag in value.split() for flag in INT8_DOT_FLAGS)
    return False


def cpu_int8_fast() -> bool:
    """:func:`fast_cpu_int8` of this machine (``False`` where ``/proc/cpuinfo`` is missing)."""
    return fast_cpu_int8(cpuinfo())


def cpu_bf16_fast() -> bool:
    """:func:`~darkraw.nn.precision.fast_cpu_bf16` of this machine, without importing torch
    (``False`` where ``/proc/cpuinfo`` is missing)."""
    return fast_cpu_bf16(cpuinfo())


def x86_cpu() -> bool:
    """Whether this machine's CPU is x86-64 (where OpenVINO's fp32 was measured faster than
    ONNX Runtime's)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def cuda_in_use(device: str) -> bool:
    """Whether ``device`` puts ONNX Runtime on a GPU: ``cuda``, or ``auto`` where
    onnxruntime-gpu's CUDA provider is installed (:func:`_providers`' choice)."""
    if device in ("cpu", "cuda"):
        return device == "cuda"
    # Importing ONNX Runtime to ask it takes 0.13 s of the command (0.18 s of CPU) where the
    # answer is nearly always no: a package without the CUDA provider's library lists none.
    if not _cuda_provider_shipped():
        return False
    return _PROVIDERS["cuda"] in _onnxruntime().get_available_providers()


#: The CUDA provider's library as onnxruntime-gpu ships it (Linux, Windows), in the package's
#: ``capi`` folder beside ONNX Runtime's own.
CUDA_PROVIDER_LIBRARIES = ("libonnxruntime_providers_cuda.so", "onnxruntime_providers_cuda.dll")


def _cuda_provider_shipped() -> bool:
    """Whether the installed ONNX Runtime package holds the CUDA provider's library (found, not
    imported); ``False`` where ONNX Runtime is not installed."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(root) / "capi" / name).is_file()
        for root in spec.submodule_search_locations
        for name in CUDA_PROVIDER_LIBRARIES
    )


def _providers(available: Sequence[str], device: str) -> tuple[str, ...]:
    cuda = _PROVIDERS["cuda"]
    if device == "cuda" and cuda not in available:
        raise DarkrawError(
            None,
            "device cuda asked for, but onnxruntime has no CUDA provider here (install "
            "onnxruntime-gpu in place of onnxruntime, on a machine with an NVIDIA GPU)",
        )
    if device in ("cuda", "auto") and cuda in available:
        return (cuda, _PROVIDERS["cpu"])
    return (_PROVIDERS["cpu"],)


def _config(path: Path, meta: Mapping[str, str]) -> DenoiserConfig:
    try:
        section = json.loads(meta[CONFIG_KEY])
        if not isinstance(section, dict) or not is_denoiser_config(section):
            raise ValueError("not a raw denoiser's config")
        return DenoiserConfig.from_dict(section)
    except KeyError:
        raise CheckpointError(
            path, "not a darkraw ONNX export (no config in its metadata)"
        ) from None
    except (ValueError, TypeError) as err:
        raise CheckpointError(path, f"bad model config in its metadata: {err}") from None


def _card(path: Path, meta: Mapping[str, str]) -> dict[str, Any]:
    try:
        card = json.loads(meta.get(CARD_KEY, "{}"))
    except ValueError:
        raise CheckpointError(path, "its model card is not valid JSON") from None
    return card if isinstance(card, dict) else {}


__all__ = [
    "DEVICES",
    "INT8_DOT_FLAGS",
    "OPENVINO_EXTRA",
    "OnnxDenoiser",
    "add_correction",
    "box_mean",
    "cpu_bf16_fast",
    "cpu_int8_fast",
    "cpu_threads",
    "cuda_in_use",
    "fast_cpu_int8",
    "load_onnx_denoiser",
    "load_openvino_denoiser",
    "openvino_available",
    "require_torch",
    "torch_available",
    "x86_cpu",
]
