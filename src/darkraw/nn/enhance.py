"""One entry for enhancing a mosaic with whichever network is given: the raw denoiser
(:mod:`darkraw.nn.rawdenoise`, the default) or the seed's SID U-Net (:mod:`darkraw.nn.infer`).

Whatever the network, its result is checked here before anyone writes it: broken weights (an
overflow to infinity or NaN) once gave an all-black or all-white picture and exit code 0.
"""

from __future__ import annotations

import functools
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from darkraw.errors import CheckpointError, DarkrawError, NetworkOutputError
from darkraw.nn.modelfiles import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    XTRANS_MODEL,
    bundled_int8_path,
    bundled_model_path,
    bundled_onnx_path,
    existing_source,
    json_entry,
    model_arch,
    read_metadata,
)
from darkraw.nn.rawdenoise import DenoisedFrame, DenoisedResult, DenoiseOptions, denoise_frame
from darkraw.nn.runtime import (
    OnnxDenoiser,
    cpu_bf16_fast,
    cpu_int8_fast,
    cuda_in_use,
    load_onnx_denoiser,
    load_openvino_denoiser,
    openvino_available,
    require_torch,
    torch_available,
    x86_cpu,
)
from darkraw.parallel import bands, thread_map
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.noiselevel import NoiseDatabase

if TYPE_CHECKING:
    from darkraw.nn.infer import InferenceOptions, NetworkResult
    from darkraw.nn.infer import Network as TorchNetwork

#: A network :func:`enhance_mosaic` runs: a torch network (the SID U-Net or the raw denoiser),
#: the raw denoiser in ONNX Runtime or OpenVINO, or the default pair of raw denoisers (Bayer and
#: X-Trans, :class:`DefaultDenoiser`).
AnyNetwork: TypeAlias = "TorchNetwork | OnnxDenoiser | DefaultDenoiser"


def load_network(
    spec: str | Path | Any, *, device: str = "auto", threads: int = 0, precision: str = "auto"
) -> AnyNetwork:
    """The network a model spec names, in the lightest runtime that runs it.

    A bundled raw denoiser whose ONNX export sits beside its weights, or an ``.onnx`` file, runs
    in ONNX Runtime, or in OpenVINO for bf16 (no torch); any other model file or checkpoint is
    loaded into torch. ``default`` gives a :class:`DefaultDenoiser` where its X-Trans twin is
    bundled: the Bayer network now, the X-Trans one for the first X-Trans file.

    Args:
        spec: a bundled model's name, a file, or a network (returned as is).
        device: ``auto``, ``cpu`` or ``cuda``, for ONNX Runtime.
        threads: CPU threads for ONNX Runtime or OpenVINO (0: every core).
        precision: for a bundled raw denoiser, ``auto`` takes, on the CPU, its fp32 export in
            OpenVINO with bf16 arithmetic where OpenVINO is installed and the CPU has native
            bf16 (:func:`~darkraw.nn.runtime.cpu_bf16_fast`), else its int8 version
            (:func:`~darkraw.nn.modelfiles.bundled_int8_path`) in ONNX Runtime on a CPU
            with an 8-bit dot product (:func:`~darkraw.nn.runtime.cpu_int8_fast`), or in
            OpenVINO on an x86 CPU without one where it is installed, else fp32 (a GPU
            included): on an x86 CPU in OpenVINO where it is installed, which runs it
            faster, else in ONNX Runtime; ``int8`` and ``bf16`` insist (``bf16`` also for an
            ``.onnx`` file); ``fp32`` takes the fp32 export in ONNX Runtime.

    Raises:
        CheckpointError: the file cannot be loaded, or the named model is not bundled, or
            ``int8`` is asked for a model without a current int8 version.
        MissingExtraError: the model needs torch, onnxruntime or (``bf16``) OpenVINO, which is
            not installed.
        DarkrawError: ``bf16`` with ``device cuda`` for the raw denoiser (OpenVINO's bf16 runs
            on the CPU; the SID network's runs in torch, on the GPU too).
    """
    if not isinstance(spec, str | Path):
        return spec  # type: ignore[no-any-return]
    network = _load_one(spec, device, threads, precision)
    if str(spec) == DEFAULT_MODEL and bundled_model_path(XTRANS_MODEL).is_file():
        # The X-Trans twin has no int8 version: asked for int8, it runs as auto chooses.
        twin = "auto" if precision == "int8" else precision
        return DefaultDenoiser(
            network, functools.partial(_load_one, XTRANS_MODEL, device, threads, twin)
        )
    return network


def _load_one(spec: str | Path, device: str, threads: int, precision: str) -> AnyNetwork:
    """:func:`load_network` for one network (its arguments and errors)."""
    path = existing_source(spec)
    if path.suffix.lower() == ".onnx":
        if precision == "bf16":
            _check_bf16_device(device)
            return load_openvino_denoiser(path, threads=threads)
        return load_onnx_denoiser(path, device=device, threads=threads)
    if str(spec) in BUNDLED_MODELS and model_arch(spec) == "raw_denoiser":
        weights = json_entry(path, read_metadata(path), "sha256")
        fast = _bundled_bf16(str(spec), device, threads, precision, weights)
        fast = fast or _bundled_int8(str(spec), device, threads, precision, weights)
        fast = fast or _bundled_openvino_fp32(str(spec), device, threads, precision, weights)
        if fast is not None:
            return fast
        onnx = bundled_onnx_path(str(spec))
        if onnx.is_file():
            try:
                return load_onnx_denoiser(
                    onnx, device=device, threads=threads, expect_weights=weights
                )
            except CheckpointError:
                # A stale export (weights replaced without re-exporting): torch can still run
                # the weights themselves, where it is installed.
                if not torch_available():
                    raise
    require_torch("this model" if str(spec) not in BUNDLED_MODELS else f"the {spec} model", path)
    from darkraw.nn.infer import resolve_model

    return resolve_model(path)


def _bundled_bf16(
    name: str, device: str, threads: int, precision: str, weights: str
) -> OnnxDenoiser | None:
    """The bundled model's fp32 export in OpenVINO with bf16 inside, where ``precision`` asks
    for it, or ``auto`` where OpenVINO is installed and the CPU has native bf16; ``None``
    otherwise. For ``auto`` a failure to load it falls through to the next choice."""
    if precision == "auto":
        if cuda_in_use(device) or not (openvino_available() and cpu_bf16_fast()):
            return None
    elif precision != "bf16":
        return None
    _check_bf16_device(device)
    try:
        return load_openvino_denoiser(
            bundled_onnx_path(name), threads=threads, expect_weights=weights
        )
    except CheckpointError:
        if precision == "bf16":
            raise
        return None


def _bundled_openvino_fp32(
    name: str, device: str, threads: int, precision: str, weights: str
) -> OnnxDenoiser | None:
    """For ``auto`` on an x86 CPU (neither bf16 nor int8 chosen before it) where OpenVINO is
    installed, the bundled model's fp32 export in OpenVINO in fp32: the arithmetic of ONNX
    Runtime's fp32, and faster (a 12-Mpixel command 3.13 s against ONNX Runtime's 3.22 s,
    pairwise median -0.14 s, 0.13 GB less, with the CPU's bf16 and VNNI hidden; OpenVINO was
    15 % faster than ONNX Runtime for the SID network on a Zen 3 with AVX2 only). ``None``
    otherwise, or where it fails to load (ONNX Runtime's fp32 then runs)."""
    if precision != "auto" or not x86_cpu() or cuda_in_use(device) or not openvino_available():
        return None
    try:
        return load_openvino_denoiser(
            bundled_onnx_path(name), threads=threads, expect_weights=weights, precision="fp32"
        )
    except CheckpointError:
        return None


def _check_bf16_device(device: str) -> None:
    if device == "cuda":
        raise DarkrawError(
            None,
            "precision bf16 runs the raw denoiser on the CPU (OpenVINO); with --device cuda "
            "use precision auto or fp32",
        )


def _bundled_int8(
    name: str, device: str, threads: int, precision: str, weights: str
) -> OnnxDenoiser | None:
    """The bundled model's int8 version where ``precision`` asks for it and the CPU runs it
    well; ``None`` for fp32. A missing or stale int8 file is an error only for ``int8``.

    ``auto`` takes it on a CPU with an 8-bit dot product and on any other x86 CPU: in ONNX
    Runtime, or on an x86 CPU without the dot product (AVX2 only) in OpenVINO where it is
    installed (:func:`_int8_in_openvino`). On a real AVX2-only Zen 3 (``docs/inference.md``,
    "int8 on a real AVX2-only CPU") ONNX Runtime's int8 kernels' 16-bit sums moved 0.4 % of a
    window's outputs off the graph's own arithmetic, by at most 2.2e-3 (OpenVINO's rounding
    moves 16 %), both scored what the VNNI kernels score on the acceptance benchmark (within
    0.19 dB of fp32 in every group), and the whole command took 5.03 s against 5.53 s in fp32
    (6 alternating rounds, pairwise -0.68 s). Other CPUs (Arm) were not measured and keep
    fp32."""
    if precision not in ("auto", "int8"):
        return None
    openvino = _int8_in_openvino(device)
    if precision == "auto" and (cuda_in_use(device) or not (x86_cpu() or cpu_int8_fast())):
        return None  # a GPU's fp32 is faster than its int8 emulation, and exact
    path = bundled_int8_path(name)
    if not path.is_file():
        if precision == "int8":
            raise CheckpointError(path, f"the {name} model has no int8 version")
        return None
    try:
        if openvino:
            return load_openvino_denoiser(
                path, threads=threads, expect_weights=weights, precision="int8"
            )
        return load_onnx_denoiser(path, device=device, threads=threads, expect_weights=weights)
    except CheckpointError:
        if precision == "int8":
            raise
        return None


def _int8_in_openvino(device: str) -> bool:
    """Whether the int8 version runs in OpenVINO: on an x86 CPU without an 8-bit dot product
    (AVX2 only) where OpenVINO is installed. There its kernels are faster than ONNX Runtime's:
    on a Zen 3 the whole command took 4.46 s against 5.03 s in ONNX Runtime's int8 and 5.53 s
    in its fp32 (6 alternating rounds, pairwise -0.37 s against ONNX Runtime's int8), with the
    same scores on the acceptance benchmark (``docs/inference.md``). With VNNI, ONNX Runtime's
    int8 stays: the whole command was no slower in it (2.66 against 2.75 s) though OpenVINO
    runs a window faster."""
    return x86_cpu() and not cuda_in_use(device) and openvino_available() and not cpu_int8_fast()


class DefaultDenoiser:
    """``--model default``: the bundled raw denoiser for Bayer files and its X-Trans twin
    (:data:`~darkraw.nn.modelfiles.XTRANS_MODEL`) for X-Trans files, loaded in the same runtime
    and precision when the first X-Trans file comes (most folders hold none).

    Attributes:
        bayer: the Bayer network; any other attribute (``path``, ``config``, ``precision``,
            ``providers``) is its.
    """

    def __init__(self, bayer: AnyNetwork, load_xtrans: Callable[[], AnyNetwork]) -> None:
        self.bayer = bayer
        self._load_xtrans = load_xtrans
        self._xtrans: AnyNetwork | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # What callers ask of the network they loaded (its file, config, precision, runtime
        # providers) is the Bayer network's: the X-Trans twin runs in the same runtime.
        if name.startswith("_") or name == "bayer":
            raise AttributeError(name)
        return getattr(self.bayer, name)

    def for_file(self, meta: RawMetadata) -> AnyNetwork:
        """The network for a mosaic of ``meta``'s layout.

        Raises:
            CheckpointError, MissingExtraError: the X-Trans twin cannot be loaded.
        """
        if not meta.is_xtrans:
            return self.bayer
        with self._lock:
            if self._xtrans is None:
                self._xtrans = self._load_xtrans()
            return self._xtrans


def is_denoiser(network: object) -> bool:
    """Whether ``network`` is the raw denoiser (in either runtime), without importing torch."""
    if isinstance(network, OnnxDenoiser | DefaultDenoiser):
        return True
    if "darkraw.nn.denoiser" not in sys.modules:
        return False
    from darkraw.nn.denoiser import RawDenoiser

    return isinstance(network, RawDenoiser)


def describe(network: object) -> str:
    """How messages name a network: ``model PATH`` for one loaded from a file, else its kind."""
    if isinstance(network, DefaultDenoiser):
        return describe(network.bayer)
    if isinstance(network, OnnxDenoiser):
        return f"model {network.path}"
    from darkraw.nn.infer import describe_network

    return describe_network(network)  # type: ignore[arg-type]


class ConstantOutputWarning(UserWarning):
    """A network's result is one colour over the whole frame: broken weights, or a blank photo."""


def enhance_mosaic(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    network: AnyNetwork,
    ratio: float | None = None,
    *,
    inference: InferenceOptions | None = None,
    denoise: DenoiseOptions | None = None,
    source: str | Path | None = None,
    database: NoiseDatabase | None = None,
) -> NetworkResult | DenoisedResult:
    """Enhance a raw mosaic with ``network``.

    Args:
        mosaic_dn: ``(H, W)`` mosaic in DN; ``meta`` its metadata.
        network: a raw denoiser or a SID U-Net.
        ratio: amplification; ``None`` chooses one from the image.
        inference: how a SID network runs (tiles, precision, self-ensemble).
        denoise: how the raw denoiser runs (strength, renderer, tiles, precision).
        source: the file the mosaic came from (the denoiser's LibRaw renderer reads it, and
            messages name it).
        database: camera noise profiles for the denoiser (else the noise is estimated).

    Raises:
        ValueError: options for the other kind of network, or a file the network cannot take.
        NetworkOutputError: the network gave NaN or infinite values (one line naming the model).

    Warns:
        ConstantOutputWarning: the result is one colour over the whole frame; once per call.
    """
    started = start_enhancement(
        mosaic_dn,
        meta,
        network,
        ratio,
        inference=inference,
        denoise=denoise,
        source=source,
        database=database,
    )
    result = finish_enhancement(started, network, source)
    assert not isinstance(result, DenoisedFrame)
    return result


def start_enhancement(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    network: AnyNetwork,
    ratio: float | None = None,
    *,
    inference: InferenceOptions | None = None,
    denoise: DenoiseOptions | None = None,
    source: str | Path | None = None,
    database: NoiseDatabase | None = None,
) -> NetworkResult | DenoisedFrame:
    """The network's part of :func:`enhance_mosaic` (its arguments and errors): the SID
    network's result, or the raw denoiser's clean frame with its picture still to render.
    :func:`finish_enhancement` renders and checks it, or, for a DNG of the clean mosaic, checks
    the mosaic alone."""
    try:
        return _enhance(mosaic_dn, meta, network, ratio, inference, denoise, source, database)
    except NetworkOutputError as err:
        if source is None or err.path is not None:
            raise
        raise NetworkOutputError(source, err.problem) from None


def finish_enhancement(
    started: NetworkResult | DenoisedFrame,
    network: AnyNetwork,
    source: str | Path | None = None,
    *,
    picture: bool = True,
) -> NetworkResult | DenoisedResult | DenoisedFrame:
    """The rest of :func:`enhance_mosaic` after :func:`start_enhancement`: the raw denoiser's
    picture rendered, and the result checked (its warnings and errors).

    Args:
        network: the network that started it (messages name it).
        picture: ``False`` leaves a denoised frame unrendered and checks its clean mosaic only
            (for a DNG, which stores the mosaic); the SID network's result is a picture anyway.
    """
    result: NetworkResult | DenoisedResult | DenoisedFrame = started
    if isinstance(started, DenoisedFrame) and picture:
        result = started.render()
    _check_result(result, describe(network), source)
    return result


def _enhance(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    network: AnyNetwork,
    ratio: float | None,
    inference: InferenceOptions | None,
    denoise: DenoiseOptions | None,
    source: str | Path | None,
    database: NoiseDatabase | None,
) -> NetworkResult | DenoisedFrame:
    if isinstance(network, DefaultDenoiser):
        network = network.for_file(meta)
    if is_denoiser(network):
        if inference is not None:
            raise ValueError("inference options are for the SID network; give denoise options")
        options = denoise or DenoiseOptions()
        return denoise_frame(
            mosaic_dn,
            meta,
            network,  # type: ignore[arg-type]
            ratio,
            options,
            source=source,
            database=database,
        )
    if denoise is not None:
        raise ValueError("denoise options are for the raw denoiser; give inference options")
    from darkraw.nn.infer import InferenceOptions, enhance_raw_network

    return enhance_raw_network(
        mosaic_dn,
        meta,
        network,  # type: ignore[arg-type]
        ratio,
        inference or InferenceOptions(),
    )


def _check_result(
    result: NetworkResult | DenoisedResult | DenoisedFrame,
    name: str,
    source: str | Path | None,
) -> None:
    """Refuse a result with NaN or infinity; warn about one that is constant over the frame.

    The raw denoiser's clean planes are seen through ``mosaic_dn`` (the LibRaw renderer makes a
    picture of whatever they hold); the image is checked for both networks, where there is one.
    """
    # LibRaw's 16-bit pixels are checked as they are: integers are finite, and making the
    # float planes only to look at them would cost a 12-megapixel picture 144 MB.
    rgb16 = result.rgb16 if isinstance(result, DenoisedResult) else None
    arrays = []
    if rgb16 is None and not isinstance(result, DenoisedFrame):
        arrays.append(result.image)
    if isinstance(result, DenoisedResult | DenoisedFrame):
        arrays.append(result.mosaic_dn)
    if not all(_all_finite(a) for a in arrays):
        raise NetworkOutputError(
            source,
            f"{name} gives NaN or infinite values: its weights are broken "
            "(too large or corrupt); use another model",
        )
    if isinstance(result, DenoisedFrame):
        constant = False
        first = result.mosaic_dn[:2, :2].ravel()
        what = "one value per photosite colour (DN"
    elif rgb16 is not None:
        constant = _is_constant_pixels(rgb16)
        first = rgb16[0, 0].astype(np.float32) / np.float32(65535.0)
        what = "one colour ("
    else:
        constant, first = _is_constant(result.image), result.image[:, 0, 0]
        what = "one colour ("
    if isinstance(result, DenoisedResult | DenoisedFrame):
        constant = constant or _is_constant_mosaic(result.mosaic_dn)
    if constant:
        levels = ", ".join(f"{float(v):.3g}" for v in first)
        where = "" if source is None else f"{source}: "
        _warn_every_time(
            f"{where}{name} gives {what}{levels}) over the whole "
            "frame: its weights may be broken (or the photo is blank)"
        )


def _all_finite(array: np.ndarray) -> bool:
    """``np.isfinite(array).all()`` of a ``(..., H, W)`` array, over row bands on every core (a
    12-Mpixel mosaic is 48 MB)."""
    if array.ndim < 2:
        return bool(np.isfinite(array).all())
    found = thread_map(
        lambda rows: bool(np.isfinite(array[..., rows, :]).all()),
        bands(array.shape[-2]),
        size=array.size,
    )
    return all(found)


def _is_constant(image: np.ndarray) -> bool:
    """Every channel of a ``(C, H, W)`` image holds one value (frames of one pixel aside)."""
    flat = image.reshape(image.shape[0], -1)
    return flat.shape[1] > 1 and bool((flat.max(axis=1) == flat.min(axis=1)).all())


def _is_constant_pixels(rgb: np.ndarray) -> bool:
    """:func:`_is_constant` of an ``(H, W, C)`` image, read in pixel order: a sparse grid of
    pixels settles nearly every picture, and only one that looks constant there is read whole
    (planes made from a 12-megapixel picture to reduce over took 0.35 s)."""
    if rgb.shape[0] * rgb.shape[1] <= 1:
        return False
    first = rgb[0, 0]
    grid = rgb[:: max(1, rgb.shape[0] // 64), :: max(1, rgb.shape[1] // 64)]
    if (grid != first).any():
        return False
    return not bool((rgb != first).any())


def _is_constant_mosaic(mosaic: np.ndarray) -> bool:
    """Each position of the 2x2 tile holds one value: constant clean planes (black levels may
    differ by position)."""
    tiles = [mosaic[r::2, c::2] for r in (0, 1) for c in (0, 1)]
    # A sparse grid settles nearly every frame; only one constant there is read whole.
    step = (max(1, mosaic.shape[0] // 128), max(1, mosaic.shape[1] // 128))
    if any((t[:: step[0], :: step[1]] != t.flat[0]).any() for t in tiles if t.size):
        return False
    return all(t.size > 1 and t.max() == t.min() for t in tiles)


def _warn_every_time(message: str) -> None:
    # warnings.warn shows a message once per line of code that raises it; every frame needs its
    # own. With no registry, warn_explicit remembers nothing (the filters still apply).
    warnings.warn_explicit(
        message, ConstantOutputWarning, __file__, 0, module=__name__, registry=None
    )
