"""The See-in-the-Dark U-Net (Chen et al., CVPR 2018, "Learning to See in the Dark").

Packed raw planes in, full-resolution sRGB out. The encoder has five levels of ``w, 2w, 4w, 8w,
16w`` channels (``w = 32`` is SID), each two 3x3 convolutions (padding 1) with LeakyReLU(0.2),
joined by 2x2 max-pools; the decoder mirrors it with 2x2 stride-2 transposed convolutions, a
concatenated skip connection and two 3x3 convolutions per level. A 1x1 convolution maps the last
``w`` channels to ``3 * s * s`` and a depth-to-space (pixel shuffle) by ``s`` gives sRGB at the
mosaic's full resolution: ``s = 2`` for Bayer (4 packed planes), ``s = 3`` for X-Trans (9 planes).

The seed's addition is "two fully-connected layers at the end" that transfer learning retrains
on a few real pairs while the rest stays frozen. A dense layer over the whole image would tie
the network to one input size, so here they are *per-pixel* fully-connected layers, i.e. 1x1
convolutions: ``fc1`` (``3*s*s -> fc_hidden``, LeakyReLU(0.2)) and ``fc2``
(``fc_hidden -> 3*s*s``), placed after SID's output convolution and before the pixel shuffle.
The network stays fully convolutional and runs at any size. Both layers live in the submodule
``fc`` (parameter names start with :data:`FC_PREFIX`), so a fine-tuning loop can find them by
name and :func:`reset_fc` can re-draw them.

A raw-output network (``ModelConfig.output == "raw"``) has the same layers up to ``fc2``, which
maps to the ``C`` packed planes instead, with no depth-to-space: it only denoises, and gives its
planes through the sRGB curve (:func:`raw_tone`), the space its loss is measured in. Its output
layers can start from an sRGB network's (:func:`raw_tail_from_srgb`).

At width 32 on Bayer input the SID part has 7,760,748 parameters (every layer with a bias,
transposed convolutions included; the paper quotes 7.76 M) and the two FC layers 1,612 more.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from darkraw.raw.cfa import plane_colors

#: Parameter names of the two per-pixel fully-connected layers start with this.
FC_PREFIX = "fc."

#: Negative slope of every LeakyReLU, as in SID.
LEAKY_SLOPE = 0.2

#: Number of encoder levels; the input is padded to a multiple of ``2 ** (LEVELS - 1)``.
LEVELS = 5

#: Height and width of the packed input are padded up to a multiple of this (four 2x2 pools).
PAD_MULTIPLE = 2 ** (LEVELS - 1)

_UPSCALE = {4: 2, 9: 3}

#: What a network can output (:attr:`ModelConfig.output`).
OUTPUTS = ("srgb", "raw")


#: Largest ``width`` accepted: 4x SID's, already 124 M parameters.
MAX_WIDTH = 128

#: Largest ``fc_hidden`` accepted.
MAX_FC_HIDDEN = 1024


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; everything needed to rebuild it from a checkpoint.

    Attributes:
        in_channels: packed raw planes, 4 (Bayer) or 9 (X-Trans).
        width: channels of the first encoder level; level ``i`` has ``width * 2**i``.
            32 is SID.
        fc_hidden: width of the hidden per-pixel fully-connected layer.
        output: ``srgb`` (SID: the network renders the picture) or ``raw`` (the network only
            denoises: clean packed raw planes out, at the input's size, which the classic
            pipeline then renders with the file's white balance and colour matrix).
    """

    in_channels: int = 4
    width: int = 32
    fc_hidden: int = 64
    output: str = "srgb"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "output":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{f.name} must be an int, got {type(value).__name__} {value!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if self.in_channels not in _UPSCALE:
            raise ValueError(
                f"in_channels must be 4 (Bayer) or 9 (X-Trans), got {self.in_channels}"
            )
        # Upper bounds: a model file's config is untrusted input, and building a network of
        # width 10**6 would try to allocate terabytes before any weight is checked.
        if not 1 <= self.width <= MAX_WIDTH:
            raise ValueError(f"width must be in 1..{MAX_WIDTH}, got {self.width}")
        if not 1 <= self.fc_hidden <= MAX_FC_HIDDEN:
            raise ValueError(f"fc_hidden must be in 1..{MAX_FC_HIDDEN}, got {self.fc_hidden}")

    @property
    def upscale(self) -> int:
        """Depth-to-space factor: 2 for Bayer, 3 for X-Trans; 1 for a raw-output network."""
        return 1 if self.output == "raw" else _UPSCALE[self.in_channels]

    @property
    def tail_channels(self) -> int:
        """Channels between the output convolution and ``fc2``: ``3*s*s`` for either output,
        ``s`` the CFA's depth-to-space factor, so an sRGB network's layers fit a raw one's."""
        return 3 * _UPSCALE[self.in_channels] ** 2

    @property
    def out_planes(self) -> int:
        """Channels of the output: 3 (sRGB), or the packed planes of a raw-output network."""
        return self.in_channels if self.output == "raw" else 3

    def to_dict(self) -> dict[str, int | str]:
        """The fields as a JSON-able dict; :meth:`from_dict` inverts it. ``output`` is left
        out when it is ``srgb``, so that sRGB model files stay readable by earlier versions."""
        d: dict[str, int | str] = asdict(self)
        if self.output == "srgb":
            del d["output"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ModelConfig:
        """Build a config from a dict that overrides some defaults.

        Raises:
            ValueError: a key that is not a field, or a value that is not an int (naming the key),
                or a value out of range.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"expected a mapping of model settings, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key not in known:
                raise ValueError(
                    f"unknown model config key {key!r}; known keys: {', '.join(sorted(known))}"
                )
            # ``output`` is checked where every config is built (``__post_init__``).
            if key != "output" and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(
                    f"model config key {key!r} must be an int, got {type(value).__name__} {value!r}"
                )
            kwargs[key] = value
        return cls(**kwargs)


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(LEAKY_SLOPE)


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        _leaky(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        _leaky(),
    )


def init_layer(
    layer: nn.Conv2d | nn.ConvTranspose2d, generator: torch.Generator | None, *, leaky: bool
) -> None:
    """He-uniform weights for the true fan-in, zero bias."""
    weight = layer.weight
    kh, kw = layer.kernel_size
    if isinstance(layer, nn.ConvTranspose2d):
        # A 2x2 stride-2 transposed conv feeds each output pixel from one kernel tap per input
        # channel, so its fan-in is the input channels, not what torch's default assumes.
        sh, sw = layer.stride
        fan_in = weight.shape[0] * max(1, (kh * kw) // (sh * sw))
    else:
        fan_in = weight.shape[1] * kh * kw
    gain = math.sqrt(2.0 / (1.0 + LEAKY_SLOPE**2)) if leaky else 1.0
    bound = gain * math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()


def unet_levels(
    in_channels: int, widths: Sequence[int]
) -> tuple[nn.ModuleList, nn.ModuleList, nn.ModuleList]:
    """SID's U-Net body for ``widths`` (shallow to deep): the encoder's double convolutions,
    the 2x2 stride-2 transposed convolutions up, and the decoder's double convolutions over the
    concatenated skips."""
    encoder = nn.ModuleList(
        double_conv(c_in, c_out) for c_in, c_out in pairwise([in_channels, *widths])
    )
    deep_to_shallow = list(widths)[::-1]
    upsample = nn.ModuleList(
        nn.ConvTranspose2d(c_in, c_out, 2, stride=2) for c_in, c_out in pairwise(deep_to_shallow)
    )
    decoder = nn.ModuleList(double_conv(2 * c, c) for c in deep_to_shallow[1:])
    return encoder, upsample, decoder


def unet_features(
    y: torch.Tensor,
    encoder: nn.ModuleList,
    pool: nn.Module,
    upsample: nn.ModuleList,
    decoder: nn.ModuleList,
    *,
    split_concat: bool = False,
) -> torch.Tensor:
    """The body of :func:`unet_levels` run on a padded input: the last decoder level's features.

    Args:
        split_concat: compute each decoder level's first convolution over the concatenated
            ``[upsampled, skip]`` as two convolutions, one over each part, summed: the same
            function (to float rounding), without the concatenation. For an export: OpenVINO
            runs a channel concatenation of its bf16 channels-last tensors in a reference
            kernel, 5 % of the raw denoiser's time on a 776x1128 window (AMD EPYC, Zen 4).
    """
    skips: list[torch.Tensor] = []
    for level, block in enumerate(encoder):
        if level:
            y = pool(y)
        y = block(y)
        skips.append(y)
    y = skips.pop()
    for up, block in zip(upsample, decoder, strict=True):
        lifted, skip = up(y), skips.pop()
        if not split_concat:
            y = block(torch.cat([lifted, skip], dim=1))
            continue
        assert isinstance(block, nn.Sequential) and isinstance(block[0], nn.Conv2d)
        assert isinstance(up, nn.ConvTranspose2d)
        first, rest = block[0], block[1:]
        # A constant, so that an export slices the weights once, not at every run.
        cut = up.out_channels
        weight = first.weight
        y = F.conv2d(lifted, weight[:, :cut], None, padding=first.padding)
        y = y + F.conv2d(skip, weight[:, cut:], first.bias, padding=first.padding)
        y = rest(y)
    return y


def init_unet(
    encoder: nn.ModuleList,
    upsample: nn.ModuleList,
    decoder: nn.ModuleList,
    generator: torch.Generator | None,
) -> None:
    """He-uniform weights (for the true fan-in) and zero biases for the body's layers."""
    for block in [*encoder, *decoder]:
        for conv in conv_layers(block):
            init_layer(conv, generator, leaky=True)
    for up in upsample.modules():
        if isinstance(up, nn.ConvTranspose2d):
            init_layer(up, generator, leaky=False)


def conv_layers(module: nn.Module) -> Iterator[nn.Conv2d]:
    """The convolutions inside ``module``, in module order."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            yield m


class SIDUNet(nn.Module):
    """SID's U-Net with two per-pixel fully-connected layers before the pixel shuffle.

    The "last two FC layers" of the seed are 1x1 convolutions in :attr:`fc` (``fc.0`` and
    ``fc.2``): a fully-connected layer applied to every pixel's ``3*s*s`` output vector. A dense
    layer over the whole image would fix the input size; per-pixel layers keep the network fully
    convolutional, so it runs on crops during training and on whole frames at inference.

    Input: ``(N, C, h, w)`` packed raw planes, ``C = config.in_channels``, black-subtracted,
    scaled to [0, 1] and amplified (SID clips the amplified input to 1). Any ``h, w >= 1``: the
    input is padded at the bottom and right to a multiple of :data:`PAD_MULTIPLE` (reflected, or
    replicated when the input is too small to reflect) and the output is cropped back.

    Output: ``(N, 3, h * s, w * s)`` sRGB, gamma-encoded, about [0, 1] once trained. It is not
    clamped so the L1 loss keeps its gradient everywhere; clamp it before display. A raw-output
    network (``config.output == "raw"``) gives ``(N, C, h, w)`` denoised packed planes instead,
    through the sRGB curve (:func:`raw_tone`; ``s = 1`` and the shuffle is the identity).
    """

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        w, s, out = config.width, config.upscale, config.out_planes
        widths = [w * 2**i for i in range(LEVELS)]
        self.encoder, self.upsample, self.decoder = unet_levels(config.in_channels, widths)
        self.pool = nn.MaxPool2d(2)
        tail = config.tail_channels
        self.head = nn.Conv2d(w, tail, 1)
        self.fc = nn.Sequential(
            nn.Conv2d(tail, config.fc_hidden, 1),
            _leaky(),
            nn.Conv2d(config.fc_hidden, out * s * s, 1),
        )
        self.shuffle = nn.PixelShuffle(s)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw every weight from ``generator`` (torch's global generator if ``None``)."""
        init_unet(self.encoder, self.upsample, self.decoder, generator)
        init_layer(self.head, generator, leaky=False)
        self.reset_fc(generator)

    def reset_fc(self, generator: torch.Generator | None = None) -> None:
        """Re-draw only the two per-pixel fully-connected layers."""
        fc1, fc2 = conv_layers(self.fc)
        init_layer(fc1, generator, leaky=True)
        init_layer(fc2, generator, leaky=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` packed raw in [0, 1] to ``(N, 3, h*s, w*s)`` sRGB, or to
        ``(N, C, h, w)`` clean planes for a raw-output network (see the class)."""
        c = self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(
                f"expected packed raw planes of shape (N, {c}, h, w), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}")
        h, w = x.shape[-2:]
        s = self.config.upscale
        y = unet_features(
            pad_planes(x, PAD_MULTIPLE), self.encoder, self.pool, self.upsample, self.decoder
        )
        rgb: torch.Tensor = self.shuffle(self.fc(self.head(y)))
        return rgb[..., : h * s, : w * s]


def pad_planes(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(N, C, h, w)`` at the bottom and right so h and w are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return x
    # Reflection avoids a hard edge the network would see as structure, but needs pad < size.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    padded: torch.Tensor = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return padded


def raw_tone(planes: torch.Tensor) -> torch.Tensor:
    """Linear raw planes through the sRGB curve, continued as a straight line below zero.

    A raw-output network gives its planes in this space, and its loss is measured in it: in
    linear light an L1 loss would spend itself on the highlights while the picture's errors show
    in the shadows, which the rendering's tone curve lifts; and a bf16 network's output steps are
    even in this space, where in linear light they would be coarse next to the shadows' values.
    The line below zero keeps a gradient for values that undershoot black.
    """
    knee = 0.0031308
    curve = 1.055 * planes.clamp_min(knee) ** (1 / 2.4) - 0.055
    return torch.where(planes <= knee, 12.92 * planes, curve)


def raw_tail_from_srgb(
    state: Mapping[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """An sRGB network's output layers adapted to a raw-output network of ``config``.

    The output convolution and ``fc1`` are kept as they are; ``fc2`` becomes its rows averaged
    over each colour's ``s*s`` sub-pixels, given to every packed plane of that colour. The raw
    network then starts out giving the sRGB network's picture, averaged over each packed pixel,
    as its planes: the same tone curve, and colour-corrected as the raw network's planes are.
    The sub-pixels are averaged because which of them a plane's sample sits on depends on the
    file's CFA layout, which the network is not told.

    Args:
        state: the sRGB network's ``state_dict`` (the ``head.`` and ``fc.`` entries are used).
        config: the raw-output network's config (same ``in_channels`` and ``fc_hidden``).

    Returns:
        ``head.*`` and ``fc.*`` weights for the raw-output network.
    """
    s = _UPSCALE[config.in_channels]
    weight, bias = state["fc.2.weight"], state["fc.2.bias"]
    rows = [slice(c * s * s, (c + 1) * s * s) for c in range(3)]
    colors = plane_colors(config.in_channels)
    tail = {k: v.clone() for k, v in state.items() if k.startswith(("head.", "fc.0."))}
    tail["fc.2.weight"] = torch.stack([weight[rows[c]].mean(dim=0) for c in colors])
    tail["fc.2.bias"] = torch.stack([bias[rows[c]].mean() for c in colors])
    return tail


def build_model(config: ModelConfig, generator: torch.Generator | None = None) -> SIDUNet:
    """The SID U-Net with per-pixel FC layers for ``config``, weights drawn from ``generator``.

    The same generator seed gives the same weights; ``None`` uses torch's global generator.
    """
    return SIDUNet(config, generator)


def fc_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters of the two per-pixel fully-connected layers, in model order."""
    return [name for name, _ in model.named_parameters() if name.startswith(FC_PREFIX)]


def reset_fc(model: SIDUNet, generator: torch.Generator) -> None:
    """Re-initialise exactly the two per-pixel FC layers from ``generator``, in place.

    Transfer learning starts the retrained layers afresh; the same seed gives the same weights.
    """
    model.reset_fc(generator)


def to_channels_last(model: SIDUNet) -> SIDUNet:
    """Move ``model``'s 4-D weights to channels-last memory, in place; return it.

    On CPU this roughly halves the time of a forward pass; feed it inputs made with
    ``x.contiguous(memory_format=torch.channels_last)``.
    """
    # torch's stubs omit ``memory_format`` from Module.to, although it is accepted at runtime.
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
