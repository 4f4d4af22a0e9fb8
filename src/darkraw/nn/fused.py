"""An inference-only forward pass of the SID U-Net for CPUs, with oneDNN's fused kernels.

:meth:`darkraw.nn.model.SIDUNet.forward` runs every 3x3 convolution and its LeakyReLU as two
operators. At inference on a CPU the LeakyReLU is a pass over memory of its own: under bf16
autocast it took 18 % of the time of a 768x768 packed tile (torch profiler, Zen 5). oneDNN
applies it inside the convolution as a post-op instead (``mkldnn::_convolution_pointwise``,
the kernel torch's own compiler emits for this pattern), so :class:`FusedUNet` does the same
arithmetic as the module in one pass per convolution.

Precision: the body runs in the compute dtype (bf16 or fp32); the output convolution and the two
per-pixel FC layers always run in fp32. Their output *is* the picture, and bf16 keeps 8
significant bits, which would put 16-bit TIFF output on a grid of 1/256 near white; they are
about 1.5 % of the multiply-adds.

:func:`fused_available` says whether the fused kernel exists (torch built with oneDNN, CPU);
where it does not, :func:`darkraw.nn.infer.run_network` runs the module under autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from darkraw.nn.model import LEAKY_SLOPE, PAD_MULTIPLE, SIDUNet, conv_layers, pad_planes


def _fused_op() -> Callable[..., torch.Tensor] | None:
    try:
        op: Callable[..., torch.Tensor] = torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None
    return op


def fused_available(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether :class:`FusedUNet` can run on ``device`` in ``dtype``: a CPU, a torch with
    oneDNN, and for bf16 a CPU whose instructions oneDNN's bf16 kernels need (AVX-512 BW/VL/DQ
    or AVX-NE-CONVERT; on others it refuses, and autocast emulates bf16 instead)."""
    if device.type != "cpu" or not torch.backends.mkldnn.enabled or _fused_op() is None:
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


class _ConvLeaky:
    """A 3x3 convolution and LeakyReLU as one oneDNN call, weights in the compute layout."""

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype, memory: torch.memory_format) -> None:
        self.weight = conv.weight.detach().to(dtype).contiguous(memory_format=memory)
        bias = conv.bias
        self.bias = None if bias is None else bias.detach().to(dtype)
        self.padding = [int(p) for p in conv.padding]
        self.op = _fused_op()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert self.op is not None
        return self.op(
            x, self.weight, self.bias, self.padding, [1, 1], [1, 1], 1, "leaky_relu",
            [LEAKY_SLOPE], "",
        )  # fmt: skip


def _double(block: nn.Module, dtype: torch.dtype, memory: torch.memory_format) -> list[_ConvLeaky]:
    return [_ConvLeaky(conv, dtype, memory) for conv in conv_layers(block)]


class FusedUNet:
    """``model``'s forward pass for inference on a CPU, in ``dtype`` (see the module).

    Built from a :class:`~darkraw.nn.model.SIDUNet` (its weights are copied, converted once); call
    it like the module. Equal to ``model(x)`` within float rounding in fp32
    (``tests/nn/test_fused.py``).
    """

    def __init__(self, model: SIDUNet, dtype: torch.dtype, channels_last: bool) -> None:
        memory = torch.channels_last if channels_last else torch.contiguous_format
        self.dtype = dtype
        self.memory = memory
        self.encoder = [_double(block, dtype, memory) for block in model.encoder]
        self.decoder = [_double(block, dtype, memory) for block in model.decoder]
        self.upsample = [
            (
                up.weight.detach().to(dtype).contiguous(memory_format=memory),
                None if up.bias is None else up.bias.detach().to(dtype),
            )
            for up in model.upsample
            if isinstance(up, nn.ConvTranspose2d)
        ]
        # The picture-making tail, in fp32 (see the module docstring), as matrices on
        # channels-last pixels. The output convolution and the first FC layer have no
        # non-linearity between them, so they are one matrix: x @ H @ F1 = x @ (H @ F1).
        fc1, fc2 = conv_layers(model.fc)
        head_m, head_b = _matrix(model.head)
        fc1_m, fc1_b = _matrix(fc1)
        self.tail_in = head_m @ fc1_m
        self.tail_in_bias = head_b @ fc1_m + fc1_b
        self.tail_out, self.tail_out_bias = _matrix(fc2)
        self.upscale = model.config.upscale
        self.out_planes = model.config.out_planes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = pad_planes(x, PAD_MULTIPLE).to(self.dtype).contiguous(memory_format=self.memory)
        skips: list[torch.Tensor] = []
        for level, (first, second) in enumerate(self.encoder):
            if level:
                y = F.max_pool2d(y, 2)
            y = second(first(y))
            skips.append(y)
        y = skips.pop()
        for (weight, bias), (first, second) in zip(self.upsample, self.decoder, strict=True):
            up = F.conv_transpose2d(y, weight, bias, stride=2)
            y = second(first(torch.cat([up, skips.pop()], dim=1)))
        return self._tail(y, h, w)

    def _tail(self, y: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Output convolution, FC layers and depth-to-space, a band of rows at a time: the
        64-channel fp32 hidden layer of a whole tile would be a pass through main memory."""
        s, planes = self.upscale, self.out_planes
        n, _, _, width = y.shape
        pixels = y.permute(0, 2, 3, 1)  # a view when y is channels-last
        out = torch.empty(n, planes, h * s, w * s)
        for r0 in range(0, h, _TAIL_ROWS):
            r1 = min(h, r0 + _TAIL_ROWS)
            band = pixels[:, r0:r1].reshape(-1, pixels.shape[-1]).float()
            hidden = torch.addmm(self.tail_in_bias, band, self.tail_in)
            rgb = torch.addmm(self.tail_out_bias, F.leaky_relu_(hidden, LEAKY_SLOPE), self.tail_out)
            # Depth-to-space: channel c * s * s + i * s + j goes to pixel (s * y + i, s * x + j).
            rgb = rgb.view(n, r1 - r0, width, planes, s, s)[:, :, :w].permute(0, 3, 1, 4, 2, 5)
            out[:, :, s * r0 : s * r1].view(n, planes, r1 - r0, s, w, s).copy_(rgb)
        return out


#: Rows of the tail's bands: a 64-channel fp32 band of a 1024-wide tile is 16 MiB, in cache.
_TAIL_ROWS = 64


def _matrix(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x1 convolution as ``(in, out)`` fp32 matrix and bias: ``x @ m + b`` per pixel."""
    m = conv.weight.detach().float()[:, :, 0, 0].t().contiguous()
    b = conv.bias.detach().float() if conv.bias is not None else torch.zeros(m.shape[1])
    return m, b
