"""Quantisation-aware fine-tuning of the raw denoiser for ONNX Runtime's int8 CPU kernels.

Post-training int8 (``scripts/quantize_denoiser.py``) loses up to a dB on the Sony groups and
leaves grain in dark flat areas: the graph returns a correction that must cancel the noise to
well under its own size, and rounding every full-resolution tensor to 8 bits adds noise of its
own. Here the torch network is fine-tuned with that rounding in its forward pass, as ONNX
Runtime will run it, so that the weights learn to live with it (QAT; LSQ, Esser et al., ICLR
2020, for the learned activation ranges), and is then exported as a QDQ graph that ONNX Runtime
fuses into ``QLinearConv`` & co.

What is quantised how (:class:`QATDenoiser`; which convolutions are int8 is
:class:`QuantSettings`' choice, and :meth:`QATDenoiser.quant_points` derives the rest):

- an int8 convolution's weights: int8, symmetric, per output channel (scale ``max|w| / 127``,
  recomputed from the weights at each step); its bias int32 at the scale ``input scale *
  weight scale``, as ``QLinearConv`` takes it. The 2x2 stride-2 transposed convolutions run
  as the equivalent 1x1 convolution and pixel shuffle (ONNX Runtime has no int8 transposed
  convolution: in fp32 it took a quarter of the int8 graph's time);
- every activation tensor that an int8 operator reads or writes: uint8, asymmetric, per tensor
  (ONNX Runtime's QDQ default). Max-pooling keeps its input's grid (the same quantiser is
  applied after it, so ONNX Runtime pools the uint8 tensor). Ranges start from observers on
  calibration batches (a high percentile, as the post-training attempt found better than
  min/max) and are then learned (LSQ: scale and zero point trained with the weights);
- kept in fp32 by default (``QuantSettings()``): the finest level of the U-Net, the first and
  the output convolution included. Measured (``scripts/qat_denoiser.py``, validation crops of
  the recipe): every level below it in int8 costs 0.1 dB of rendered PSNR before fine-tuning
  and 0.03 after; rounding the finest level's tensors to 8 bits cost 2.1 dB before and 1.3
  after 550 steps, spread over all of its nine rounding points, and left colour grain in dark
  flat areas. Keeping only the first and last convolutions in fp32 (``fp32_levels=0``; the
  network's input cannot be rounded, since the runtime adds the *unrounded* planes to the
  correction and the rounding would reach the output whole) is the fastest form, but fails.
  The finest level is a third of the multiply-adds.

The export (:func:`export_qat_onnx`) traces the network with torch's legacy exporter, which
writes each fake quantisation as a QuantizeLinear/DequantizeLinear pair; the weights are then
stored as int8 initialisers and the biases as int32 ones, the form ONNX Runtime's QDQ fusion
looks for (without it, ONNX Runtime quantises fp32 weights itself, with scales of its own).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from darkraw.nn.denoiser import DenoiserConfig, RawDenoiser
from darkraw.nn.model import LEAKY_SLOPE, pad_planes

#: uint8 activations, ONNX Runtime's QDQ default.
ACT_MIN, ACT_MAX = 0, 255
#: int8 weights, symmetric: the scale maps ``max|w|`` to 127 so that -128 is never used (and
#: the u8 x s8 products of VNNI cannot saturate).
W_MIN, W_MAX = -128, 127
W_LEVEL = 127.0

#: Observers keep at most this many samples of a tensor per batch for its percentiles
#: (``torch.quantile`` refuses inputs of over 16 million elements).
_OBSERVED_SAMPLES = 1 << 22


@dataclass(frozen=True)
class QuantSettings:
    """How :class:`QATDenoiser` quantises.

    Attributes:
        percentile: the observers' range of a tensor is the mean over calibration batches of
            its ``100 - percentile`` and ``percentile`` percentiles (100: min and max).
        learn_ranges: train the activation scales and zero points (LSQ) or keep them frozen.
        fp32_input: keep the first convolution (and so the network's input) in fp32.
        fp32_output: keep the output convolution's input and weights in fp32 (its output, the
            correction, is fp32 either way: the graph's output is not quantised).
        fp32_levels: keep this many of the U-Net's finest levels in fp32 (their encoder and
            decoder convolutions; the upsampling into the finest kept level stays int8).
        fp32_convs: more convolutions kept in fp32, by module name (``decoder.2.2``).
    """

    percentile: float = 99.99
    learn_ranges: bool = True
    fp32_input: bool = True
    fp32_output: bool = True
    fp32_levels: int = 1
    fp32_convs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "fp32_convs", tuple(self.fp32_convs))
        if self.fp32_levels < 0:
            raise ValueError(f"fp32_levels must be >= 0, got {self.fp32_levels}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")


class ActQuant(nn.Module):
    """Per-tensor uint8 fake quantisation with a learned scale and zero point (LSQ+).

    Three modes: observing (records the tensor's range, passes it through), training (torch's
    learnable fake quantisation: gradients reach the input by the straight-through estimator
    and the scale and zero point by LSQ's), and evaluation (plain fake quantisation with the
    zero point rounded, which the ONNX exporter writes as QuantizeLinear/DequantizeLinear).
    The scale is stored as its logarithm so that one Adam rate moves every scale by the same
    fraction, whatever its size.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.zero_point = nn.Parameter(torch.zeros(1))
        self.observing = False
        self.quantising = True
        self.percentile = 100.0
        self._seen: list[tuple[float, float]] = []

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x)
            return x
        if not self.quantising:
            return x
        if self.training and self.log_scale.requires_grad:
            # LSQ's gradient scale keeps the range's steps in proportion with the weights'.
            grad = 1.0 / math.sqrt(x.numel() * ACT_MAX)
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, self.scale, self.zero_point, ACT_MIN, ACT_MAX, grad
            )
        # Python numbers: the exporter writes them as constants of the QDQ pair.
        scale, zero = self.frozen()
        return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero), ACT_MIN, ACT_MAX)

    def frozen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale (float32) and zero point (int32, within 0..255) as ONNX Runtime uses them."""
        scale = self.scale.detach().float().reshape(())
        zero = self.zero_point.detach().round().clamp(ACT_MIN, ACT_MAX).to(torch.int32)
        return scale, zero.reshape(())

    def _observe(self, x: torch.Tensor) -> None:
        flat = x.detach().float().flatten()
        if flat.numel() > _OBSERVED_SAMPLES:
            flat = flat[:: math.ceil(flat.numel() / _OBSERVED_SAMPLES)]
        if self.percentile >= 100.0:
            lo, hi = float(flat.min()), float(flat.max())
        else:
            q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0])
            lo, hi = (float(v) for v in torch.quantile(flat, q))
        self._seen.append((lo, hi))

    def set_range(self, lo: float, hi: float) -> None:
        """Scale and zero point that cover ``[lo, hi]`` (widened to hold 0, exactly
        representable as ONNX requires)."""
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = max(hi - lo, 1e-6) / (ACT_MAX - ACT_MIN)
        with torch.no_grad():
            self.log_scale.fill_(math.log(scale))
            self.zero_point.fill_(float(np.clip(round(-lo / scale), ACT_MIN, ACT_MAX)))

    def finish_observing(self) -> tuple[float, float]:
        """Set the range from the batches seen (mean of their ranges) and stop observing."""
        if not self._seen:
            raise RuntimeError("no calibration batch reached this quantiser")
        lo = float(np.mean([s[0] for s in self._seen]))
        hi = float(np.mean([s[1] for s in self._seen]))
        self.set_range(lo, hi)
        self._seen.clear()
        self.observing = False
        return lo, hi


def weight_scale(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel symmetric int8 scales of ``weight`` along ``axis`` (its output channels)."""
    dims = [d for d in range(weight.ndim) if d != axis]
    return (weight.detach().abs().amax(dim=dims).float() / W_LEVEL).clamp_min(1e-12)


def quantise_weight(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """``weight`` rounded to its per-channel int8 grid (gradient straight through)."""
    scale = weight_scale(weight, axis)
    zero = torch.zeros(scale.shape, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, axis, W_MIN, W_MAX)


def quantise_bias(bias: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``bias`` rounded to the int32 grid ``scale`` (input scale times weight scales), as
    ``QLinearConv`` adds it; the rounding is passed straight through."""
    step = scale.detach()
    return bias + (torch.round(bias / step) * step - bias).detach()


class QATDenoiser(RawDenoiser):
    """A :class:`RawDenoiser` whose :meth:`raw_correction` runs as ONNX Runtime will run its
    int8 QDQ export (see the module docstring for what is quantised how).

    The weights keep :class:`RawDenoiser`'s names, so the fp32 network's state dict loads
    (``strict=False``: the quantisers' ranges are extra), and everything built on
    :class:`RawDenoiser` (:meth:`forward`, the training loss's ``forward_parts``, validation)
    takes it.
    """

    def __init__(
        self,
        config: DenoiserConfig,
        generator: torch.Generator | None = None,
        settings: QuantSettings | None = None,
    ) -> None:
        super().__init__(config, generator)
        self.settings = settings or QuantSettings()
        self._fp32 = self.fp32_convs()
        self.quant = nn.ModuleDict({name: ActQuant() for name in self.quant_points()})
        self._frozen: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] | None
        self._frozen = None

    def freeze(self) -> None:
        """Fix each int8 convolution's weights, scales and rounded bias as plain tensors (for
        tracing: see :meth:`_int8_conv`); :meth:`thaw` undoes it."""
        self.eval()
        self._frozen = None
        captured: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        original = self._int8_conv

        def capture(
            key: nn.Module,
            weight: torch.Tensor,
            bias: torch.Tensor | None,
            y: torch.Tensor,
            y_scale: torch.Tensor,
            padding: tuple[int, ...] | int,
        ) -> torch.Tensor:
            with torch.no_grad():
                raw = weight.detach().clone()
                scale = weight_scale(raw, 0)
                rounded = None
                if bias is not None:
                    step = y_scale.detach().reshape(()) * scale
                    rounded = torch.round(bias.detach() / step) * step
            captured[id(key)] = (raw, scale, rounded)
            return original(key, weight, bias, y, y_scale, padding)

        self._int8_conv = capture  # type: ignore[method-assign]
        try:
            with torch.no_grad():
                self.raw_correction(torch.zeros(1, self.config.in_channels, 8, 8))
        finally:
            del self._int8_conv
        self._frozen = captured

    def thaw(self) -> None:
        self._frozen = None

    def fp32_convs(self) -> set[str]:
        """Module names of the convolutions kept in fp32 (``encoder.0.0``, ``out``, ...)."""
        levels, settings = self.config.levels, self.settings
        names = set(settings.fp32_convs)
        if settings.fp32_input:
            names.add("encoder.0.0")
        if settings.fp32_output:
            names.add("out")
        for level in range(min(settings.fp32_levels, levels)):
            names |= {f"encoder.{level}.0", f"encoder.{level}.2"}
            if level < levels - 1:
                index = levels - 2 - level
                names |= {f"decoder.{index}.0", f"decoder.{index}.2"}
                if level + 1 < settings.fp32_levels:
                    names.add(f"upsample.{index}")
        return names

    def quant_points(self) -> list[str]:
        """Names of the activation quantisers, in the order the forward pass reaches them.

        This list is the whole policy: :meth:`raw_correction` rounds a tensor where its point
        exists and runs a convolution in int8 where its input was rounded. A tensor is rounded
        where an int8 operator writes it (``QLinearConv`` writes uint8) or reads it, and
        nowhere else: an fp32 convolution's input is not, even beside an int8 one (a pooled
        fp32 tensor gets a point of its own, ``pool_N``).
        """
        levels, fp32 = self.config.levels, self.fp32_convs()

        def int8(name: str) -> bool:
            return name not in fp32

        names: list[str] = ["input"] if int8("encoder.0.0") else []
        for level in range(levels):
            block = f"encoder.{level}"
            if level and int8(f"{block}.0") and f"encoder_{level - 1}_act1" not in names:
                names.append(f"pool_{level}")
            if int8(f"{block}.0"):
                names.append(f"encoder_{level}_conv0")
            if int8(f"{block}.2"):
                names += [f"encoder_{level}_act0", f"encoder_{level}_conv1"]
            # Read by the concatenation of its level's decoder block (or, the deepest, by the
            # first upsampling); the pooled copy has its own point when only it is int8.
            if level == levels - 1:
                reader = "upsample.0" if levels > 1 else "out"
            else:
                reader = f"decoder.{levels - 2 - level}.0"
            if int8(reader):
                names.append(f"encoder_{level}_act1")
        for index in range(levels - 1):
            block = f"decoder.{index}"
            if int8(f"upsample.{index}"):
                names.append(f"upsample_{index}")
            if int8(f"{block}.0"):
                names += [f"concat_{index}", f"decoder_{index}_conv0"]
            if int8(f"{block}.2"):
                names += [f"decoder_{index}_act0", f"decoder_{index}_conv1"]
            reader = f"upsample.{index + 1}" if index < levels - 2 else "out"
            if int8(reader):
                names.append(f"decoder_{index}_act1")
        return names

    def quantisers(self) -> Iterator[ActQuant]:
        for module in self.quant.values():
            assert isinstance(module, ActQuant)
            yield module

    def raw_correction(self, x: torch.Tensor, *, split_concat: bool = False) -> torch.Tensor:
        # split_concat is for the fp32 export's graph; the int8 graph keeps its concatenations.
        # Split at the fp32 top level, a convolution would read the dequantised upsampling,
        # which the export takes for an int8 convolution (quantise_conv_weights) as ONNX
        # Runtime's fusion would.
        c = self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"expected input of shape (N, {c}, h, w), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        # ``scale`` is that of the grid ``y`` lies on, None while ``y`` is fp32.
        y, scale = self._act("input", pad_planes(x.float(), self.config.pad_multiple))
        skips: list[torch.Tensor] = []
        for level, block in enumerate(self.encoder):
            if level:
                y = self.pool(y)
                if f"encoder.{level}.0" in self._fp32:
                    scale = None
                elif scale is not None:
                    # Max of values on one grid is on that grid: the same quantiser after the
                    # pool is exact and lets ONNX Runtime pool the uint8 tensor directly.
                    y, scale = self._act(f"encoder_{level - 1}_act1", y)
                else:
                    y, scale = self._act(f"pool_{level}", y)
            y, scale = self._double(block, y, scale, f"encoder_{level}", f"encoder.{level}")
            skips.append(y)
        y = skips.pop()
        for index, (up, block) in enumerate(zip(self.upsample, self.decoder, strict=True)):
            assert isinstance(up, nn.ConvTranspose2d)
            fp32_up = f"upsample.{index}" in self._fp32
            u = self._upsample(up, y, None if fp32_up else scale, f"upsample_{index}")
            y, scale = self._act(f"concat_{index}", torch.cat([u, skips.pop()], dim=1))
            y, scale = self._double(block, y, scale, f"decoder_{index}", f"decoder.{index}")
        if "out" in self._fp32 or scale is None:
            out = self.out(y)
        else:
            out = self._conv_raw(self.out, y, scale)
        correction: torch.Tensor = out[..., :h, :w].float()
        return correction

    def _q(self, name: str) -> ActQuant:
        module = self.quant[name]
        assert isinstance(module, ActQuant)
        return module

    def _act(self, name: str, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``y`` rounded by the quantiser ``name`` and its scale, or as it is and None where
        there is no such point."""
        if name not in self.quant:
            return y, None
        q = self._q(name)
        out: torch.Tensor = q(y)
        return out, q.scale

    def _layer(
        self,
        conv: nn.Conv2d,
        y: torch.Tensor,
        scale: torch.Tensor | None,
        name: str,
        module: str,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``conv`` (module name ``module``) in fp32 or in int8 on the quantised ``y`` (of
        grid ``scale``), its output rounded at ``name`` where that point exists."""
        if module in self._fp32:
            return self._act(name, conv(y))
        if scale is None:
            raise RuntimeError(f"{module}: an int8 convolution needs a quantised input")
        return self._act(name, self._conv_raw(conv, y, scale))

    def _double(
        self,
        block: nn.Module,
        y: torch.Tensor,
        scale: torch.Tensor | None,
        name: str,
        module: str,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        conv0, conv1 = block[0], block[2]  # type: ignore[index]
        assert isinstance(conv0, nn.Conv2d) and isinstance(conv1, nn.Conv2d)
        y, scale = self._layer(conv0, y, scale, f"{name}_conv0", f"{module}.0")
        y, scale = self._act(f"{name}_act0", F.leaky_relu(y, LEAKY_SLOPE))
        y, scale = self._layer(conv1, y, scale, f"{name}_conv1", f"{module}.2")
        return self._act(f"{name}_act1", F.leaky_relu(y, LEAKY_SLOPE))

    def _conv_raw(self, conv: nn.Conv2d, y: torch.Tensor, y_scale: torch.Tensor) -> torch.Tensor:
        padding = conv.padding
        assert not isinstance(padding, str)  # the U-Net's convolutions pad by a number
        return self._int8_conv(conv, conv.weight, conv.bias, y, y_scale, padding)

    def _upsample(
        self, up: nn.ConvTranspose2d, y: torch.Tensor, y_scale: torch.Tensor | None, name: str
    ) -> torch.Tensor:
        """The 2x2 stride-2 transposed convolution as the 1x1 convolution to its 4 outputs per
        channel and a pixel shuffle (the same sums): ONNX Runtime's CPU provider has an int8
        convolution but no int8 transposed one, which measured a quarter of the int8 graph's
        time in fp32. Its weights are quantised per output of the 1x1 convolution (channel and
        tap), a finer grid than per channel."""
        if y_scale is None:
            fp32: torch.Tensor = up(y)
            return fp32
        r = up.stride[0]
        if tuple(up.kernel_size) != (r, r) or tuple(up.stride) != (r, r) or any(up.padding):
            raise ValueError("only a k x k transposed convolution of stride k is supported")
        c_in, c_out = up.weight.shape[:2]
        # Output channel o*r*r + a*r + b of the 1x1 convolution is tap (a, b) of channel o,
        # the order in which pixel_shuffle (ONNX DepthToSpace, CRD) places it.
        weight = up.weight.permute(1, 2, 3, 0).reshape(c_out * r * r, c_in, 1, 1)
        bias = None if up.bias is None else up.bias.repeat_interleave(r * r)
        q = self._q(name)
        # The shuffle moves values on q's grid, so applying q again after it changes nothing;
        # in the graph it lets ONNX Runtime shuffle the uint8 tensor.
        out: torch.Tensor = q(
            F.pixel_shuffle(q(self._int8_conv(up, weight, bias, y, y_scale, 0)), r)
        )
        return out

    def _int8_conv(
        self,
        key: nn.Module,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        y: torch.Tensor,
        y_scale: torch.Tensor,
        padding: tuple[int, ...] | int,
    ) -> torch.Tensor:
        """``conv2d`` with ``weight`` on its int8 grid (per output channel) and ``bias`` on the
        int32 grid of ``y_scale`` times the weight scales, as ``QLinearConv`` computes."""
        frozen = self._frozen.get(id(key)) if self._frozen is not None else None
        if frozen is None:
            scale = weight_scale(weight, 0)
            quantised = quantise_weight(weight, 0)
            if bias is not None:
                bias = quantise_bias(bias, y_scale.reshape(()) * scale)
        else:
            # Constants to the tracer: the weights' QuantizeLinear gets constant inputs, which
            # the export folds into int8, and the bias (already on its grid) is a constant.
            raw, scale, bias = frozen
            zero = torch.zeros(scale.shape, dtype=torch.int32)
            quantised = torch.fake_quantize_per_channel_affine(raw, scale, zero, 0, W_MIN, W_MAX)
        return F.conv2d(y, quantised, bias, padding=padding)


def qat_denoiser(fp32: RawDenoiser, settings: QuantSettings | None = None) -> QATDenoiser:
    """A :class:`QATDenoiser` holding ``fp32``'s weights (ranges not yet calibrated)."""
    model = QATDenoiser(fp32.config, settings=settings)
    missing, unexpected = model.load_state_dict(fp32.state_dict(), strict=False)
    if unexpected or any(not k.startswith("quant.") for k in missing):
        raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    return model


def calibrate(model: QATDenoiser, batches: Sequence[torch.Tensor]) -> dict[str, list[float]]:
    """Set every activation range from fp32 forward passes over ``batches`` (network inputs).

    Returns:
        Each quantiser's observed ``[lo, hi]``.
    """
    was_training = model.training
    model.eval()
    for q in model.quantisers():
        q.observing, q.percentile = True, model.settings.percentile
    with torch.no_grad():
        for x in batches:
            model.raw_correction(x)
    ranges = {name: list(q.finish_observing()) for name, q in model.quant.items()}  # type: ignore[operator]
    model.train(was_training)
    return ranges


def set_learning_ranges(model: QATDenoiser, learn: bool) -> None:
    for q in model.quantisers():
        q.log_scale.requires_grad_(learn)
        q.zero_point.requires_grad_(learn)


def clamp_ranges(model: QATDenoiser) -> None:
    """Keep learned zero points within uint8 after an optimiser step."""
    with torch.no_grad():
        for q in model.quantisers():
            q.zero_point.clamp_(ACT_MIN, ACT_MAX)


# ---------------------------------------------------------------------------------------------
# ONNX export


class _CorrectionGraph(nn.Module):
    """What the exported graph computes: :meth:`RawDenoiser.raw_correction`."""

    def __init__(self, model: QATDenoiser) -> None:
        super().__init__()
        self.model = model

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.model.raw_correction(raw)


#: An odd size puts the padding to a multiple of 8 in the traced graph (as the fp32 export).
_TRACE_SIZE = (37, 53)


def export_qat_onnx(
    model: QATDenoiser,
    path: str | Path,
    *,
    metadata: Mapping[str, str],
    opset: int = 17,
) -> Path:
    """Write ``model`` as an int8 QDQ ONNX graph with ``metadata`` as its ``metadata_props``.

    ``metadata`` should be the fp32 export's (config, card, output, weights) plus
    ``darkraw.precision``; :func:`darkraw.nn.runtime.load_onnx_denoiser` reads the file as it
    reads that one.
    """
    import warnings

    import onnx
    from torch.jit._trace import TracerWarning

    from darkraw.raw.fileio import atomic_output

    path = Path(path)
    model.freeze()
    example = torch.rand(
        1, model.config.in_channels, *_TRACE_SIZE, generator=torch.Generator().manual_seed(0)
    )
    with atomic_output(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                _CorrectionGraph(model),
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["raw"],
                output_names=["correction"],
                dynamic_axes={
                    "raw": {0: "batch", 2: "height", 3: "width"},
                    "correction": {0: "batch", 2: "out_height", 3: "out_width"},
                },
            )
        model.thaw()
        proto = onnx.load(str(tmp))
        fold_constant_quantisation(proto)
        quantise_conv_weights(proto)
        quantise_conv_biases(proto)
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


def _constants(graph: Any) -> dict[str, np.ndarray]:
    """Every constant of ``graph`` by name: initialisers and Constant nodes' outputs."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _axis(node: Any) -> int:
    for attr in node.attribute:
        if attr.name == "axis":
            return int(attr.i)
    return 1  # ONNX's default for QuantizeLinear/DequantizeLinear


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along ``axis`` of an ``ndim``-D tensor."""
    if values.ndim == 0:
        return values
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def fold_constant_quantisation(proto: Any) -> int:
    """Replace each QuantizeLinear of a constant (the weights) by its int8 result, an
    initialiser: ONNX Runtime's fusion wants ``int8 initialiser -> DequantizeLinear -> Conv``.

    The rounding is torch's (multiply by the reciprocal scale, round half to even), so the
    stored integers are the ones the fake-quantised torch network used. Returns the count.
    """
    from onnx import numpy_helper

    graph = proto.graph
    constants = _constants(graph)
    keep, folded = [], 0
    for node in graph.node:
        inputs = list(node.input)
        if node.op_type == "QuantizeLinear" and all(i in constants for i in inputs if i):
            x = constants[inputs[0]].astype(np.float32)
            scale = _along(constants[inputs[1]].astype(np.float32), _axis(node), x.ndim)
            zero = np.asarray(
                constants[inputs[2]] if len(inputs) > 2 and inputs[2] else np.uint8(0)
            )
            info = np.iinfo(zero.dtype)
            zero_b = _along(zero.astype(np.int64), _axis(node), x.ndim)
            q = np.rint(x * (np.float32(1.0) / scale)).astype(np.int64) + zero_b
            q = np.clip(q, info.min, info.max).astype(zero.dtype)
            graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
            folded += 1
            continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    _drop_unused_constants(graph)
    return folded


def quantise_conv_weights(proto: Any) -> int:
    """Store as int8 (per output channel, symmetric) the fp32 weights of each convolution
    whose input is dequantised: torch's exporter folds the fake quantisation of a constant
    weight into its fp32 result, which lies on the int8 grid, so the integers are recovered
    exactly (the scale ``max|w| / 127`` to within a rounding of float32). Without this ONNX
    Runtime would quantise those weights itself, with scales of its own. Returns the count."""
    graph = proto.graph
    constants = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    added = []
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        x_dq = producers.get(node.input[0])
        name = node.input[1]
        if x_dq is None or x_dq.op_type != "DequantizeLinear" or name not in constants:
            continue
        if constants[name].dtype.kind != "f":
            continue  # stored as integers already
        weight = constants[name].astype(np.float32)
        axis = 1 if node.op_type == "ConvTranspose" else 0
        dims = tuple(d for d in range(weight.ndim) if d != axis)
        scale = np.maximum(np.abs(weight).max(axis=dims) / np.float32(W_LEVEL), 1e-12)
        scale = scale.astype(np.float32)
        q = np.rint(weight / _along(scale, axis, weight.ndim))
        q = np.clip(q, W_MIN, W_MAX).astype(np.int8)
        base = f"{node.name or name}_weight"
        added.append(_dequantized(graph, base, q, scale, axis))
        node.input[1] = f"{base}_dq"
    _put_first(graph, added)
    return len(added)


def quantise_conv_biases(proto: Any) -> int:
    """Store each int8 convolution's fp32 bias as int32 at scale ``input scale * weight
    scale`` behind a DequantizeLinear, which ``QLinearConv`` needs (an fp32 bias stops ONNX
    Runtime's fusion). The torch network rounded the bias to that grid already, so the
    integers are exact. Returns the count."""
    graph = proto.graph
    constants = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    added = []
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 3:
            continue
        x_dq, w_dq = producers.get(node.input[0]), producers.get(node.input[1])
        bias_name = node.input[2]
        if (
            x_dq is None
            or w_dq is None
            or x_dq.op_type != "DequantizeLinear"
            or w_dq.op_type != "DequantizeLinear"
            or bias_name not in constants
        ):
            continue
        x_scale = constants[x_dq.input[1]].astype(np.float32).reshape(())
        w_scale = constants[w_dq.input[1]].astype(np.float32).reshape(-1)
        scale = (x_scale * w_scale).astype(np.float32)
        bias = constants[bias_name].astype(np.float32)
        q = np.rint(bias / scale).astype(np.int32)
        base = f"{node.name or bias_name}_bias"
        added.append(_dequantized(graph, base, q, scale, 0))
        node.input[2] = f"{base}_dq"
    _put_first(graph, added)
    return len(added)


def _dequantized(graph: Any, base: str, q: np.ndarray, scale: np.ndarray, axis: int) -> Any:
    """Add integers ``q`` (int8 or int32), their ``scale`` per channel along ``axis`` and a
    zero point of 0 as initialisers named after ``base``; return the DequantizeLinear node
    reading them, whose output is ``{base}_dq``."""
    from onnx import helper, numpy_helper

    ints = f"{base}_{q.dtype.name}"
    graph.initializer.extend(
        [
            numpy_helper.from_array(q, ints),
            numpy_helper.from_array(scale, f"{base}_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, q.dtype), f"{base}_zero"),
        ]
    )
    return helper.make_node(
        "DequantizeLinear",
        [ints, f"{base}_scale", f"{base}_zero"],
        [f"{base}_dq"],
        name=f"{base}_DequantizeLinear",
        axis=axis,
    )


def _put_first(graph: Any, nodes: list[Any]) -> None:
    """Put ``nodes`` before the graph's others and drop the constants no longer read.

    DequantizeLinear nodes read only initialisers, so putting them first keeps the order valid.
    """
    ordered = [*nodes, *graph.node]
    del graph.node[:]
    graph.node.extend(ordered)
    _drop_unused_constants(graph)


def _drop_unused_constants(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(nodes)


def fused_op_counts(path: str | Path, threads: int = 1) -> dict[str, int]:
    """Operator types in the graph ONNX Runtime actually runs (after its optimisations), to
    check that the convolutions became int8 kernels (``QLinearConv``)."""
    import tempfile

    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # not the warning that the saved graph is CPU-specific
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# Fine-tuning


@dataclass(frozen=True)
class QATRun:
    """A fine-tuning run: the denoiser's training recipe plus the QAT settings.

    Attributes:
        recipe: the YAML config of the fp32 network's training (its data, loss and penalties
            are reused; its ``steps``, rates and folder are not).
        init_from: the fp32 weights to start from (a model file, checkpoint or bundled name).
        out_dir: the run's folder (``checkpoints/``, ``log.jsonl``).
        steps: optimiser steps.
        lr, lr_final, warmup: the weights' Adam rate (cosine decay after a linear warm-up).
        range_lr: Adam rate of the activation ranges' log scales (a fraction per step).
        zero_point_lr: Adam rate of their zero points (in quantisation steps).
        seed: seeds the training pairs (the validation crops stay the recipe's).
        calibration_batches: batches the observers see before training.
        threads: torch's CPU threads.
        workers: data-loading processes.
        log_every, val_every, checkpoint_every: intervals in steps.
    """

    recipe: str = "configs/denoiser_phase4.yaml"
    init_from: str = "default"
    out_dir: str = "/tmp/qat/run"
    steps: int = 900
    lr: float = 3e-5
    lr_final: float = 3e-6
    warmup: int = 30
    range_lr: float = 1e-2
    zero_point_lr: float = 0.2
    seed: int = 1
    calibration_batches: int = 8
    threads: int = 2
    workers: int = 1
    log_every: int = 25
    val_every: int = 300
    checkpoint_every: int = 100


def recipe_config(run: QATRun) -> Any:
    """The recipe's :class:`DenoiserTrainConfig` with this run's steps, rates and folder
    (fp32: the fake quantisation is not meant for bf16)."""
    import yaml

    from darkraw.nn.precision import Precision
    from darkraw.training.train_denoiser import load_denoiser_config

    base = load_denoiser_config(yaml.safe_load(Path(run.recipe).read_text()))
    root = Path(run.recipe).resolve().parent.parent
    # The recipe's data paths are relative to the repository root.
    train = tuple(str(p) if Path(p).is_absolute() else str(root / p) for p in base.train)
    return replace(
        base,
        train=train,
        steps=run.steps,
        lr=run.lr,
        lr_final=run.lr_final,
        warmup=run.warmup,
        out_dir=run.out_dir,
        precision=Precision.FP32,
        threads=run.threads,
        workers=run.workers,
        init_from=run.init_from,
    )


def train_qat(
    run: QATRun,
    settings: QuantSettings,
    *,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> QATDenoiser:
    """Calibrate, then fine-tune with fake quantisation on the recipe's pairs and loss.

    The pairs, the loss (``recipe_loss``: the recipe's raw, mean and coarse weights, on
    ``forward_parts``' output), the learning-rate schedule, the step-indexed batches (so a
    resumed run reads what an uninterrupted one would) and validation are
    :mod:`darkraw.training.train_denoiser`'s own.
    """
    from darkraw.config import to_dict
    from darkraw.nn.checkpoint import (
        checkpoint_name,
        latest_checkpoint,
        load_checkpoint,
        save_checkpoint,
    )
    from darkraw.training.train_denoiser import (
        _StepBatches,
        _synthetic_datasets,
        forward_parts,
        learning_rate,
        recipe_loss,
        start_network,
        validate,
    )

    config = recipe_config(run)
    out = Path(run.out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    torch.set_num_threads(run.threads)
    # Training pairs from a seed of their own; validation crops as the recipe's (seed 0), so
    # the figures compare with the fp32 run's.
    data, _ = _synthetic_datasets(replace(config, seed=run.seed), with_map=True)
    _, val_data = _synthetic_datasets(config, with_map=True)

    def log(entry: dict[str, Any]) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        if on_log is not None:
            on_log(entry)

    fp32 = start_network(run.init_from)
    model = qat_denoiser(fp32, settings)
    newest = latest_checkpoint(ckpt_dir) if resume else None
    # channels_last: mkldnn's convolutions run a third faster in it on the CPU.
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    weights = [p for n, p in model.named_parameters() if not n.startswith("quant.")]
    scales = [p for n, p in model.named_parameters() if n.endswith(".log_scale")]
    zeros = [p for n, p in model.named_parameters() if n.endswith(".zero_point")]
    rates = (run.lr, run.range_lr, run.zero_point_lr)
    optimizer = torch.optim.Adam(
        [{"params": p, "lr": r} for p, r in zip((weights, scales, zeros), rates, strict=True)]
    )
    start = 0
    if newest is not None:
        ckpt = load_checkpoint(newest)
        model.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
        start = ckpt.step
    else:
        (out / "run.json").write_text(
            json.dumps({"run": asdict(run), "settings": asdict(settings)}, indent=2) + "\n"
        )
        log({"step": 0, "fp32": validate(fp32, val_data, None)})
        # Calibration crops come from the far end of the training stream, which the run never
        # reaches, so they are pairs of the same kind that the fine-tune does not train on.
        far = config.steps * config.batch_size
        calib_data, _ = _synthetic_datasets(
            replace(config, seed=run.seed, steps=config.steps * 2), with_map=True
        )
        batches = [
            torch.stack(
                [
                    calib_data[far + b * config.batch_size + i]["input"]
                    for i in range(config.batch_size)
                ]
            )
            for b in range(run.calibration_batches)
        ]
        log({"step": 0, "ranges": calibrate(model, batches)})
        log({"step": 0, "calibrated": validate(model, val_data, None)})

    def save(step: int) -> None:
        save_checkpoint(
            ckpt_dir / checkpoint_name(step),
            model_state=model.state_dict(),
            optimizer_state=optimizer.state_dict(),
            step=step,
            config=to_dict(config),
            extra={"qat": asdict(settings), "run": asdict(run)},
        )

    if newest is None:
        save(0)  # the calibrated network before any training: post-training quantisation
    set_learning_ranges(model, settings.learn_ranges)
    if start >= run.steps:
        return model
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=_StepBatches(start, run.steps, config.batch_size),
        num_workers=run.workers,
        persistent_workers=False,
    )
    model.train()
    t0, losses, step = time.perf_counter(), [], start
    for batch in loader:
        step += 1
        rate = learning_rate(config, step) / run.lr
        for group, base in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = base * rate
        x = batch["input"].contiguous(memory_format=torch.channels_last)
        output, removed = forward_parts(model, x)
        loss = recipe_loss(output, batch, config, removed)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        clamp_ranges(model)
        losses.append(loss.item())
        if step % run.log_every == 0 or step == run.steps:
            elapsed = time.perf_counter() - t0
            log(
                {
                    "step": step,
                    "loss": float(np.mean(losses)),
                    "lr": optimizer.param_groups[0]["lr"],
                    "steps_per_s": (step - start) / elapsed,
                }
            )
            losses.clear()
        if step % run.val_every == 0 or step == run.steps:
            log({"step": step, **validate(model, val_data, None)})
            model.train()
        if step % run.checkpoint_every == 0 or step == run.steps:
            save(step)
    return model


def load_qat(path: str | Path, config: DenoiserConfig, settings: QuantSettings) -> QATDenoiser:
    """A :class:`QATDenoiser` from one of :func:`train_qat`'s checkpoints."""
    from darkraw.nn.checkpoint import load_checkpoint

    model = QATDenoiser(config, settings=settings)
    model.load_state_dict(load_checkpoint(path).model_state)
    return model.eval()


__all__ = [
    "ActQuant",
    "QATDenoiser",
    "QATRun",
    "QuantSettings",
    "calibrate",
    "export_qat_onnx",
    "fold_constant_quantisation",
    "fused_op_counts",
    "load_qat",
    "qat_denoiser",
    "quantise_conv_biases",
    "quantise_conv_weights",
    "train_qat",
]
