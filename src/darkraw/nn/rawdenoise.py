"""Enhancing a raw file with the raw denoiser: denoise in the camera's raw space, then render
with the file's own pipeline.

The steps, as ELD (Wei et al., CVPR 2020) and PMN (MM 2022) do it and darktable's and DxO's
denoisers hand it to the photographer:

1. the mosaic is seen as RGGB (:func:`~darkraw.classic.pipeline.rggb_view`), black subtracted,
   scaled, packed and amplified by the exposure ratio (:func:`~darkraw.nn.inputs.denoiser_planes`);
2. its noise level comes from the camera's profile or from the frame itself
   (:func:`~darkraw.synth.noiselevel.noise_for_frame`), amplified by the ratio and scaled by the
   user's ``strength``, and becomes a per-pixel noise map (:func:`~darkraw.nn.inputs.noise_map`);
3. the network gives clean planes in the same space, tile by tile with margins wide enough that
   tiles join exactly;
4. the clean planes are rendered: by darkraw's classic pipeline (the file's white balance,
   demosaicing, its colour matrix, the tone curve) or by LibRaw from the clean mosaic put back in
   the file (:func:`~darkraw.raw.rawio.render_mosaic_with_libraw`).

Colours and tone therefore are the camera's and the renderer's; the network only removes noise.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from darkraw import progress
from darkraw.choices import parse_choice
from darkraw.classic.pipeline import (
    GammaCurve,
    WhiteBalance,
    auto_ratio,
    choose_gains,
    orient,
    pack,
    render_planes,
    rggb_view,
    sampled_raw_lin,
    unpack,
)
from darkraw.errors import NetworkOutputError
from darkraw.nn.blackoffset import BlackOffsetModel, bundled_black_offset_model
from darkraw.nn.denoiser_config import receptive_radius
from darkraw.nn.inputs import (
    FrameInput,
    amplify,
    denoiser_input,
    denoiser_planes,
    noise_entries,
)
from darkraw.nn.precision import Precision
from darkraw.nn.runtime import OnnxDenoiser, add_correction
from darkraw.nn.tiling import ENSEMBLE_AUTO_PIXELS, Span, tile_grid, windows
from darkraw.parallel import bands, thread_map
from darkraw.raw.cfa import (
    BayerPattern,
    cfa_canvas,
    pack_bayer,
    transpose_bayer_planes,
    unpack_bayer,
    xtrans_phase,
)
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import (
    LIBRAW_BT709_GAMMA,
    Demosaic,
    libraw_renders,
    planar_float,
    render_mosaic_with_libraw,
)
from darkraw.synth.noiselevel import (
    BlackOffsetRange,
    NoiseDatabase,
    RawNoise,
    black_offset_range,
    estimate_black_offset,
    learnt_offset_range,
    noise_for_frame,
)

if TYPE_CHECKING:
    from darkraw.nn.denoiser import RawDenoiser


class BlackOffset(enum.Enum):
    """How the frame's black-level offset is found before amplifying (``docs/model-card.md``,
    "Black offset")."""

    #: Read from the frame by a small learnt model (:mod:`darkraw.nn.blackoffset`), within the
    #: camera's range (:func:`~darkraw.synth.noiselevel.learnt_offset_range`).
    LEARNT = "learnt"
    #: The frame's darkest level, within the camera's range
    #: (:func:`~darkraw.synth.noiselevel.estimate_black_offset`).
    DARKEST = "darkest"
    #: None: the file's black level is trusted as it is.
    NONE = "none"

    @classmethod
    def parse(cls, value: BlackOffset | str | bool) -> BlackOffset:
        """A member from its name; ``True`` is the default (:attr:`LEARNT`), ``False``
        :attr:`NONE`."""
        if isinstance(value, bool):
            return cls.LEARNT if value else cls.NONE
        return parse_choice(cls, value, "black offset")


class Renderer(enum.Enum):
    """Who renders the clean planes into a picture."""

    #: darkraw's classic pipeline: white balance, Malvar-He-Cutler demosaic, colour matrix, curve.
    DARKRAW = "darkraw"
    #: LibRaw (what dcraw-like tools show for the file), from the clean mosaic.
    LIBRAW = "libraw"

    @classmethod
    def parse(cls, value: Renderer | str) -> Renderer:
        return parse_choice(cls, value, "renderer")


#: Largest strength. The bundled network (phase 5, ``docs/model-card.md``) was trained, as phase
#: 4's, told its noise's standard deviation times 1-2.5 for half of its pairs, the target still
#: the clean frame, so told more it smooths more without the artefacts phase 3's weights made:
#: on flat frames at 1-3.2 electrons a sample (x100) strength 2 leaves 0.04-0.07 of the input's
#: noise, as strength 1 does (phase 4's weights at 2: 0.09-0.19; phase 3's: 0.28-0.68, with
#: bright lines), at 16 electrons less than strength 1 (0.09 against 0.13).
MAX_STRENGTH = 2.0

#: The colour filter array of a raw denoiser with this many packed planes, for messages.
LAYOUTS = {4: "Bayer", 9: "X-Trans"}

#: Smallest packed side whose noise :func:`~darkraw.synth.noiselevel.estimate_raw_noise` measures.
MIN_ESTIMATE_SIDE = 8

#: Passes of the raw denoiser's self-ensemble (:attr:`DenoiseOptions.ensemble`): the frame
#: alone, or averaged with it mirrored and turned 1, 3 or 7 ways (:data:`BAYER_PASSES`,
#: :data:`XTRANS_PASSES`), each moved frame made one the network was trained on.
ENSEMBLE_PASSES = (1, 2, 4, 8)


def ensemble_passes(ensemble: int | Literal["auto"], pixels: int) -> int:
    """How many passes an ensemble setting runs for a mosaic of ``pixels`` pixels: ``auto``
    runs as many of 8, 4, 2 as stay within :data:`~darkraw.nn.tiling.ENSEMBLE_AUTO_PIXELS`
    (the work of one pass over a 12-Mpixel frame): 8 up to 1.56 Mpixel, 4 up to 3.125, 2 up to
    6.25, and 1 on larger frames, as camera frames are.

    Measured (``benchmarks/ensemble_passes.py``, torch fp32, LibRaw's rendering, the acceptance
    benchmark's three small raw files and six photos; ``benchmarks/results/ensemble_passes.json``),
    Bayer, 2 / 4 / 8 passes against 1: Sony x100 +0.05 / +0.09 / +0.10 dB, x300 +0.10 / +0.25 /
    +0.27, Nikon +0.05 / +0.09 / +0.11, Poisson-Gaussian x100 +0.17 / +0.30 / +0.35, x4 +0.11 /
    +0.20 / +0.22, SSIM higher and the colour error lower at each step.
    """
    if isinstance(ensemble, int):
        return ensemble
    for passes in (8, 4, 2):
        if passes * pixels <= ENSEMBLE_AUTO_PIXELS:
            return passes
    return 1


#: LibRaw's ``gamma=(power, toe slope)`` for each of darkraw's curves.
LIBRAW_CURVES = {GammaCurve.BT709: LIBRAW_BT709_GAMMA, GammaCurve.SRGB: (2.4, 12.92)}


@dataclass(frozen=True)
class DenoiseOptions:
    """How :func:`enhance_with_denoiser` runs.

    Attributes:
        strength: scales the noise level the network is told (its standard deviation), 0 to
            :data:`MAX_STRENGTH` (2): 0 leaves the frame as it is (the network is not run), 1
            is the measured level, above 1 smooths more; below 1 the noise left rises steadily
            (on flat frames, 0.5 leaves 1.7-8 times what 1 leaves), keeping more grain and
            detail.
        renderer: ``libraw`` (the default: it measured closer to the clean frames than
            darkraw's own rendering, ``docs/model-card.md``) or ``darkraw``; frames smaller
            than LibRaw renders (22 pixels a side, 512 for X-Trans) are rendered by darkraw.
        gamma: tone curve of the picture (both renderers draw it): BT.709 by default, LibRaw's
            and the classic pipeline's, so the three render alike.
        tile: a window holds at most ``tile * tile`` packed pixels, a multiple of 8 (0: the
            whole frame); :func:`~darkraw.nn.tiling.tile_grid` picks the windows' shape. 1280
            cuts a 12-Mpixel frame into 1x2 windows of 1424x1128, which run 6 % more pixels
            than the frame has, where 1024 cut 2x2 windows of 776x1128 that ran 16 % more (a
            window's time per pixel is the same for both): the command 1.97 against 2.01 s
            (medians of 8 alternating runs), its peak RSS 0.71-0.88 against 0.62-0.69 GB
            (``docs/speed-log.md``). 512 was 1.2-1.5x slower than 1024 in ONNX Runtime.
        overlap: margin cut from each tile where it meets another, a multiple of 8; ``None``
            (the default) takes the network's reach
            (:func:`~darkraw.nn.denoiser.receptive_radius`) rounded up to its pooling grid, so
            tiles join exactly.
        precision: for a torch network, ``auto`` (bf16 where the CPU runs it fast), ``bf16`` or
            ``fp32``; ONNX Runtime runs the file it was given (the bundled model's is chosen
            when it is loaded: ``auto`` takes its int8 version on a CPU with an 8-bit dot
            product, :func:`darkraw.nn.enhance.load_network`).
        threads: CPU threads for torch during the run; 0 keeps torch's setting (ONNX Runtime's
            are set when its model is loaded, :func:`~darkraw.nn.runtime.load_onnx_denoiser`).
        black_offset: how each plane's black-level offset is found and subtracted before
            amplifying (:class:`BlackOffset`): ``learnt`` (the default), ``darkest`` (the frame's
            darkest level) or ``none`` (the file's black level is trusted as it is); ``True`` and
            ``False`` stand for ``learnt`` and ``none``.
        ensemble: 1 runs the network once; 2, 4 or 8 also run it on the frame mirrored and
            turned, and average the passes (:func:`_ensemble_mean`; each pass the network's
            time again; 0.10-0.35 dB more with 8 on Bayer frames); ``auto`` runs as many as fit
            in the work of one 12-Mpixel frame: 8 up to 1.56 Mpixel, 4 up to 3.125, 2 up to
            6.25 and 1 on larger frames (:func:`ensemble_passes`).
        demosaic: LibRaw's demosaicking when it renders (:class:`~darkraw.raw.rawio.Demosaic`):
            ``auto`` (AHD on Bayer mosaics, Markesteijn's single pass on X-Trans ones, as
            darktable chooses there), ``best`` (AHD; Markesteijn's 3 passes, 2.5 s more of a
            24-Mpixel X-Trans frame) or ``fast`` (PPG; a single pass).
    """

    strength: float = 1.0
    renderer: Renderer = Renderer.LIBRAW
    gamma: GammaCurve = GammaCurve.BT709
    tile: int = 1280
    overlap: int | None = None
    precision: Precision = Precision.AUTO
    threads: int = 0
    black_offset: BlackOffset | str | bool = BlackOffset.LEARNT
    ensemble: int | Literal["auto"] = "auto"
    demosaic: Demosaic = Demosaic.AUTO

    def __post_init__(self) -> None:
        if self.ensemble != "auto" and (
            isinstance(self.ensemble, bool) or self.ensemble not in ENSEMBLE_PASSES
        ):
            raise ValueError(
                f"the raw denoiser's ensemble is 1, 2, 4, 8 or 'auto', got {self.ensemble!r}"
            )
        object.__setattr__(self, "renderer", Renderer.parse(self.renderer))
        object.__setattr__(self, "black_offset", BlackOffset.parse(self.black_offset))
        object.__setattr__(self, "demosaic", Demosaic.parse(self.demosaic))
        object.__setattr__(self, "gamma", GammaCurve.parse(self.gamma))
        object.__setattr__(self, "precision", Precision(self.precision))
        if not (0 <= self.strength <= MAX_STRENGTH):
            raise ValueError(f"strength must be from 0 to {MAX_STRENGTH:g}, got {self.strength!r}")
        for name in ("tile", "overlap", "threads"):
            value = getattr(self, name)
            if name == "overlap" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.tile % 8 or (self.overlap or 0) % 8:
            raise ValueError(
                f"tile and overlap must be multiples of 8, got {self.tile}, {self.overlap}"
            )
        if self.tile and self.overlap is not None and self.tile < 2 * self.overlap + 8:
            raise ValueError(
                f"tile {self.tile} leaves no centre after cutting overlap {self.overlap} from "
                f"both sides; use tile >= {2 * self.overlap + 8}"
            )


#: What the second pass of each layout's ensemble runs on, for people.
BAYER_SECOND_PASS = "its transpose"
XTRANS_SECOND_PASS = "it turned half round"


@dataclass(frozen=True)
class DenoisedResult:
    """What :func:`enhance_with_denoiser` returns.

    Attributes:
        rendered: the picture as it was rendered: LibRaw's ``(H', W', 3)`` uint16 pixels, or
            darkraw's ``(3, H', W')`` float32 planes; :attr:`image` is it as planes either way.
        ratio: the amplification used.
        noise: the frame's noise level, amplified by the ratio (before the strength).
        strength: the strength it was denoised with (the network was told ``noise`` scaled
            by it).
        mosaic_dn: the clean, amplified mosaic in the file's DN and layout (black level
            included, clipped to the white level): what a DNG writer would store.
        black_offset: the black-level offset subtracted from each plane (R, G1, B, G2) before
            amplifying, in the file's DN (zeros when not measured).
        passes: how many times the network ran over the frame: 1, or 2, 4 or 8 for an
            ensemble of the frame mirrored and turned (:attr:`DenoiseOptions.ensemble`), 0 at
            strength 0.
        passes_note: what the passes ran on, for people (:func:`ensemble_note`), e.g. ``the
            frame and its transpose``.
    """

    rendered: np.ndarray
    ratio: float
    noise: RawNoise
    strength: float
    mosaic_dn: np.ndarray
    black_offset: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    passes: int = 1
    passes_note: str = "the frame"

    @functools.cached_property
    def image(self) -> np.ndarray:
        """``(3, H', W')`` float32 sRGB in [0, 1], oriented as the camera recorded (made from
        LibRaw's pixels on first use: a writer of 8 or 16 bits takes :attr:`rgb16` instead)."""
        if self.rendered.dtype == np.uint16:
            return planar_float(self.rendered)
        return self.rendered

    @property
    def rgb16(self) -> np.ndarray | None:
        """LibRaw's ``(H', W', 3)`` uint16 pixels, where LibRaw rendered; ``None`` otherwise."""
        return self.rendered if self.rendered.dtype == np.uint16 else None


def run_denoiser(
    model: RawDenoiser | OnnxDenoiser,
    x: np.ndarray | FrameInput,
    options: DenoiseOptions = DenoiseOptions(),
) -> np.ndarray:
    """Run the network over ``(C, h, w)`` input planes (:func:`denoiser_input`), or an input
    made window by window (:class:`~darkraw.nn.inputs.FrameInput`), tile by tile.

    Returns:
        ``(P, h, w)`` float32 clean planes (not clamped), a new array the caller owns.

    Raises:
        NetworkOutputError: the network gives NaN or infinite values (broken weights).
    """
    c, p = model.config.in_channels, model.config.planes
    if len(x.shape) != 3 or x.shape[0] != c:
        raise ValueError(f"expected input of shape ({c}, h, w), got {x.shape}")
    _, h, w = x.shape
    out = np.empty((p, h, w), dtype=np.float32)
    rows, cols = _windows(model, h, w, options)
    if isinstance(model, OnnxDenoiser):
        # Tiles give the correction before its local mean; removing the mean once from the
        # whole frame's is exact (as one whole-frame pass) with margins that need not cover the
        # mean's window, and costs one pass over the frame instead of one per tile.
        # One buffer serves every window of a size: a fresh 28 MB window each time cost its
        # page faults again (a frame's windows have one size, tile_grid).
        window: np.ndarray = np.empty(0, dtype=np.float32)
        for (y0, y1, ky0, ky1), (x0, x1, kx0, kx1) in windows(rows, cols):
            if window.shape != (1, c, y1 - y0, x1 - x0):
                window = np.empty((1, c, y1 - y0, x1 - x0), dtype=np.float32)
            _fill_window(x, slice(y0, y1), slice(x0, x1), window[0])
            y = model.raw_correction(window)[0]
            _copy_planes(out[:, ky0:ky1, kx0:kx1], y[:, ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0])
        if not add_correction(out, _input_planes(x, p), model.config.mean_window):
            raise _broken(model)
        return out
    with _window_runner(model, options) as run:
        for (y0, y1, ky0, ky1), (x0, x1, kx0, kx1) in windows(rows, cols):
            window = np.empty((1, c, y1 - y0, x1 - x0), dtype=np.float32)
            _fill_window(x, slice(y0, y1), slice(x0, x1), window[0])
            y = run(window)[0]
            out[:, ky0:ky1, kx0:kx1] = y[:, ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0]
    return out


def _copy_planes(out: np.ndarray, planes: np.ndarray) -> None:
    """``out[...] = planes``, a plane per thread: the first window's copy is where the output's
    pages are first touched, when they are fresh (a 12-Mpixel frame's first window took
    0.017-0.024 s on one core)."""
    thread_map(lambda i: np.copyto(out[i], planes[i]), range(len(planes)), size=planes.size)


def _fill_window(x: np.ndarray | FrameInput, rows: slice, cols: slice, out: np.ndarray) -> None:
    """The input's ``[:, rows, cols]`` into ``out``."""
    if isinstance(x, FrameInput):
        x.fill(rows, cols, out)
    else:
        np.copyto(out, x[:, rows, cols])


def _input_planes(x: np.ndarray | FrameInput, count: int) -> np.ndarray:
    """The input's first ``count`` channels: the (amplified) planes."""
    return x.planes if isinstance(x, FrameInput) else x[:count]


def _windows(
    model: RawDenoiser | OnnxDenoiser, h: int, w: int, options: DenoiseOptions
) -> tuple[list[Span], list[Span]]:
    """The rows and columns of windows :func:`run_denoiser` cuts ``h x w`` planes into."""
    grid = model.config.pad_multiple
    overlap = default_overlap(model) if options.overlap is None else options.overlap
    if options.tile and (overlap % grid or options.tile % grid):
        raise ValueError(f"tile and overlap must be multiples of {grid} for this network")
    if options.tile and options.tile < 2 * overlap + grid:
        raise ValueError(f"tile {options.tile} leaves no centre after margins of {overlap}")
    return tile_grid(h, w, options.tile, overlap, grid)


def packed_size(shape: tuple[int, ...], meta: RawMetadata) -> tuple[int, int]:
    """The size of the planes :func:`prepare_frame` packs a mosaic of ``shape`` into: padded
    to whole 2x2 tiles (Bayer); or padded to whole 6x6 tiles (its view,
    :func:`~darkraw.classic.pipeline.rggb_view`), then again after the rows and columns an
    X-Trans tile's phase puts before it (:func:`~darkraw.raw.cfa.xtrans_phase`), a third a
    side."""
    rows, cols = shape[0], shape[1]
    if not meta.is_xtrans:
        return (rows + 1) // 2, (cols + 1) // 2
    before_rows, before_cols = xtrans_phase(meta.cfa_tile)
    rows, cols = 6 * -(-rows // 6) + before_rows, 6 * -(-cols // 6) + before_cols
    return 2 * -(-rows // 6), 2 * -(-cols // 6)


def _prepare_first_window(
    model: RawDenoiser | OnnxDenoiser, h: int, w: int, options: DenoiseOptions
) -> None:
    """Have the runtime make ready for the first window of ``h x w`` planes in another thread,
    while this one measures the frame's noise and makes the network's input: OpenVINO's
    compilation for a window's size (about 0.1 s, half of it on one core) is otherwise the
    first window's. The run waits for it (the session's lock); a failure there is met again by
    the run, which reports it."""
    if not isinstance(model, OnnxDenoiser):
        return
    try:
        rows, cols = _windows(model, h, w, options)
    except ValueError:  # the run raises it
        return
    (y0, y1, _, _), (x0, x1, _, _) = rows[0], cols[0]
    # Not a daemon: a program that ends meanwhile waits for the compilation (a fraction of a
    # second) instead of tearing OpenVINO down under it.
    threading.Thread(target=model.prepare, args=(y1 - y0, x1 - x0), name="darkraw-prepare").start()


def default_overlap(model: RawDenoiser | OnnxDenoiser) -> int:
    """The tiles' margin that makes them join exactly: the network's reach, rounded up to its
    pooling grid. ONNX Runtime's runs remove the local mean once over the whole frame, not per
    tile (:func:`run_denoiser`), so their margin need not cover the mean's window."""
    reach = receptive_radius(model.config)
    if isinstance(model, OnnxDenoiser):
        reach -= model.config.mean_window // 2
    grid = model.config.pad_multiple
    return math.ceil(reach / grid) * grid


@contextlib.contextmanager
def _window_runner(
    model: RawDenoiser, options: DenoiseOptions
) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
    """A function from a ``(1, C, h, w)`` window to its ``(1, P, h, w)`` clean planes in torch,
    checked for NaN and infinity."""
    import torch

    from darkraw.nn.infer import finite_only, torch_threads
    from darkraw.nn.precision import autocast_dtype

    amp = autocast_dtype(options.precision, torch.device("cpu"))
    model.eval()
    autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if amp is not None:
        autocast = torch.autocast("cpu", dtype=amp)
    net = finite_only(model, model)

    def run(window: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(window).contiguous(memory_format=torch.channels_last)
        result: np.ndarray = net(t).float().numpy()
        return result

    with torch_threads(options.threads), torch.inference_mode(), autocast:
        yield run


def _broken(model: OnnxDenoiser) -> NetworkOutputError:
    return NetworkOutputError(
        None,
        f"model {model.path} gives NaN or infinite values: its weights are broken (too large "
        "or corrupt); use another model",
    )


@dataclass(frozen=True)
class DenoisedFrame:
    """A frame the raw denoiser has cleaned, its picture not yet rendered (:func:`denoise_frame`).

    Attributes:
        ratio, noise, strength, mosaic_dn, black_offset, passes, passes_note: as
            :class:`DenoisedResult` has them.
        picture: renders the picture (LibRaw's ``(H', W', 3)`` uint16 pixels or darkraw's
            ``(3, H', W')`` float planes); :meth:`render` calls it.
    """

    ratio: float
    noise: RawNoise
    strength: float
    mosaic_dn: np.ndarray
    black_offset: tuple[float, float, float, float]
    passes: int
    picture: Callable[[], np.ndarray] = field(repr=False, compare=False)
    passes_note: str = "the frame"

    def render(self) -> DenoisedResult:
        """The picture and everything else :func:`enhance_with_denoiser` returns."""
        return DenoisedResult(
            rendered=self.picture(),
            ratio=self.ratio,
            noise=self.noise,
            strength=self.strength,
            mosaic_dn=self.mosaic_dn,
            black_offset=self.black_offset,
            passes=self.passes,
            passes_note=self.passes_note,
        )


def enhance_with_denoiser(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    model: RawDenoiser | OnnxDenoiser,
    ratio: float | None = None,
    options: DenoiseOptions = DenoiseOptions(),
    *,
    source: str | Path | None = None,
    noise: RawNoise | None = None,
    database: NoiseDatabase | None = None,
    black_range: BlackOffsetRange | None = None,
    black_model: BlackOffsetModel | None = None,
) -> DenoisedResult:
    """Denoise a raw mosaic in its raw space and render it: :func:`denoise_frame`, then its
    picture (:meth:`DenoisedFrame.render`); the arguments are :func:`denoise_frame`'s."""
    frame = denoise_frame(
        mosaic_dn,
        meta,
        model,
        ratio,
        options,
        source=source,
        noise=noise,
        database=database,
        black_range=black_range,
        black_model=black_model,
    )
    return frame.render()


def denoise_frame(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    model: RawDenoiser | OnnxDenoiser,
    ratio: float | None = None,
    options: DenoiseOptions = DenoiseOptions(),
    *,
    source: str | Path | None = None,
    noise: RawNoise | None = None,
    database: NoiseDatabase | None = None,
    black_range: BlackOffsetRange | None = None,
    black_model: BlackOffsetModel | None = None,
) -> DenoisedFrame:
    """Denoise a raw mosaic in its raw space; the picture is rendered when asked for
    (:meth:`DenoisedFrame.render`), so that a DNG writer, which stores the clean mosaic, need not
    render it at all.

    Args:
        mosaic_dn: ``(H, W)`` Bayer mosaic in DN.
        meta: its metadata (make, model and ISO choose a noise profile from ``database``).
        model: the raw denoiser, in torch or in ONNX Runtime (:mod:`darkraw.nn.runtime`).
        ratio: amplification; ``None`` chooses one with
            :func:`~darkraw.classic.pipeline.auto_ratio`.
        options: strength, renderer, tiling, precision.
        source: the file the mosaic came from (LibRaw renders from it); ``None`` for a bare
            mosaic, which LibRaw renders through a temporary DNG.
        noise: the frame's noise before amplification; ``None`` looks it up in ``database`` or
            estimates it from the frame (after the black-level offset is taken out).
        black_range: the black-level offsets the camera may carry; ``None``: the range for the
            file's camera and ``options.black_offset`` (:func:`prepare_frame`).
        black_model: the learnt estimate of the black offset; ``None``: the bundled one.

    Raises:
        ValueError: an X-Trans mosaic (the denoiser is for Bayer), or a bad ratio.
    """
    want = 9 if meta.is_xtrans else 4
    if model.config.planes != want:
        raise ValueError(
            f"this raw denoiser takes {LAYOUTS[model.config.planes]} files (its "
            f"{model.config.planes} packed planes), but the file is {LAYOUTS[want]}; use the "
            f"default model (a raw denoiser for each) or the classic pipeline"
        )
    if ratio is not None and not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"ratio must be a positive number, got {ratio}")
    if options.strength != 0:
        # The packed planes' size, known before they are made: the runtime's preparation (0.3 s
        # for the int8 version held to AVX2) then runs beside the planes' making too, not only
        # beside the noise measurement.
        _prepare_first_window(model, *packed_size(np.shape(mosaic_dn), meta), options)
    prepared = prepare_frame(
        mosaic_dn,
        meta,
        black_offset=options.black_offset,
        black_range=black_range,
        ratio=ratio,
        black_model=black_model,
    )
    view, planes, offset = prepared.view, prepared.planes, prepared.offset
    del prepared  # so that its planes go when they are no longer needed
    if ratio is None:
        less = _offset_tile(offset, meta) if offset.any() else None
        ratio = auto_ratio(sampled_raw_lin(mosaic_dn, meta, less)[0])
    if noise is None:
        progress.step("measuring the noise")
        noise = frame_noise(planes, meta, database)
    amplified = noise.amplified(float(ratio))
    told = amplified.scaled(options.strength)
    libraw = options.renderer is Renderer.LIBRAW and libraw_renders(meta)
    # darkraw's rendering takes gray-world gains from the amplified planes where the file has no
    # white balance; LibRaw's needs none of them.
    gray_source: np.ndarray | None = None
    passes = 0
    if options.strength == 0:
        clean = amplify(planes, float(ratio))
        gray_source = None if libraw else clean.copy()
        del planes
    else:
        with_map = model.config.noise_input == "map"
        passes = ensemble_passes(options.ensemble, meta.height * meta.width)
        x: np.ndarray | FrameInput
        if passes == 1:
            # Made window by window, in the planes' place: the whole input (97 MB for 12
            # Mpixels, and 48 MB more to make its noise map) is never made.
            x = FrameInput.amplified_in_place(planes, told, with_map=with_map, ratio=float(ratio))
            del planes
            clean = run_denoiser(model, x, options)
        else:
            x = denoiser_input(planes, told, with_map=with_map, ratio=float(ratio))
            del planes  # the unamplified planes: 48 MB for 12 Mpixels, not needed any more
            clean = _ensemble_mean(model, x, view.meta, told, options, passes)
        # A view of x would keep its noise map too through the rendering.
        gray_source = None if libraw else _input_planes(x, len(clean)).copy()
        del x
    # In place, a plane per thread: clean is this function's own array.
    thread_map(
        lambda i: np.clip(clean[i], 0.0, 1.0, out=clean[i]), range(len(clean)), size=clean.size
    )
    mosaic_out = _mosaic_dn(clean, view, meta)
    picture: Callable[[], np.ndarray]
    if libraw:
        del clean  # LibRaw renders from the mosaic: the planes need not wait for it
        curve = LIBRAW_CURVES[options.gamma]
        picture = functools.partial(
            render_mosaic_with_libraw,
            source,
            mosaic_out,
            meta,
            gamma=curve,
            planar=False,
            demosaic=options.demosaic,
        )
    else:
        assert gray_source is not None
        picture = functools.partial(
            _render_with_darkraw, clean, gray_source, view, meta.flip, options.gamma
        )
    return DenoisedFrame(
        ratio=float(ratio),
        noise=amplified,
        strength=options.strength,
        mosaic_dn=mosaic_out,
        black_offset=_offset_dn(offset, view.meta),
        passes=passes,
        picture=picture,
        passes_note=ensemble_note(passes, meta.is_xtrans),
    )


#: A mirroring or turn of a frame: (transpose, then flip rows, then flip columns).
Dihedral = tuple[bool, bool, bool]

#: The passes of a Bayer frame's ensemble, in the order its sizes take them: 2 adds the
#: transpose (an RGGB frame transposed is RGGB), 4 the half turn and the anti-transpose (the
#: four form a group), 8 the mirrorings and quarter turns. Every pass but the transpose moves the
#: red sample off the tile's corner; a row or column put before the moved frame
#: (:func:`~darkraw.raw.cfa.cfa_canvas`) brings it back, so each pass is a frame as the network
#: was trained on, one pixel away.
BAYER_PASSES: tuple[Dihedral, ...] = (
    (False, False, False),
    (True, False, False),
    (False, True, True),
    (True, True, True),
    (False, True, False),
    (False, False, True),
    (True, True, False),
    (True, False, True),
)
#: The passes of an X-Trans frame's ensemble: 2 adds the half turn, 4 the two mirrorings (the
#: four form a group), 8 the transposes and quarter turns. Each maps Fujifilm's pattern onto a
#: shift of itself, which packing brings back to :data:`~darkraw.raw.cfa.XTRANS_TILE`.
XTRANS_PASSES: tuple[Dihedral, ...] = (
    (False, False, False),
    (False, True, True),
    (False, True, False),
    (False, False, True),
    (True, False, False),
    (True, True, True),
    (True, True, False),
    (True, False, True),
)


def ensemble_note(passes: int, xtrans: bool) -> str:
    """What an ensemble of ``passes`` averaged, for people (the file's line)."""
    if passes == 2:
        return f"the frame and {XTRANS_SECOND_PASS if xtrans else BAYER_SECOND_PASS}"
    if passes == 4:
        if xtrans:
            return "the frame, it turned half round and mirrored both ways"
        return "the frame, its transpose and both turned half round"
    if passes == 8:
        return "the frame in all eight mirrorings and turns"
    return "the frame"


def _moved(frame: np.ndarray, move: Dihedral) -> np.ndarray:
    transpose, flip_rows, flip_cols = move
    out = frame.T if transpose else frame
    out = out[::-1] if flip_rows else out
    return out[:, ::-1] if flip_cols else out


def _moved_back(frame: np.ndarray, move: Dihedral) -> np.ndarray:
    transpose, flip_rows, flip_cols = move
    out = frame[:, ::-1] if flip_cols else frame
    out = out[::-1] if flip_rows else out
    return out.T if transpose else out


def _moved_tile(meta: RawMetadata, move: Dihedral) -> np.ndarray:
    """The colours at the top-left tile of ``meta``'s frame moved by ``move``: each of its
    pixels traced back to the frame (no frame-sized colour map is made)."""
    period = meta.period
    rows, cols = np.mgrid[:period, :period]
    transpose, flip_rows, flip_cols = move
    height, width = (meta.width, meta.height) if transpose else (meta.height, meta.width)
    if flip_cols:
        cols = width - 1 - cols
    if flip_rows:
        rows = height - 1 - rows
    if transpose:
        rows, cols = cols, rows
    tile = np.asarray(meta.cfa_tile)
    moved: np.ndarray = tile[rows % period, cols % period]
    return moved


def _ensemble_mean(
    model: RawDenoiser | OnnxDenoiser,
    x: np.ndarray,
    view_meta: RawMetadata,
    told: RawNoise,
    options: DenoiseOptions,
    passes: int,
) -> np.ndarray:
    """The network's planes for input ``x`` (:func:`run_denoiser`), averaged with its planes for
    the frame moved the other ``passes - 1`` ways (:data:`BAYER_PASSES`,
    :data:`XTRANS_PASSES`), each moved back: a new array the caller owns.

    Each moved frame is unpacked from ``x``, moved, packed as a frame the network was trained on,
    run, unpacked, moved back and packed as ``x`` is; the Bayer transpose is made on the planes
    themselves (an RGGB frame's planes transposed, the greens swapped), without unpacking.

    Packing a moved frame may add a packed row or column (the rows put before it), so its size
    varies with the move; OpenVINO compiles the network for each size it meets (0.1 s for a
    small frame) and keeps two. Beyond two passes, every moved frame is therefore padded
    (mirrored at its bottom and right, which keeps each plane's colour and an X-Trans block's
    kind) to one size for each orientation, the frame's own pass too (so the ensemble stays
    exactly symmetric), and the upright ones run before those lying on their side: the 8
    passes of the demo crop took 1.4 s with a size for each, 0.8-1.0 s so.
    """
    xtrans = view_meta.is_xtrans
    h, w = x.shape[1:]
    grow = 0 if passes <= 2 else (2 if xtrans else 1)
    with progress.part(f"pass 1/{passes}") if passes > 1 else contextlib.nullcontext():
        clean = run_denoiser(model, _padded(x, (h + grow, w + grow)), options)
    if grow:
        clean = np.ascontiguousarray(clean[:, :h, :w])
    if passes == 1:
        return clean
    planes = len(clean)
    moves = (XTRANS_PASSES if xtrans else BAYER_PASSES)[1:passes]
    with_map = model.config.noise_input == "map"
    frame: np.ndarray | None = None
    # Upright moves first, then those that transpose: each orientation's size compiled once.
    for n, move in enumerate(sorted(moves, key=lambda m: m[0]), 2):
        size = (w + grow, h + grow) if move[0] else (h + grow, w + grow)
        with progress.part(f"pass {n}/{passes}"):
            if not xtrans and move == (True, False, False):
                lying = _padded(transpose_bayer_planes(x), size)
                other = transpose_bayer_planes(run_denoiser(model, lying, options)[:, :w, :h])
                del lying
            else:
                if frame is None:
                    frame = unpack(x[:planes], view_meta)
                moved = _moved_pass(model, frame, view_meta, move, told, with_map, options, size)
                other = pack(moved, view_meta)

        def add(i: int, other: np.ndarray = other) -> None:
            np.add(clean[i], other[i], out=clean[i])

        thread_map(add, range(planes), size=clean.size)
        del other
    clean *= np.float32(1.0 / passes)
    return clean


def _padded(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(C, h, w)`` mirrored (reflect-101) at its bottom and right to ``size`` where it is
    smaller; ``x`` itself where it is not. Reflect-101 keeps a packed plane's colour and,
    moving a row or column two on, the parity of an X-Trans block's kind."""
    h, w = x.shape[1:]
    more_h, more_w = max(size[0] - h, 0), max(size[1] - w, 0)
    if not (more_h or more_w):
        return x
    widths = ((0, 0), (0, more_h), (0, more_w))
    if min(h, w) > max(more_h, more_w):
        out: np.ndarray = np.pad(x, widths, mode="reflect")
    else:
        out = np.pad(x, widths, mode="edge")
    return out


def _moved_pass(
    model: RawDenoiser | OnnxDenoiser,
    frame: np.ndarray,
    meta: RawMetadata,
    move: Dihedral,
    told: RawNoise,
    with_map: bool,
    options: DenoiseOptions,
    size: tuple[int, int],
) -> np.ndarray:
    """The network's clean mosaic for ``frame`` (the amplified mosaic of ``meta``) moved by
    ``move``, moved back: ``(H, W)`` like ``frame``. The moved frame's planes run padded to
    ``size`` where they are smaller (:func:`_padded`)."""
    moved = np.ascontiguousarray(_moved(frame, move))
    h, w = moved.shape
    tile = _moved_tile(meta, move)
    if meta.is_xtrans:
        moved_meta = meta.replace(
            cfa_tile=tuple(tuple(int(v) for v in row) for row in tile), height=h, width=w
        )
        packed = pack(moved, moved_meta)
    else:
        # Red's place in the moved tile: as many rows and columns put before make it a corner.
        rows, cols = (int(v[0]) for v in np.nonzero(tile == 0))
        packed = pack_bayer(cfa_canvas(moved, rows, cols, period=2), BayerPattern.RGGB)
    ph, pw = packed.shape[1:]
    x = denoiser_input(_padded(packed, size), told, with_map=with_map)
    del packed
    y = run_denoiser(model, x, options)[:, :ph, :pw]
    if meta.is_xtrans:
        return _moved_back(unpack(y, moved_meta), move)
    back = unpack_bayer(np.ascontiguousarray(y), BayerPattern.RGGB)
    return _moved_back(back[rows : rows + h, cols : cols + w], move)


def _render_with_darkraw(
    clean: np.ndarray, gray_source: np.ndarray, view: Any, flip: int, gamma: GammaCurve
) -> np.ndarray:
    """darkraw's rendering of clean RGGB planes, oriented as the file."""
    gains = choose_gains(gray_source, view.meta, WhiteBalance.CAMERA)
    return orient(view.undo(render_planes(clean, view.meta, gains, gamma)), flip)


@dataclass(frozen=True)
class PreparedFrame:
    """A mosaic as the raw denoiser sees it, before amplification (:func:`prepare_frame`).

    Attributes:
        view: the RGGB view of the mosaic (:func:`~darkraw.classic.pipeline.rggb_view`).
        planes: ``(4, h, w)`` float32 R, G1, B, G2 (Bayer) or ``(9, h, w)`` R, R, G, G, G,
            G, G, B, B (X-Trans): black level and measured black offset subtracted, white 1.
        offset: the black offset subtracted from each plane, in shares of white.
    """

    view: Any
    planes: np.ndarray
    offset: np.ndarray


def prepare_frame(
    mosaic_dn: np.ndarray,
    meta: RawMetadata,
    *,
    black_offset: BlackOffset | str | bool = BlackOffset.LEARNT,
    black_range: BlackOffsetRange | None = None,
    ratio: float | None = None,
    black_model: BlackOffsetModel | None = None,
) -> PreparedFrame:
    """The first steps of :func:`enhance_with_denoiser`, shared with training on real pairs
    (:mod:`darkraw.training.denoise_real`) so that the network learns from what it will see.

    Args:
        black_offset: how each plane's black offset is found (:class:`BlackOffset`) before it
            is subtracted.
        black_range: the offsets allowed; ``None``: the range for the file's camera and the
            method (:func:`~darkraw.synth.noiselevel.learnt_offset_range` for ``learnt``,
            :func:`~darkraw.synth.noiselevel.black_offset_range` for ``darkest``).
        ratio: the amplification to come, which the learnt model reads the frame at; ``None``:
            :func:`~darkraw.classic.pipeline.auto_ratio` of the planes.
        black_model: the learnt estimate; ``None``: the bundled one
            (:func:`~darkraw.nn.blackoffset.bundled_black_offset_model`).
    """
    method = BlackOffset.parse(black_offset)
    view = rggb_view(mosaic_dn, meta)
    planes = denoiser_planes(view.mosaic, view.meta, 1.0)
    offset = np.zeros(len(planes), dtype=np.float32)
    if method is not BlackOffset.NONE and min(planes.shape[1:]) >= MIN_ESTIMATE_SIDE:
        span = float(meta.white_level) - float(np.mean(meta.black_tile))
        measured = measured_planes(planes)
        if method is BlackOffset.LEARNT:
            if black_range is None:
                black_range = learnt_offset_range(meta.make, meta.model, span)
            read_at = auto_ratio(measured) if ratio is None else float(ratio)
            learnt = bundled_black_offset_model() if black_model is None else black_model
            quad = np.asarray(black_range.clip(learnt.offset(measured, read_at)), np.float32)
        else:
            if black_range is None:
                black_range = black_offset_range(meta.make, meta.model, span)
            quad = np.asarray(estimate_black_offset(measured, black_range), dtype=np.float32)
        if len(planes) == 9:
            # One plane of each green measured it twice: both greens take their mean.
            quad[1] = quad[3] = (quad[1] + quad[3]) / 2
        offset = quad[list(noise_entries(len(planes)))]
        # What is clipped at white stays white.
        thread_map(
            lambda i: np.subtract(planes[i], offset[i], out=planes[i], where=planes[i] < 1),
            range(len(planes)),
            size=planes.size,
        )
    return PreparedFrame(view, planes, offset)


#: The X-Trans planes (R, R, G, G, G, G, G, B, B) measured as a Bayer frame's R, G1, B, G2 for
#: the noise level and the black offset: one of each colour, two greens. Measured on four planes
#: of nine, a 12-Mpixel frame still gives those measurements more samples than they take.
XTRANS_MEASURED_PLANES = (0, 2, 7, 3)


def measured_planes(planes: np.ndarray) -> np.ndarray:
    """The four planes the noise and black-offset measurements take, as R, G1, B, G2: a Bayer
    frame's own, or :data:`XTRANS_MEASURED_PLANES` of an X-Trans frame's nine."""
    if len(planes) == 9:
        return planes[list(XTRANS_MEASURED_PLANES)]
    return planes


def frame_noise(
    planes: np.ndarray, meta: RawMetadata, database: NoiseDatabase | None = None
) -> RawNoise:
    """The noise of prepared planes (:func:`prepare_frame`) before amplification: from the
    camera's profile in ``database``, else measured; zero for a frame too small to measure,
    which the network then passes through undenoised."""
    if min(planes.shape[1:]) < MIN_ESTIMATE_SIDE:
        return RawNoise((0.0,) * 4, (0.0,) * 4, "frame too small to measure its noise")
    return noise_for_frame(measured_planes(planes), meta.make, meta.model, meta.iso, database)


def _mosaic_of(planes: np.ndarray, view: Any) -> np.ndarray:
    """RGGB planes back to the file's layout and size."""
    mosaic: np.ndarray = view.undo(unpack(planes, view.meta)[None])[0]
    return mosaic


def _offset_tile(offset: np.ndarray, meta: RawMetadata) -> np.ndarray:
    """Each plane's offset laid out as one period of the file's mosaic: ``_mosaic_of`` of the
    offsets laid over the planes is this tile repeated, so the auto ratio's samples take their
    offsets from it instead of from that full-size mosaic (0.035 s for 12 Mpixels, for a
    million values).

    A position's plane depends only on where it lies in the mosaic's period (the view pads to
    whole periods, so its mirroring keeps each position's place in it): one period, cut from a
    frame of two periods a side, holds every position's offset.
    """
    period = meta.period
    small = meta.replace(height=2 * period, width=2 * period)
    small_view = rggb_view(np.zeros((small.height, small.width), dtype=np.float32), small)
    packed = packed_size((small.height, small.width), meta)
    per_plane = np.broadcast_to(offset[:, None, None], (len(offset), *packed))
    tile: np.ndarray = _mosaic_of(per_plane, small_view)[:period, :period]
    return tile


def _offset_dn(offset: np.ndarray, view_meta: RawMetadata) -> tuple[float, float, float, float]:
    """Per-plane offsets (shares of white) in DN, as R, G1, B, G2: of the RGGB view's planes,
    or of an X-Trans frame's colours (:data:`XTRANS_MEASURED_PLANES`)."""
    black = np.asarray(view_meta.black_tile, dtype=np.float64)
    if len(offset) == 9:
        offset = offset[list(XTRANS_MEASURED_PLANES)]
        levels = np.full(4, float(np.mean(black)))
    else:
        levels = np.array([black[0, 0], black[0, 1], black[1, 1], black[1, 0]])
    span = float(view_meta.white_level) - levels
    dn = [round(float(v), 3) for v in offset.astype(np.float64) * span]
    return dn[0], dn[1], dn[2], dn[3]


def _mosaic_dn(clean: np.ndarray, view: Any, meta: RawMetadata) -> np.ndarray:
    """Clean RGGB planes (white 1) back to a mosaic of the file: its layout, size and DN.

    The planes are measured from the file's black level, less any black-level offset already
    taken out of them, so the file's black level is where their zero goes: the offset stays out
    of the mosaic LibRaw renders and a DNG stores.
    """
    black = np.asarray(meta.black_tile, dtype=np.float32)
    packed = (view.meta.height // 2, view.meta.width // 2)
    if not meta.is_xtrans and max(black.shape) <= 2 and clean.shape[1:] == packed:
        return _bayer_mosaic_dn(clean, view)
    linear = _mosaic_of(clean, view)
    white = np.float32(meta.white_level)
    ph, pw = black.shape

    def band(rows: slice) -> None:
        # black + linear * (white - black), in place, one position of the black level's tile
        # at a time (no full-size map of it: 48 MB for 12 Mpixels).
        part = linear[rows]
        for dy in range(ph):
            level_row = black[(rows.start + dy) % ph]
            for dx in range(pw):
                samples, level = part[dy::ph, dx::pw], level_row[dx]
                np.multiply(samples, white - level, out=samples)
                np.add(level, samples, out=samples)

    thread_map(band, bands(linear.shape[0]), size=linear.size)
    return linear


def _bayer_mosaic_dn(clean: np.ndarray, view: Any) -> np.ndarray:
    """:func:`_mosaic_dn` of a Bayer frame whose black level repeats within the 2x2 tile, in
    one pass over row bands on every core: each plane's samples go, scaled, straight to their
    places in the file's mosaic, where unpacking them (on one core), mirroring them back and
    scaling them were three passes (0.030 against 0.017 s for 12 Mpixels, medians of 9).

    The same float32 arithmetic: the view's black tile is the file's, mirrored as the view is
    (:func:`~darkraw.classic.pipeline.rggb_view`), and the view has an even size, so each
    sample takes the black level of its place in the file.
    """
    vmeta = view.meta
    black = np.asarray(vmeta.black_tile, dtype=np.float32)
    white = np.float32(vmeta.white_level)
    full = np.empty((vmeta.height, vmeta.width), dtype=np.float32)
    flip_v, flip_h = view.flips
    # The view's frame over the file's: writing at the view's places fills the file's.
    framed = full[:: -1 if flip_v else 1, :: -1 if flip_h else 1]

    def band(rows: slice) -> None:
        for i, (dy, dx) in enumerate(BayerPattern.RGGB.offsets):
            level = black[dy % black.shape[0], dx % black.shape[1]]
            samples = framed[2 * rows.start + dy : 2 * rows.stop : 2, dx::2]
            np.multiply(clean[i, rows], white - level, out=samples)
            np.add(level, samples, out=samples)

    thread_map(band, bands(clean.shape[1]), size=clean.size)
    h, w = view.shape
    return full if full.shape == (h, w) else np.ascontiguousarray(full[:h, :w])


__all__ = [
    "BAYER_PASSES",
    "ENSEMBLE_PASSES",
    "XTRANS_PASSES",
    "DenoiseOptions",
    "DenoisedResult",
    "PreparedFrame",
    "Renderer",
    "default_overlap",
    "enhance_with_denoiser",
    "ensemble_passes",
    "frame_noise",
    "measured_planes",
    "prepare_frame",
    "run_denoiser",
]
