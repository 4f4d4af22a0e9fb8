"""Quantisation-aware fine-tuning of the raw denoiser, and its int8 QDQ ONNX export (issue 24, 3).

Post-training int8 (``scripts/quantize_denoiser.py``) did not hold the fp32 network's quality;
this fine-tunes the bundled weights with ONNX Runtime's int8 rounding simulated in the forward
pass (:mod:`darkraw.training.qat`: what is quantised how, what stays fp32 and why), on the
pairs and loss of the bundled weights' recipe (``configs/denoiser_phase4.yaml``), then writes a
QDQ graph with the fp32 export's ``metadata_props`` (plus ``darkraw.precision: int8`` and
``darkraw.quantisation``), which ``load_onnx_denoiser``, ``darkraw enhance --model FILE.onnx``
and ``benchmarks/int8_denoiser.py`` take.

Usage:
    python scripts/qat_denoiser.py train --out-dir /tmp/qat/run [--steps 900] [--resume]
        [--lr 3e-5] [--range-lr 1e-2] [--frozen-ranges] [--percentile 99.99] [--int8-input]
        [--int8-output] [--fp32-levels 1] [--fp32-convs encoder.0.2,decoder.2.2] [--threads 2]
    python scripts/qat_denoiser.py export \\
        --checkpoint /tmp/qat/run/checkpoints/step_0000900.safetensors \\
        --out /tmp/qat/denoiser_qat.onnx [--fp32 src/darkraw/data/denoiser_model.onnx]

``export`` reads the quantisation settings from the checkpoint, checks the written file in ONNX
Runtime (its int8 kernels against the QDQ graph's meaning, and that against the fake-quantised
torch network, each within 5 % of the correction's mean size) and lists the operators
ONNX Runtime runs (``QLinearConv`` marks the int8 convolutions).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FP32 = ROOT / "src" / "darkraw" / "data" / "denoiser_model.onnx"
DEFAULT_RECIPE = ROOT / "configs" / "denoiser_phase4.yaml"

#: Largest mean difference accepted between the torch network, the QDQ graph's ONNX meaning and
#: ONNX Runtime's int8 kernels, relative to the correction's mean size (measured 1-2 %).
RELATIVE_TOLERANCE = 0.05


def train(args: argparse.Namespace) -> None:
    from darkraw.training.qat import QATRun, QuantSettings, train_qat

    run = QATRun(
        recipe=str(args.recipe),
        init_from=args.init_from,
        out_dir=args.out_dir,
        steps=args.steps,
        lr=args.lr,
        lr_final=args.lr_final,
        warmup=args.warmup,
        range_lr=args.range_lr,
        zero_point_lr=args.zero_point_lr,
        seed=args.seed,
        calibration_batches=args.calibration_batches,
        threads=args.threads,
        workers=args.workers,
        log_every=args.log_every,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
    )
    settings = QuantSettings(
        percentile=args.percentile,
        learn_ranges=not args.frozen_ranges,
        fp32_input=not args.int8_input,
        fp32_output=not args.int8_output,
        fp32_levels=args.fp32_levels,
        fp32_convs=tuple(filter(None, args.fp32_convs.split(","))),
    )
    start = time.perf_counter()
    train_qat(run, settings, resume=args.resume, on_log=lambda e: print(json.dumps(e), flush=True))
    print(f"done in {time.perf_counter() - start:.0f} s: {args.out_dir}")


def export(args: argparse.Namespace) -> dict[str, Any]:
    import onnx
    import onnxruntime

    from darkraw.nn.checkpoint import load_checkpoint
    from darkraw.nn.denoiser import DenoiserConfig
    from darkraw.nn.runtime import load_onnx_denoiser
    from darkraw.training.qat import QATDenoiser, QuantSettings, export_qat_onnx, fused_op_counts

    ckpt = load_checkpoint(args.checkpoint)
    settings = QuantSettings(**ckpt.extra["qat"])
    model = QATDenoiser(DenoiserConfig.from_dict(ckpt.config["model"]), settings=settings)
    model.load_state_dict(ckpt.model_state)
    model.eval()
    meta = {p.key: p.value for p in onnx.load(str(args.fp32)).metadata_props}
    meta["darkraw.precision"] = "int8"
    described = {
        "format": "QDQ",
        "method": "qat",
        "weight_type": "int8 symmetric per output channel",
        "activation_type": "uint8 asymmetric per tensor",
        "fp32": [
            *(["first convolution (encoder.0.0) and the input"] if settings.fp32_input else []),
            *(["output convolution (out) and its input"] if settings.fp32_output else []),
            *(
                [f"the {settings.fp32_levels} finest U-Net level(s)"]
                if settings.fp32_levels
                else []
            ),
            *settings.fp32_convs,
        ],
        "settings": asdict(settings),
        "run": ckpt.extra.get("run"),
        "step": ckpt.step,
        "checkpoint": str(args.checkpoint),
        # The file's weights are a fine-tune of the ones named by darkraw.weights_sha256.
        "fine_tuned_from_weights_sha256": meta.get("darkraw.weights_sha256"),
    }
    meta["darkraw.quantisation"] = json.dumps(described)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_qat_onnx(model, out, metadata=meta)
    x = torch.rand(2, model.config.in_channels, 27, 35, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.raw_correction(x).numpy()
    got = {}
    for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL"):
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
        session = onnxruntime.InferenceSession(
            str(out), options, providers=["CPUExecutionProvider"]
        )
        got[level] = session.run(None, {"raw": x.numpy()})[0]
    size = float(np.abs(expected).mean())
    fused, qdq = got["ORT_ENABLE_ALL"], got["ORT_DISABLE_ALL"]
    # Relative to the correction's mean size. Neither pair is exact on a large network: ONNX
    # Runtime's QuantizeLinear divides by the scale where torch multiplies by its reciprocal,
    # and its int8 kernels requantise their int32 sums in one multiply; each rounds about one
    # value in a million to the neighbouring step, which the layers after it spread.
    errors = {
        "kernels_vs_qdq": float(np.abs(fused - qdq).mean() / size),
        "qdq_vs_torch": float(np.abs(qdq - expected).mean() / size),
        "kernels_vs_torch_max_abs": float(np.abs(fused - expected).max()),
    }
    if max(errors["kernels_vs_qdq"], errors["qdq_vs_torch"]) > RELATIVE_TOLERANCE:
        raise SystemExit(f"the exported graph does not compute the torch network: {errors}")
    load_onnx_denoiser(out, device="cpu", threads=1)  # darkraw accepts it
    return {
        "written": str(out),
        "bytes": out.stat().st_size,
        "check": errors,
        "onnxruntime_ops": fused_op_counts(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="calibrate and fine-tune")
    t.add_argument("--out-dir", required=True)
    t.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    t.add_argument("--init-from", default="default")
    t.add_argument("--steps", type=int, default=900)
    t.add_argument("--lr", type=float, default=3e-5)
    t.add_argument("--lr-final", type=float, default=3e-6)
    t.add_argument("--warmup", type=int, default=30)
    t.add_argument("--range-lr", type=float, default=1e-2)
    t.add_argument("--zero-point-lr", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--calibration-batches", type=int, default=8)
    t.add_argument("--percentile", type=float, default=99.99)
    t.add_argument("--frozen-ranges", action="store_true", help="keep the calibrated ranges")
    t.add_argument("--int8-input", action="store_true", help="quantise the first convolution")
    t.add_argument("--int8-output", action="store_true", help="quantise the output convolution")
    t.add_argument(
        "--fp32-levels", type=int, default=1, help="finest U-Net levels kept in fp32 (default 1)"
    )
    t.add_argument(
        "--fp32-convs",
        default="",
        help="more convolutions kept in fp32, comma-separated module names (decoder.2.2,...)",
    )
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--log-every", type=int, default=25)
    t.add_argument("--val-every", type=int, default=300)
    t.add_argument("--checkpoint-every", type=int, default=100)
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    e = sub.add_parser("export", help="write the int8 QDQ ONNX file of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--fp32", default=str(DEFAULT_FP32), help="the fp32 export (its metadata)")
    args = parser.parse_args()
    if args.command == "train":
        train(args)
    else:
        print(json.dumps(export(args), indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
