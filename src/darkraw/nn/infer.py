"""Running the See-in-the-Dark U-Net on whole raw files (Chen et al., CVPR 2018).

SID's test script feeds the whole packed frame to the network at once; a Sony frame then needs
several GiB and small GPUs run out of memory (SID issues #4 and #64). Here the frame is cut into
overlapping tiles: each tile is run on its own, the margin of width ``overlap`` around it is
thrown away and only its centre is kept, so memory is bounded by the tile, not the photo.

An output pixel depends on packed inputs up to 107 pixels away, so the default margin of 112
(:data:`EXACT_OVERLAP`) makes the tiled output equal to one whole-frame pass up to float
rounding (:data:`TILING_TOLERANCE`, 1e-5). A narrower margin does less repeated work and is
approximate: the *effective* receptive field of a trained network is much narrower than the
true one, and with a 64-pixel margin the difference stays near one 8-bit level (see
:func:`run_network`).

On a CPU the tiles go through :class:`darkraw.nn.fused.FusedUNet`, the same network with each
convolution and its LeakyReLU fused into one oneDNN call, in bf16 where the CPU has it natively.

Tile windows start on multiples of 16 packed pixels, so the network's four 2x2 max-pools cut
every tile on the same grid as the whole frame, and the internal padding to a multiple of 16 at
the bottom and right of a tile equals the whole frame's wherever the tile touches that edge.

A *model file* holds only the weights, for distribution: one safetensors file whose tensors are
the ``state_dict`` (fp16 or fp32) and whose string metadata is JSON: ``format``
(``"darkraw-model"``), ``version`` (1), ``config`` (the :class:`~darkraw.nn.model.ModelConfig`),
``card`` (free JSON: training data, metrics, licence), ``dtype`` and ``sha256`` (a digest of every
tensor and the other entries, checked on load). :func:`load_model` also reads the training
checkpoints of :mod:`darkraw.nn.checkpoint`. Neither format ever unpickles anything.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from darkraw import progress
from darkraw.classic.pipeline import (
    GammaCurve,
    auto_ratio,
    gamma_decode,
    orient,
    render_planes,
    rggb_view,
    subtract_black_level,
    uncorrect_planes,
)
from darkraw.errors import CheckpointError, DarkrawError, NetworkOutputError
from darkraw.nn.checkpoint import (
    content_digest,
    load_checkpoint,
    read_safetensors,
    write_sealed,
)
from darkraw.nn.denoiser import DenoiserConfig, RawDenoiser, build_denoiser, is_denoiser_config
from darkraw.nn.fused import FusedUNet, fused_available
from darkraw.nn.inputs import network_input_and_gains
from darkraw.nn.model import PAD_MULTIPLE, ModelConfig, SIDUNet, build_model, to_channels_last
from darkraw.nn.modelfiles import (
    CHECKPOINT_FORMAT,
    MODEL_FORMAT,
    MODEL_VERSION,
    existing_source,
    json_entry,
    model_source,
    read_metadata,
    show,
)
from darkraw.nn.precision import Precision, autocast_dtype
from darkraw.nn.tiling import ENSEMBLE_AUTO_PIXELS as ENSEMBLE_AUTO_PIXELS
from darkraw.nn.tiling import tile_spans as tile_spans
from darkraw.nn.tiling import windows
from darkraw.raw.cfa import BayerPattern, pack_bayer, pad_to_multiple, unpack_bayer
from darkraw.raw.metadata import RawMetadata

#: How far the network looks: an output pixel depends on packed inputs up to 107 pixels away
#: (measured by back-propagating from single output pixels), rounded up to the pooling grid. A
#: margin this wide makes tiled output equal to whole-frame output up to float rounding.
EXACT_OVERLAP = 112

#: Largest difference (sRGB, output range [0, 1]) between tiled output with the default margin
#: (:data:`EXACT_OVERLAP`) and whole-frame output, for any weights: measured at most 5.2e-6 on
#: 300x400 packed inputs (random-init widths 4 and 32, and width 32 after 500 and 1000 steps).
TILING_TOLERANCE = 1e-5

#: Sizes of the self-ensemble (:attr:`InferenceOptions.ensemble`).
ENSEMBLE_SIZES = (1, 2, 4, 8)

#: The ensemble's copies as (vertical flip, horizontal flip, transpose), in the order they are
#: added: the first ``n`` make an ensemble of ``n``.
_ENSEMBLE_TRANSFORMS = tuple(itertools.product((False, True), repeat=3))

#: A network darkraw can load: SID's U-Net (the seed's) or the raw denoiser.
Network = SIDUNet | RawDenoiser

_MODEL_METADATA_KEYS = ("format", "version", "config", "card", "dtype", "sha256")
_STORAGE_DTYPES = {"float16": torch.float16, "float32": torch.float32}

#: The file each network :func:`load_model` built came from, for messages that name the model.
_LOADED_FROM: weakref.WeakKeyDictionary[torch.nn.Module, Path] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class InferenceOptions:
    """How :func:`run_network` runs the network.

    Attributes:
        tile: side of a tile window in packed pixels (the output is ``s`` times that), a multiple
            of 16; 0 runs the whole frame at once (memory grows with the photo). 1024 with the
            exact margin cuts a Sony frame into 2x3 tiles; measured on a 2-core Zen 5 in bf16:
            as fast as a whole-frame pass (3.6 vs 3.8 s) in less memory (1.13 vs 1.44 GiB),
            although the margins repeat 40 % of the work (see ``docs/inference.md``).
        overlap: margin in packed pixels cut from each side of a tile where it meets another
            tile, a multiple of 16; ``tile >= 2 * overlap + 16`` when tiling. The default,
            :data:`EXACT_OVERLAP`, covers the receptive field; 64 does ~13 % less work on a Sony
            frame and differs from whole-frame output by up to ~3e-3 (trained network).
        precision: ``auto`` (bf16 only where the hardware has it natively), ``bf16`` (always;
            emulated, hence slower, on CPUs without AVX-512 BF16 or AMX) or ``fp32``. On a CPU
            the network's output layers run in fp32 either way (:mod:`darkraw.nn.fused`).
        channels_last: NHWC memory format, faster on CPU.
        threads: CPU threads for torch during the run; 0 keeps torch's setting.
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
        ensemble: how many flipped and transposed copies of the input to run and average
            (1, 2, 4 or 8; SID's training augmentations, undone on each output), or ``"auto"``:
            as many as fit in the work of one 12-Mpixel frame (:func:`ensemble_copies`). Each
            copy costs a full pass; 8 took 0.3-0.4 dB more PSNR and 0.01 more SSIM out of the
            darkened Kodak, Halide and vivo frames (``docs/inference.md``).
    """

    tile: int = 1024
    overlap: int = EXACT_OVERLAP
    precision: Precision = Precision.AUTO
    channels_last: bool = True
    threads: int = 0
    device: str = "auto"
    ensemble: int | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision(self.precision))
        if self.precision is Precision.INT8:
            raise ValueError(
                "precision int8 is for the raw denoiser; the SID network runs fp32/bf16"
            )
        for name in ("tile", "overlap", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.tile % PAD_MULTIPLE or self.overlap % PAD_MULTIPLE:
            raise ValueError(
                f"tile and overlap must be multiples of {PAD_MULTIPLE}, "
                f"got tile={self.tile} overlap={self.overlap}"
            )
        if self.tile and self.tile < 2 * self.overlap + PAD_MULTIPLE:
            raise ValueError(
                f"tile {self.tile} leaves no centre after cutting overlap {self.overlap} from "
                f"both sides; use tile >= {2 * self.overlap + PAD_MULTIPLE}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.ensemble != "auto" and (
            isinstance(self.ensemble, bool) or self.ensemble not in ENSEMBLE_SIZES
        ):
            raise ValueError(
                f"ensemble must be one of {ENSEMBLE_SIZES} or 'auto', got {self.ensemble!r}"
            )


def ensemble_copies(ensemble: int | Literal["auto"], pixels: int) -> int:
    """How many copies an ensemble setting runs for an output of ``pixels`` pixels.

    ``"auto"`` takes the largest of 8, 4, 2 and 1 whose copies together stay within
    :data:`~darkraw.nn.tiling.ENSEMBLE_AUTO_PIXELS` (at least 1), so that a small photo gets
    the ensemble's cleaner flat areas for about the time one full-size frame takes without it.
    """
    if isinstance(ensemble, int):
        return ensemble
    return next((n for n in ENSEMBLE_SIZES[::-1] if n * pixels <= ENSEMBLE_AUTO_PIXELS), 1)


@dataclass(frozen=True)
class NetworkResult:
    """What :func:`enhance_raw_network` returns.

    Attributes:
        image: ``(3, H', W')`` float32 sRGB in [0, 1] at the mosaic's full size, oriented as the
            camera recorded (``H'``, ``W'`` swap for portrait orientations).
        ratio: the amplification used (chosen by
            :func:`~darkraw.classic.pipeline.auto_ratio` if none was given).
    """

    image: np.ndarray
    ratio: float


# --- model files -------------------------------------------------------------------------------


def average_weights(models: Sequence[Network]) -> Network:
    """A new network whose every weight is the mean of ``models``' (same config).

    SGD at batch 1 leaves the weights wandering between checkpoints of one run; their mean scores
    about as well as the best of them without choosing one (``docs/training.md``, phase 13).

    Raises:
        ValueError: no models, or models of different configs.
    """
    if not models:
        raise ValueError("no models to average")
    config = models[0].config
    if any(m.config != config for m in models):
        raise ValueError("the models to average have different configs")
    states = [m.state_dict() for m in models]
    mean = _build(config)
    mean.load_state_dict(
        {name: torch.stack([s[name].float() for s in states]).mean(0) for name in states[0]}
    )
    return mean


def save_model_file(
    path: str | Path,
    model: Network,
    *,
    dtype: torch.dtype = torch.float16,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and config as a model file, atomically.

    Args:
        path: the ``.safetensors`` file to write; its folder must exist.
        model: the network; its weights are copied to the CPU.
        dtype: storage type, ``torch.float16`` (half the size; loads back as fp32 and predicts
            within about 1e-3 of the fp32 weights) or ``torch.float32``.
        card: free JSON describing the model (training data, metrics, licence).

    Raises:
        ValueError: another dtype, a card that is not JSON, or a weight fp16 cannot hold.
        OutputError: the file cannot be written.
    """
    path = Path(path)
    names = {v: k for k, v in _STORAGE_DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"dtype must be torch.float16 or torch.float32, got {dtype}")
    card_json = json.dumps(dict(card or {}), sort_keys=True)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        # A private contiguous copy: safetensors refuses channels_last or shared storage.
        stored = torch.empty(value.shape, dtype=dtype)
        stored.copy_(value.detach())
        if not torch.isfinite(stored).all():
            raise ValueError(f"weight {key!r} is not finite once stored as {names[dtype]}")
        tensors[key] = stored
    metadata = {
        "format": json.dumps(MODEL_FORMAT),
        "version": json.dumps(MODEL_VERSION),
        "config": json.dumps(model.config.to_dict()),
        "card": card_json,
        "dtype": json.dumps(names[dtype]),
    }
    write_sealed(path, tensors, metadata, "model file")
    return path


def load_model(path: str | Path) -> Network:
    """The network stored in a model file or a training checkpoint, fp32, on the CPU, in eval
    mode and without gradients.

    Raises:
        CheckpointError: (one line naming the file) it is missing, not safetensors (a pickle is
            refused before any of it is interpreted), truncated, of another format or version,
            fails its sha256 check, or holds weights that do not fit its config or are not
            finite.
    """
    path = Path(path)
    metadata = read_metadata(path)
    fmt = json_entry(path, metadata, "format")
    if fmt == CHECKPOINT_FORMAT:
        ckpt = load_checkpoint(path)
        section = ckpt.config.get("model", {})
        if ckpt.config.get("task") == "denoise" and isinstance(section, dict):
            # A denoiser run's config names its network without the model file's ``arch``.
            section = {**section, "arch": "raw_denoiser"}
        config = _model_config(path, section)
        state = ckpt.model_state
    elif fmt == MODEL_FORMAT:
        config, state = _read_model_file(path, metadata)
    else:
        raise CheckpointError(
            path,
            f"not a darkraw model file or checkpoint (format {show(fmt)} in its metadata)",
        )
    model = _build(config)
    _check_state(path, model, state)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    model.eval()
    model.requires_grad_(False)
    _LOADED_FROM[model] = path
    return model


def model_file(network: Network) -> Path | None:
    """The file :func:`load_model` read ``network`` from; ``None`` for a network built otherwise."""
    return _LOADED_FROM.get(network)


def describe_network(network: Network) -> str:
    """How messages name a network: ``model PATH`` for one loaded from a file, else its kind."""
    path = model_file(network)
    if path is not None:
        return f"model {path}"
    return "the given raw denoiser" if isinstance(network, RawDenoiser) else "the given SID network"


def resolve_model(spec: str | Path | Network) -> Network:
    """A network from a bundled model's name (``"default"``, ``"sid"``, ``"small"``), a file
    path, or a network as is.

    Raises:
        CheckpointError: the file cannot be loaded, or the named model is not bundled.
    """
    if isinstance(spec, SIDUNet | RawDenoiser):
        return spec
    return load_model(existing_source(spec))


def _build(config: ModelConfig | DenoiserConfig) -> Network:
    if isinstance(config, DenoiserConfig):
        return build_denoiser(config)
    return build_model(config)


def sid_network(spec: str | Path | Network) -> SIDUNet:
    """:func:`resolve_model`, for the commands that run the seed's SID U-Net only (training
    from it, evaluation, ONNX export).

    Raises:
        CheckpointError: the spec holds the raw denoiser, or cannot be loaded.
    """
    network = resolve_model(spec)
    if not isinstance(network, SIDUNet):
        where = None if isinstance(spec, RawDenoiser | SIDUNet) else model_source(spec)
        raise CheckpointError(where, "holds the raw denoiser; this needs a SID network (sid)")
    return network


def _model_config(path: Path, section: object) -> ModelConfig | DenoiserConfig:
    if not isinstance(section, dict):
        raise CheckpointError(path, f"model config is not a JSON object: {section!r}")
    try:
        if is_denoiser_config(section):
            return DenoiserConfig.from_dict(section)
        return ModelConfig.from_dict(section)
    except (ValueError, TypeError) as err:
        raise CheckpointError(path, f"bad model config: {err}") from None


def _read_model_file(
    path: Path, metadata: Mapping[str, str]
) -> tuple[ModelConfig | DenoiserConfig, dict[str, torch.Tensor]]:
    values = {key: json_entry(path, metadata, key) for key in _MODEL_METADATA_KEYS}
    if values["version"] != MODEL_VERSION:
        raise CheckpointError(
            path, f"model file version {show(values['version'])} is not supported (reads 1)"
        )
    # Any JSON may stand here: a list or an object is no dtype (and cannot be looked up).
    if not isinstance(values["dtype"], str) or values["dtype"] not in _STORAGE_DTYPES:
        raise CheckpointError(
            path,
            f"unknown storage dtype {show(values['dtype'])} (expected one of "
            f"{', '.join(_STORAGE_DTYPES)})",
        )
    config = _model_config(path, values["config"])
    state, _ = read_safetensors(path, "model file")
    if values["sha256"] != content_digest(state, metadata):
        raise CheckpointError(path, "sha256 mismatch: the model file is corrupt")
    return config, state


def _check_state(path: Path, model: Network, state: Mapping[str, torch.Tensor]) -> None:
    """One-line errors instead of torch's multi-line ``load_state_dict`` report."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            path,
            f"weights do not fit the model config {model.config.to_dict()}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}",
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                path,
                f"weight {key!r} has shape {tuple(state[key].shape)}, the config "
                f"{model.config.to_dict()} needs {tuple(tensor.shape)}",
            )
        if not state[key].is_floating_point() or not torch.isfinite(state[key]).all():
            # NaN weights give an all-black image that looks like a pipeline bug (SID #73).
            raise CheckpointError(path, f"weight {key!r} is not finite")


# --- tiled inference ---------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if present), ``cpu`` or ``cuda`` as a torch device."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DarkrawError(None, "device cuda asked for, but no GPU is visible")
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's CPU threads set to ``count`` for the block (0 keeps torch's setting)."""
    if not count:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_network(
    model: SIDUNet, planes: np.ndarray, options: InferenceOptions = InferenceOptions()
) -> np.ndarray:
    """Run the network over packed raw planes, tile by tile.

    Args:
        model: the network; it is moved to the device (and to channels-last memory if asked)
            in place and put in eval mode.
        planes: ``(C, h, w)`` packed raw in [0, 1], ``C = model.config.in_channels``, any
            ``h, w >= 1`` (odd, smaller than a tile, not multiples of 16).
        options: tile size, margin, precision, memory format, threads, device, self-ensemble.

    Returns:
        ``(3, s*h, s*w)`` float32 sRGB clamped to [0, 1], ``s = model.config.upscale``; for a
        raw-output network ``(C, h, w)`` denoised planes clamped to [0, 1].

    Tiling: windows of ``tile`` packed pixels overlap by ``2 * overlap``; each keeps only its
    centre, ``overlap`` pixels away from any window edge that is not the image's edge. Measured
    max |tiled - whole frame| on 300x400 packed inputs (``benchmarks/inference_speed.py
    --tolerance``): with the default margin (112) at most 5.2e-6 for any weights (stated
    tolerance :data:`TILING_TOLERANCE` = 1e-5); with 64, 2.3e-3 to 3.2e-3 for a trained width-32
    network and up to 0.093 for random init; with 32, 1.2e-2 trained and 0.6 random.
    ``tile=0`` or an image within one tile gives the whole-frame result exactly.

    Raises:
        NetworkOutputError: the network gives NaN or infinite values (broken weights), naming
            the model; nothing is returned.
    """
    c = model.config.in_channels
    planes = np.asarray(planes)
    if planes.ndim != 3 or planes.shape[0] != c or min(planes.shape[1:]) < 1:
        raise ValueError(f"expected packed raw planes of shape ({c}, h, w), got {planes.shape}")
    if not np.issubdtype(planes.dtype, np.floating):
        raise TypeError(f"expected floating-point planes, got {planes.dtype}")
    planes = np.asarray(planes, dtype=np.float32)
    device = resolve_device(options.device)
    amp = autocast_dtype(options.precision, device)
    model.eval()
    model.to(device)
    if options.channels_last:
        to_channels_last(model)
    net: Callable[[torch.Tensor], torch.Tensor] = model
    autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if fused_available(device, amp or torch.float32):
        net = FusedUNet(model, amp or torch.float32, options.channels_last)
    elif amp:
        autocast = torch.autocast(device.type, dtype=amp)
    net = finite_only(net, model)
    s, out_planes = model.config.upscale, model.config.out_planes
    copies = ensemble_copies(options.ensemble, s * s * planes.shape[1] * planes.shape[2])
    with torch_threads(options.threads), torch.inference_mode(), autocast:
        if copies == 1:
            return _run_tiles(net, planes, s, out_planes, device, options)
        if model.config.output == "srgb" and c == 4:
            return _bayer_ensemble(net, planes, copies, device, options)
        total = np.zeros((out_planes, s * planes.shape[1], s * planes.shape[2]), dtype=np.float32)
        for n, (flip_v, flip_h, transpose) in enumerate(_ENSEMBLE_TRANSFORMS[:copies], 1):
            copy = planes[:, ::-1] if flip_v else planes
            copy = copy[:, :, ::-1] if flip_h else copy
            copy = copy.transpose(0, 2, 1) if transpose else copy
            with progress.part(f"pass {n}/{copies}"):
                out = _run_tiles(net, copy, s, out_planes, device, options)
            out = out.transpose(0, 2, 1) if transpose else out
            out = out[:, :, ::-1] if flip_h else out
            total += out[:, ::-1] if flip_v else out
        return total / np.float32(copies)


def finite_only(
    net: Callable[[torch.Tensor], torch.Tensor], model: Network
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net``, checked: an output with NaN or infinity is an error, not a picture.

    Extreme weights (1e30, or 3e38 that overflows) give infinities, and infinities NaN; clamped
    to [0, 1] they became an all-white or all-black image that looked like a result.
    """

    def checked(x: torch.Tensor) -> torch.Tensor:
        y = net(x)
        if not bool(torch.isfinite(y).all()):
            raise NetworkOutputError(
                None,
                f"{describe_network(model)} gives NaN or infinite values: its weights are "
                "broken (too large or corrupt); use another model",
            )
        return y

    return checked


def _bayer_ensemble(
    net: Callable[[torch.Tensor], torch.Tensor],
    planes: np.ndarray,
    copies: int,
    device: torch.device,
    options: InferenceOptions,
) -> np.ndarray:
    """The self-ensemble of an sRGB network on RGGB planes, each copy a view of the mosaic that
    is RGGB again, so that the network renders every sample at its own sub-pixel.

    Mirroring packed planes would move each colour's sample within its 2x2 tile of the
    picture. Here a copy mirrors the mosaic itself and drops its first row (column): the
    layout is RGGB again, shifted by one pixel, and the last row (column) of the picture, which
    that copy does not see, comes from the others. A transposed RGGB mosaic is RGGB.
    """
    _, h, w = planes.shape
    mosaic = unpack_bayer(planes, BayerPattern.RGGB)
    total = np.zeros((3, 2 * h, 2 * w), dtype=np.float32)
    count = np.zeros((1, 2 * h, 2 * w), dtype=np.float32)
    for n, (flip_v, flip_h, transpose) in enumerate(_ENSEMBLE_TRANSFORMS[:copies], 1):
        copy = mosaic.T if transpose else mosaic
        # Mirrored and shifted by one pixel: pixel i of the copy is pixel n - 2 - i of the
        # original; the copy's last row (column) only pads it to whole tiles.
        copy = copy[-2::-1] if flip_v else copy
        copy = copy[:, -2::-1] if flip_h else copy
        copy, _ = pad_to_multiple(np.ascontiguousarray(copy), 2)
        with progress.part(f"pass {n}/{copies}"):
            out = _run_tiles(net, pack_bayer(copy, BayerPattern.RGGB), 2, 3, device, options)
        seen = np.ones((1, *out.shape[1:]), dtype=np.float32)
        if flip_h:
            out[:, :, :-1], out[:, :, -1] = out[:, :, -2::-1].copy(), 0.0
            seen[:, :, -1] = 0.0
        if flip_v:
            out[:, :-1], out[:, -1] = out[:, -2::-1].copy(), 0.0
            seen[:, -1] = 0.0
        total += out.transpose(0, 2, 1) if transpose else out
        count += seen.transpose(0, 2, 1) if transpose else seen
    return total / count


def _run_tiles(
    net: Callable[[torch.Tensor], torch.Tensor],
    planes: np.ndarray,
    s: int,
    out_planes: int,
    device: torch.device,
    options: InferenceOptions,
) -> np.ndarray:
    """One tiled pass of ``net`` over ``(C, h, w)`` planes: ``(P, s*h, s*w)`` in [0, 1]."""
    _, h, w = planes.shape
    out = np.empty((out_planes, s * h, s * w), dtype=np.float32)
    rows = tile_spans(h, options.tile, options.overlap, PAD_MULTIPLE)
    cols = tile_spans(w, options.tile, options.overlap, PAD_MULTIPLE)
    for (y0, y1, ky0, ky1), (x0, x1, kx0, kx1) in windows(rows, cols):
        x = torch.from_numpy(np.ascontiguousarray(planes[:, y0:y1, x0:x1]))[None]
        x = x.to(device)
        if options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = net(x)[0]
        keep = y[:, s * (ky0 - y0) : s * (ky1 - y0), s * (kx0 - x0) : s * (kx1 - x0)]
        block = keep.float().clamp_(0.0, 1.0).cpu().numpy()
        out[:, s * ky0 : s * ky1, s * kx0 : s * kx1] = block
    return out


# --- raw files ---------------------------------------------------------------------------------

#: Tone curve of a raw-output network's rendering: the one the sRGB networks learn to draw.
RAW_OUTPUT_GAMMA = GammaCurve.SRGB


def enhance_raw_network(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    model: SIDUNet,
    ratio: float | None = None,
    options: InferenceOptions = InferenceOptions(),
) -> NetworkResult:
    """Render a dark raw mosaic with the network.

    The input is exactly the training input (:func:`darkraw.nn.inputs.network_input`: black
    subtracted, packed, times ``ratio``, clipped to [0, 1]).

    Args:
        mosaic_dn: ``(H, W)`` in DN.
        meta: its metadata; a Bayer mosaic needs a 4-plane model, X-Trans a 9-plane one.
        model: the network.
        ratio: amplification (exposure ratio); ``None`` chooses one with
            :func:`~darkraw.classic.pipeline.auto_ratio`, as the classic pipeline does.
        options: how the network runs.

    Returns:
        :class:`NetworkResult` with the ``(3, H, W)`` image (oriented) and the ratio used.

    Raises:
        ValueError: the CFA does not fit the model, or a bad ratio or mosaic shape.
    """
    want = 9 if meta.is_xtrans else 4
    if model.config.in_channels != want:
        kinds = {4: "Bayer", 9: "X-Trans"}
        raise ValueError(
            f"the model takes {kinds[model.config.in_channels]} raw "
            f"({model.config.in_channels} packed planes) but this file is {kinds[want]}; "
            f"use a model for {kinds[want]} raw or the classic pipeline"
        )
    if ratio is None:
        ratio = auto_ratio(subtract_black_level(mosaic_dn, meta))
    elif not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"ratio must be a positive number, got {ratio}")
    # The network sees every Bayer file as RGGB, as it was trained, so that it knows where in
    # each 2x2 tile each colour's sample sits; its picture is mirrored back afterwards.
    view = rggb_view(mosaic_dn, meta)
    planes, gains = network_input_and_gains(view.mosaic, view.meta, float(ratio))
    out = run_network(model, planes, options)
    if model.config.output == "raw":
        # The network denoised planes already balanced and colour-corrected (as its input is),
        # and gave them through the sRGB curve; back in linear camera raw, the classic pipeline
        # renders them as it renders the file.
        linear = gamma_decode(out, GammaCurve.SRGB)
        matrix = None if meta.rgb_cam is None else np.asarray(meta.rgb_cam)
        clean = uncorrect_planes(linear, matrix, gains)
        image = render_planes(clean, view.meta, gains, RAW_OUTPUT_GAMMA)
    else:
        image = out
    image = orient(view.undo(image), meta.flip)
    return NetworkResult(image=image, ratio=float(ratio))
