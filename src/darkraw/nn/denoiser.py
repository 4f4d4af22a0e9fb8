"""A small noise-aware raw denoiser: packed raw planes and their noise level in, clean planes out.

The systems that lead low-light raw work denoise in the raw domain and leave the rendering to the
camera pipeline (ELD, Wei et al., CVPR 2020; PMN, MM 2022; LED, ICCV 2023), and tell the network
how noisy its input is so that one set of weights serves every camera and gain: PMRID (Wang et
al., ECCV 2020) through the k-sigma transform, Ansel's raw denoiser and FFDNet (Zhang et al.,
TIP 2018) through a noise map given as extra input channels. This network takes the map: for each
packed plane the standard deviation of its noise at each pixel, from the Poisson-Gaussian level of
the frame (:func:`darkraw.nn.inputs.denoiser_input`).

The body is a U-Net as SID's (Chen et al., CVPR 2018: two 3x3 convolutions and LeakyReLU per
level, 2x2 max-pooling, 2x2 transposed convolutions, skip connections by concatenation), narrower
and one level shallower, on packed planes at half the mosaic's resolution. It predicts a
correction that is added to its noisy input (residual learning, as DnCNN, Zhang et al., TIP
2017): the output layer starts at zero, so an untrained network returns its input, and a frame
with little noise is left nearly as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from darkraw.nn.model import init_unet, pad_planes, unet_features, unet_levels

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
        planes: packed raw planes in and out (4 for Bayer).
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
    def in_channels(self) -> int:
        """Planes, and as many noise-map planes when the network takes the map."""
        return self.planes * (2 if self.noise_input == "map" else 1)

    @property
    def pad_multiple(self) -> int:
        """Inputs are padded to a multiple of this (one factor 2 per pooling)."""
        return int(2 ** (self.levels - 1))

    def to_dict(self) -> dict[str, int | str]:
        return {"arch": ARCH, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> DenoiserConfig:
        """The config from a model file's or checkpoint's JSON; unknown keys are an error."""
        values = {k: v for k, v in d.items() if k != "arch"}
        if d.get("arch", ARCH) != ARCH:
            raise ValueError(f"not a raw denoiser's config (arch {d.get('arch')!r})")
        known = {"width", "levels", "planes", "noise_input", "mean_window"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown denoiser config keys: {', '.join(map(str, unknown))}")
        return cls(**values)  # type: ignore[arg-type]


def denoiser_parameters(config: DenoiserConfig) -> int:
    """Weights and biases of a :class:`RawDenoiser` of ``config``, counted from its shapes."""
    widths = [config.width * 2**i for i in range(config.levels)]
    count = 0
    for c_in, c_out in pairwise([config.in_channels, *widths]):
        count += 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out
    for c_in, c_out in pairwise(widths[::-1]):
        count += 4 * c_in * c_out + c_out  # the transposed convolution
        count += 9 * 2 * c_out * c_out + c_out + 9 * c_out * c_out + c_out
    return count + 9 * config.width * config.planes + config.planes


def is_denoiser_config(d: Mapping[str, object]) -> bool:
    """Whether a stored model config is a denoiser's (SID's configs carry no ``arch``)."""
    return d.get("arch") == ARCH


class RawDenoiser(nn.Module):
    """Noisy packed planes and their noise map to clean planes, in the same linear space.

    Input: ``(N, config.in_channels, h, w)``: the ``P = config.planes`` packed raw planes (black
    subtracted, scaled to white 1, amplified by the exposure ratio; about [0, 1], negative values
    allowed), then for ``noise_input == "map"`` the standard deviation of each plane's noise at
    each pixel, in the same units. Any ``h, w >= 1`` (padded internally).

    Output: ``(N, P, h, w)``: the clean planes, unclamped (clamp before rendering).
    """

    def __init__(self, config: DenoiserConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        widths = [config.width * 2**i for i in range(config.levels)]
        self.encoder, self.upsample, self.decoder = unet_levels(config.in_channels, widths)
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Conv2d(config.width, config.planes, 3, padding=1)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-uniform weights from ``generator``; the output layer at zero (identity network)."""
        init_unet(self.encoder, self.upsample, self.decoder, generator)
        with torch.no_grad():
            self.out.weight.zero_()
            if self.out.bias is not None:
                self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, p = self.config.in_channels, self.config.planes
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"expected input of shape (N, {c}, h, w), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}")
        h, w = x.shape[-2:]
        padded = pad_planes(x, self.config.pad_multiple)
        y = unet_features(padded, self.encoder, self.pool, self.upsample, self.decoder)
        correction: torch.Tensor = self.out(y)[..., :h, :w].float()
        if self.config.mean_window:
            correction = correction - box_mean(correction, self.config.mean_window)
        # The residual is added in fp32 so that bf16's 8-bit mantissa does not round the signal.
        return x[:, :p].float() + correction


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """The mean of ``(N, C, h, w)`` over a ``window`` x ``window`` box around each pixel (the
    part of the box inside the frame at its edges), in two 1-D passes."""
    half = window // 2
    rows = F.avg_pool2d(x, (window, 1), stride=1, padding=(half, 0), count_include_pad=False)
    return F.avg_pool2d(rows, (1, window), stride=1, padding=(0, half), count_include_pad=False)


def build_denoiser(config: DenoiserConfig, generator: torch.Generator | None = None) -> RawDenoiser:
    """A new :class:`RawDenoiser` (weights from ``generator``)."""
    return RawDenoiser(config, generator)


def macs_per_packed_pixel(config: DenoiserConfig) -> float:
    """Multiply-accumulates per packed pixel of one forward pass (one packed pixel is one 2x2
    Bayer tile, four raw pixels), counted from the layers' shapes."""
    macs = 0.0
    widths = [config.width * 2**i for i in range(config.levels)]
    for level, (c_in, c_out) in enumerate(pairwise([config.in_channels, *widths])):
        macs += 9 * (c_in * c_out + c_out * c_out) / 4**level
    for level, c in enumerate(widths[:-1]):
        # Decoder at this level: the transposed convolution from below, then two 3x3s.
        macs += (2 * c * c) / 4**level
        macs += 9 * (2 * c * c + c * c) / 4**level
    macs += 9 * config.width * config.planes
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
    "RawDenoiser",
    "build_denoiser",
    "is_denoiser_config",
    "macs_per_packed_pixel",
    "receptive_radius",
]
