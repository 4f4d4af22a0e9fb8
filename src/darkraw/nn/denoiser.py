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

import torch
import torch.nn.functional as F
from torch import nn

from darkraw.nn.denoiser_config import (
    ARCH,
    DenoiserConfig,
    denoiser_parameters,
    is_denoiser_config,
    macs_per_packed_pixel,
    receptive_radius,
)
from darkraw.nn.model import init_unet, pad_planes, unet_features, unet_levels


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
        widths = config.widths
        self.encoder, self.upsample, self.decoder = unet_levels(config.in_channels, widths)
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Conv2d(widths[0], config.planes, 3, padding=1)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-uniform weights from ``generator``; the output layer at zero (identity network)."""
        init_unet(self.encoder, self.upsample, self.decoder, generator)
        with torch.no_grad():
            self.out.weight.zero_()
            if self.out.bias is not None:
                self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The residual is added in fp32 so that bf16's 8-bit mantissa does not round the signal.
        return x[:, : self.config.planes].float() + self.correction(x)

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        """What :meth:`forward` adds to the noisy planes (fp32): :meth:`raw_correction` less its
        local mean over ``mean_window`` (so the network cannot shift a region's level)."""
        correction = self.raw_correction(x)
        if self.config.mean_window:
            correction = correction - box_mean(correction, self.config.mean_window)
        return correction

    def raw_correction(self, x: torch.Tensor, *, split_concat: bool = False) -> torch.Tensor:
        """The output layer's correction, before its local mean is removed: the part an ONNX
        export runs; its runtime removes the mean and adds the residual in fp32
        (:mod:`darkraw.nn.runtime`), whatever precision the graph computes in.
        ``split_concat``: as :func:`~darkraw.nn.model.unet_features` has it (the export's)."""
        c = self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"expected input of shape (N, {c}, h, w), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}")
        h, w = x.shape[-2:]
        padded = pad_planes(x, self.config.pad_multiple)
        y = unet_features(
            padded,
            self.encoder,
            self.pool,
            self.upsample,
            self.decoder,
            split_concat=split_concat,
        )
        correction: torch.Tensor = self.out(y)[..., :h, :w].float()
        return correction


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """The mean of ``(N, C, h, w)`` over a ``window`` x ``window`` box around each pixel (the
    part of the box inside the frame at its edges), in two 1-D passes."""
    half = window // 2
    rows = F.avg_pool2d(x, (window, 1), stride=1, padding=(half, 0), count_include_pad=False)
    return F.avg_pool2d(rows, (1, window), stride=1, padding=(0, half), count_include_pad=False)


def build_denoiser(config: DenoiserConfig, generator: torch.Generator | None = None) -> RawDenoiser:
    """A new :class:`RawDenoiser` (weights from ``generator``)."""
    return RawDenoiser(config, generator)


__all__ = [
    "ARCH",
    "DenoiserConfig",
    "RawDenoiser",
    "build_denoiser",
    "denoiser_parameters",
    "is_denoiser_config",
    "macs_per_packed_pixel",
    "receptive_radius",
]
