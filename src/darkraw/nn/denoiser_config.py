"""The raw denoiser's shape (:class:`DenoiserConfig`) and what follows from it alone: parameter
count, cost and reach. Torch-free, so that inference through an ONNX runtime
(:mod:`darkraw.nn.runtime`) and the model-file readers need no torch; the network itself is
:mod:`darkraw.nn.denoiser`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import pairwise

#: The ``arch`` entry that marks a denoiser's config in model files and checkpoints.
ARCH = "raw_denoiser"

#: How the noise level reaches the network: ``map`` (a standard-deviation plane per packed plane)
#: or ``none`` (a blind denoiser, for comparison).
NOISE_INPUTS = ("map", "none")

#: Largest width and depth a config may ask for: a model file's config is read before any weight
#: is checked, so it must not be able to make a network of unbounded size.
MAX_WIDTH = 128
MAX_LEVELS = 6
MAX_MEAN_WINDOW = 255

#: Largest network a config may describe (the default has 483,316 parameters): checked before
#: anything is allocated, so a small crafted model file cannot make a network of gigabytes.
MAX_PARAMETERS = 50_000_000


@dataclass(frozen=True)
class DenoiserConfig:
    """Shape of a :class:`RawDenoiser`.

    Attributes:
        width: channels of the first level; level ``i`` has ``width * 2**i``.
        levels: resolutions of the U-Net (``levels - 1`` poolings).
        first_width: channels of the first level where they differ from ``width`` (0: it is
            ``width``), at most :data:`MAX_WIDTH`. The first level runs at the packed planes' full
            resolution: at width 16 it is a third of the Bayer network's multiply-accumulates
            and, with few channels per convolution, the part the CPU runs least efficiently; an
            X-Trans network's first level carries nine planes where a Bayer network's carries
            four, and may be wider.
        planes: packed raw planes in and out (4 for Bayer, 9 for X-Trans).
        noise_input: ``map`` (the noise map is ``planes`` extra input channels) or ``none``.
        mean_window: side (odd, packed pixels) of the box within which the network's correction
            is made to average zero, so that it removes noise but cannot shift a region's mean
            level, which shows as a colour cast; 0 leaves the correction as it is.
    """

    width: int = 16
    levels: int = 4
    planes: int = 4
    noise_input: str = "map"
    mean_window: int = 0
    first_width: int = 0

    def __post_init__(self) -> None:
        for name, low, high in (
            ("width", 1, MAX_WIDTH),
            ("levels", 1, MAX_LEVELS),
            ("planes", 1, 9),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(
                    f"denoiser {name} must be a whole number in {low}..{high}, got {value!r}"
                )
        first = self.first_width
        if not isinstance(first, int) or isinstance(first, bool) or not 0 <= first <= MAX_WIDTH:
            raise ValueError(
                f"denoiser first_width must be a whole number in 0..{MAX_WIDTH}, got {first!r}"
            )
        window = self.mean_window
        if not isinstance(window, int) or isinstance(window, bool) or window < 0:
            raise ValueError(f"denoiser mean_window must be a whole number >= 0, got {window!r}")
        if window and (window % 2 == 0 or window > MAX_MEAN_WINDOW):
            raise ValueError(
                f"denoiser mean_window must be 0 or odd and at most {MAX_MEAN_WINDOW}, got {window}"
            )
        if denoiser_parameters(self) > MAX_PARAMETERS:
            raise ValueError(
                f"denoiser width {self.width} with {self.levels} levels has "
                f"{denoiser_parameters(self):,} parameters, over the limit of {MAX_PARAMETERS:,}"
            )
        if self.noise_input not in NOISE_INPUTS:
            raise ValueError(
                f"denoiser noise_input must be one of {', '.join(NOISE_INPUTS)}, "
                f"got {self.noise_input!r}"
            )

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level, shallow to deep."""
        widths = [self.width * 2**i for i in range(self.levels)]
        widths[0] = self.first_width or self.width
        return tuple(widths)

    @property
    def in_channels(self) -> int:
        """Planes, as many noise-map planes when the network takes the map, and for X-Trans (9
        planes) one more: which of the tile's two kinds of 3x3 block each packed pixel is
        (:func:`darkraw.nn.inputs.xtrans_block_kind`)."""
        return self.planes * (2 if self.noise_input == "map" else 1) + (self.planes == 9)

    @property
    def pad_multiple(self) -> int:
        """Inputs are padded to a multiple of this (one factor 2 per pooling)."""
        return int(2 ** (self.levels - 1))

    def to_dict(self) -> dict[str, int | str]:
        values = asdict(self)
        if not self.first_width:
            # So that the files of networks without it read as before, by older darkraw too.
            del values["first_width"]
        return {"arch": ARCH, **values}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> DenoiserConfig:
        """The config from a model file's or checkpoint's JSON; unknown keys are an error."""
        values = {k: v for k, v in d.items() if k != "arch"}
        if d.get("arch", ARCH) != ARCH:
            raise ValueError(f"not a raw denoiser's config (arch {d.get('arch')!r})")
        known = {"width", "levels", "planes", "noise_input", "mean_window", "first_width"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown denoiser config keys: {', '.join(map(str, unknown))}")
        return cls(**values)  # type: ignore[arg-type]


def denoiser_parameters(config: DenoiserConfig) -> int:
    """Weights and biases of a :class:`RawDenoiser` of ``config``, counted from its shapes."""
    widths = config.widths
    count = 0
    for c_in, c_out in pairwise([config.in_channels, *widths]):
        count += 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out
    for c_in, c_out in pairwise(widths[::-1]):
        count += 4 * c_in * c_out + c_out  # the transposed convolution
        count += 9 * 2 * c_out * c_out + c_out + 9 * c_out * c_out + c_out
    return count + 9 * widths[0] * config.planes + config.planes


def is_denoiser_config(d: Mapping[str, object]) -> bool:
    """Whether a stored model config is a denoiser's (SID's configs carry no ``arch``)."""
    return d.get("arch") == ARCH


def macs_per_packed_pixel(config: DenoiserConfig) -> float:
    """Multiply-accumulates per packed pixel of one forward pass (one packed pixel is one 2x2
    Bayer tile, four raw pixels), counted from the layers' shapes."""
    macs = 0.0
    widths = config.widths
    for level, (c_in, c_out) in enumerate(pairwise([config.in_channels, *widths])):
        macs += 9 * (c_in * c_out + c_out * c_out) / 4**level
    for level, c in enumerate(widths[:-1]):
        # Decoder at this level: the transposed convolution from below, then two 3x3s.
        below = widths[level + 1]
        macs += (below * c) / 4**level
        macs += 9 * (2 * c * c + c * c) / 4**level
    macs += 9 * widths[0] * config.planes
    return macs


def receptive_radius(config: DenoiserConfig) -> int:
    """How far (in packed pixels) an output pixel can see: two 3x3 convolutions per level on
    the way down and up, each worth ``2**level`` pixels, plus the output convolution."""
    radius = 1 + config.mean_window // 2
    for level in range(config.levels):
        scale = 2**level
        radius += 2 * scale  # encoder
        if level < config.levels - 1:
            radius += 2 * scale + scale  # decoder and its upsampling
        if level:
            radius += scale // 2  # pooling
    return radius


__all__ = [
    "ARCH",
    "DenoiserConfig",
    "denoiser_parameters",
    "is_denoiser_config",
    "macs_per_packed_pixel",
    "receptive_radius",
]
