"""darkraw's networks as ONNX models, for runtimes without torch: the See-in-the-Dark U-Net (Chen
et al., CVPR 2018) and the raw denoiser (:mod:`darkraw.nn.denoiser`, run by
:mod:`darkraw.nn.runtime`).

The graph is traced by torch's TorchScript-based ("legacy") exporter, which handles the
network's internal padding to a multiple of 16 with dynamic sizes. Its inputs and outputs:

- ``raw``: ``(N, C, h, w)`` float32 packed raw in [0, 1] (``C`` 4 for Bayer, 9 for X-Trans),
  prepared as :func:`darkraw.nn.inputs.network_input` does; ``N``, ``h`` and ``w`` are dynamic,
  ``h, w >= 9`` (the graph always pads by reflection, which needs a pad smaller than the side;
  torch switches to replication below that);
- ``rgb``: ``(N, 3, s*h, s*w)`` float32 sRGB clamped to [0, 1], ``s`` 2 (Bayer) or 3 (X-Trans);
  for a raw-output network (``output: raw`` in its config) ``planes`` instead, ``(N, C, h, w)``
  denoised packed raw clamped to [0, 1], which the runtime's own pipeline renders;
- for the raw denoiser, input ``raw`` is ``(N, C, h, w)`` as
  :func:`darkraw.nn.inputs.denoiser_input` makes it (``h, w >= 5``), and the output
  ``correction`` is ``(N, P, h, w)``: the network's correction before its local mean is removed
  (:meth:`~darkraw.nn.denoiser.RawDenoiser.raw_correction`; the runtime removes the mean and adds
  the noisy planes, in fp32). Its metadata also holds ``darkraw.output`` (``correction``) and
  ``darkraw.weights_sha256`` (the model file it was exported from).

The model config and card travel in the ONNX file's ``metadata_props``
(``darkraw.config``, ``darkraw.card``, JSON). The exported graph matches PyTorch within 1e-4
(measured 1e-6 to 4e-6 on random width-4 networks).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.jit._trace import TracerWarning

from darkraw.errors import DarkrawError, OutputError
from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import resolve_model
from darkraw.nn.model import SIDUNet
from darkraw.nn.modelfiles import (
    is_model_file,
    json_entry,
    model_card,
    model_source,
    read_metadata,
)
from darkraw.nn.runtime import CARD_KEY, CONFIG_KEY, OUTPUT_KEY, WEIGHTS_KEY
from darkraw.raw.fileio import atomic_output

#: Opset written by default (ONNX 1.12+ runtimes).
DEFAULT_OPSET = 17

#: Largest absolute difference between onnxruntime and PyTorch that :func:`export_onnx`'s check
#: accepts (output range [0, 1]).
ONNX_TOLERANCE = 1e-4

#: Packed size of the example traced: both sides need padding, so the pad is in the graph.
_TRACE_SIZE = (40, 56)
#: The raw denoiser pads to a multiple of 8: an odd example puts its padding in the graph.
_DENOISER_TRACE_SIZE = (37, 53)

_Exported = TypeVar("_Exported", SIDUNet, RawDenoiser)


class _Clamped(nn.Module):
    """The network with its output clamped to [0, 1], as :func:`darkraw.nn.infer.run_network`."""

    def __init__(self, model: SIDUNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        rgb: torch.Tensor = self.model(raw)
        return rgb.clamp(0.0, 1.0)


class _Correction(nn.Module):
    """The raw denoiser's correction before its local mean is removed: the runtime removes the
    mean and adds the residual itself, in fp32 (:mod:`darkraw.nn.runtime`). The decoder's
    concatenations are split into sums of convolutions (``split_concat``), which OpenVINO runs
    faster."""

    def __init__(self, model: RawDenoiser) -> None:
        super().__init__()
        self.model = model

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.model.raw_correction(raw, split_concat=True)


def export_onnx(
    model: SIDUNet | RawDenoiser,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    card: Mapping[str, Any] | None = None,
    check: bool = True,
    weights_sha256: str | None = None,
) -> Path:
    """Write ``model`` as an ONNX file, atomically.

    Args:
        model: the network (any memory format; it is copied to fp32 NCHW on the CPU).
        path: the ``.onnx`` file to write; its folder must exist.
        opset: ONNX opset version, >= 13.
        card: free JSON stored beside the config in the file's metadata.
        weights_sha256: for a raw denoiser, the sha256 entry of the model file it came from
            (:data:`darkraw.nn.runtime.WEIGHTS_KEY`), so that a stale export is noticed.
        check: run the written file in onnxruntime on a size that needs padding and compare
            it with PyTorch (within :data:`ONNX_TOLERANCE`).

    Raises:
        DarkrawError: ``onnx`` (or ``onnxruntime`` for the check) is not installed, or the check
            fails.
        OutputError: the file cannot be written.
    """
    try:
        import onnx
    except ImportError:
        raise DarkrawError(
            None, "ONNX export needs the onnx package: pip install 'darkraw[onnx]'"
        ) from None
    path = Path(path)
    net: nn.Module
    if isinstance(model, RawDenoiser):
        net = _Correction(_cpu_fp32_copy(model)).eval()
    else:
        net = _Clamped(_cpu_fp32_copy(model)).eval()
    output = output_name(model)
    size = _DENOISER_TRACE_SIZE if isinstance(model, RawDenoiser) else _TRACE_SIZE
    example = torch.rand(1, model.config.in_channels, *size, generator=_seeded())
    try:
        with atomic_output(path) as tmp:
            with warnings.catch_warnings():
                # The tracer warns about every Python branch on a size; the branches taken for
                # the padded example are the ones valid for every size h, w >= 9.
                warnings.simplefilter("ignore", TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    net,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["raw"],
                    output_names=[output],
                    dynamic_axes={
                        "raw": {0: "batch", 2: "height", 3: "width"},
                        output: {0: "batch", 2: "out_height", 3: "out_width"},
                    },
                )
            proto = onnx.load(str(tmp))
            entries = {
                CONFIG_KEY: json.dumps(model.config.to_dict()),
                CARD_KEY: json.dumps(dict(card or {}), sort_keys=True),
            }
            if isinstance(model, RawDenoiser):
                entries[OUTPUT_KEY] = "correction"
                if weights_sha256 is not None:
                    entries[WEIGHTS_KEY] = weights_sha256
            for key, value in entries.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
            if check:
                _check_against_torch(net, tmp, model.config.in_channels, output, path)
    except OSError as err:
        raise OutputError(path, f"cannot write ONNX model ({err.strerror or err})") from None
    return path


def export_model_file(model: str | Path, output: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Export a model file or training checkpoint (or a bundled model's name, ``"default"`` or
    ``"small"``) to ONNX; its card goes too.

    Raises:
        CheckpointError: the model cannot be loaded.
        DarkrawError, OutputError: as :func:`export_onnx`.
    """
    source = model_source(model)
    network = resolve_model(model)
    digest = None
    if isinstance(network, RawDenoiser) and is_model_file(source):
        digest = json_entry(source, read_metadata(source), "sha256")
    return export_onnx(network, output, opset=opset, card=model_card(source), weights_sha256=digest)


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _cpu_fp32_copy(model: _Exported) -> _Exported:
    copy = type(model)(model.config)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    copy.requires_grad_(False)
    return copy


def output_name(model: SIDUNet | RawDenoiser) -> str:
    """Name of the exported graph's output: ``rgb``, ``planes`` for a raw-output SID network,
    ``correction`` for the raw denoiser."""
    if isinstance(model, RawDenoiser):
        return "correction"
    return "planes" if model.config.output == "raw" else "rgb"


def _check_against_torch(net: nn.Module, tmp: Path, channels: int, output: str, path: Path) -> None:
    """Run the ONNX file ``tmp`` (to become ``path``) at a size the trace did not see (odd,
    needs padding) and compare it with PyTorch."""
    try:
        import onnxruntime
    except ImportError:
        raise DarkrawError(
            None, "checking the export needs onnxruntime: pip install 'darkraw[onnx]'"
        ) from None
    x = torch.rand(2, channels, 27, 35, generator=_seeded())
    with torch.inference_mode():
        expected = net(x).numpy()
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = session.run([output], {"raw": x.numpy()})[0]
    error = float(np.abs(np.asarray(got) - expected).max()) if got.shape == expected.shape else 1.0
    if error > ONNX_TOLERANCE:
        raise DarkrawError(
            path, f"the exported graph differs from PyTorch by {error:.2e} (shape {got.shape})"
        )
