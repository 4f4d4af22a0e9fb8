"""Quantisation-aware training of the raw denoiser (darkraw.training.qat): the fake-quantised
network, its QDQ ONNX export as ONNX Runtime runs it, and the fine-tuning loop."""

import json

import numpy as np
import pytest
import torch

from darkraw.config import dump_yaml, from_dict
from darkraw.nn.checkpoint import load_checkpoint
from darkraw.nn.denoiser import DenoiserConfig, RawDenoiser
from darkraw.nn.runtime import cpu_int8_fast, x86_cpu
from darkraw.training.qat import (
    ActQuant,
    QATRun,
    QuantSettings,
    calibrate,
    export_qat_onnx,
    fused_op_counts,
    qat_denoiser,
    train_qat,
)
from darkraw.training.train_denoiser import DenoiserTrainConfig, forward_parts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = DenoiserConfig(width=4, levels=2, mean_window=7)
ENDS_FP32 = QuantSettings(fp32_levels=0)
ALL_INT8 = QuantSettings(fp32_input=False, fp32_output=False, fp32_levels=0)
TOP_FP32 = QuantSettings()
MIXED = QuantSettings(fp32_levels=0, fp32_convs=("encoder.0.2", "decoder.0.2"))
SETTINGS = [ENDS_FP32, ALL_INT8, TOP_FP32, MIXED]
IDS = ["fp32-ends", "all-int8", "top-level-fp32", "mixed"]

#: Whether ONNX Runtime's int8 kernels compute this CPU's products exactly. Without an 8-bit dot
#: product (an x86 CPU with AVX2 only) they add pairs of u8 x s8 products in 16 bits
#: (``vpmaddubsw``), which saturate where large activations meet weights near +-127, as this
#: tiny network's random weights do: on a Zen 3, 70-100 % of its outputs moved, by up to 0.11
#: (OpenVINO's AVX2 kernels the same). The bundled network's trained weights rarely reach
#: there (0.4 % of a window's outputs moved, by at most 2.2e-3).
EXACT_INT8 = cpu_int8_fast() or not x86_cpu()


def trained_like(config: DenoiserConfig = CONFIG) -> RawDenoiser:
    """A tiny denoiser with fixed random weights, its output layer not at zero (a fresh
    network's is, which would make every comparison trivial)."""
    model = RawDenoiser(config, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.out.weight.copy_(0.1 * torch.randn(model.out.weight.shape, generator=generator))
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=generator))
    return model.eval()


def inputs(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(n, CONFIG.in_channels, h, w, generator=torch.Generator().manual_seed(seed))


def calibrated(settings: QuantSettings) -> tuple[RawDenoiser, torch.nn.Module]:
    fp32 = trained_like()
    model = qat_denoiser(fp32, settings)
    calibrate(model, [inputs(4, 32, 32, 0)])
    return fp32, model.eval()


def metadata() -> dict[str, str]:
    return {
        "darkraw.config": json.dumps(CONFIG.to_dict()),
        "darkraw.card": json.dumps({"name": "tiny"}),
        "darkraw.output": "correction",
        "darkraw.precision": "int8",
    }


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_the_fake_quantised_network_stays_close_to_fp32(settings):
    fp32, model = calibrated(settings)
    x = inputs(2, 27, 35, 1)
    with torch.no_grad():
        want, got = fp32.raw_correction(x), model.raw_correction(x)
    assert got.shape == want.shape
    # 8-bit rounding of up to a dozen tensors, calibrated on other inputs: measured a mean
    # error of 1-4 % of the correction's mean size.
    error = float((got - want).abs().mean() / want.abs().mean())
    assert 0 < error < 0.06


def test_ranges_cover_zero_and_the_observed_values():
    q = ActQuant()
    q.observing = True
    q(torch.linspace(0.5, 2.0, 100))
    lo, hi = q.finish_observing()
    assert (lo, hi) == pytest.approx((0.5, 2.0))
    scale, zero = q.frozen()
    assert int(zero) == 0  # widened to hold 0, which is exactly representable
    assert float(scale) == pytest.approx(2.0 / 255, rel=1e-5)
    q.eval()
    assert torch.equal(q(torch.tensor([0.0, 2.0, 9.0])), torch.tensor([0.0, 255, 255]) * scale)


def test_gradients_reach_the_weights_and_the_ranges():
    model = qat_denoiser(trained_like(), ENDS_FP32)
    calibrate(model, [inputs(2, 16, 16, 0)])
    model.train()
    output, removed = forward_parts(model, inputs(2, 16, 16, 1))
    (output.abs().mean() + removed.abs().mean()).backward()
    named = dict(model.named_parameters())
    assert named["encoder.1.0.weight"].grad.abs().sum() > 0
    assert named["out.weight"].grad.abs().sum() > 0
    assert named["quant.decoder_0_conv0.log_scale"].grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("settings", "int8_convs"),
    # Width 4, 2 levels: encoder 0's second, encoder 1's two, decoder 0's two convolutions and
    # the upsampling's 1x1 one; plus the first when it is int8 too (the output convolution's
    # output, the graph's, is fp32 either way, so ONNX Runtime runs it as a Conv on dequantised
    # int8); with the top level fp32, encoder 1's two and the upsampling; mixed, those and
    # decoder 0's first.
    [(ENDS_FP32, 6), (ALL_INT8, 7), (TOP_FP32, 3), (MIXED, 4)],
    ids=IDS,
)
def test_the_qdq_export_runs_in_onnxruntime_as_the_torch_network(settings, int8_convs, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    _, model = calibrated(settings)
    path = export_qat_onnx(model, tmp_path / "int8.onnx", metadata=metadata())
    x = inputs(2, 27, 35, 2)  # a size the trace did not see, padded inside the graph
    with torch.no_grad():
        want = model.raw_correction(x).numpy()
    for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL"):
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {"raw": x.numpy()})[0]
        error = np.abs(got - want)
        if level == "ORT_DISABLE_ALL":
            # The QDQ graph's ONNX meaning: measured within 1.2e-7 of torch (the same integers
            # and scales; on a network this small no value sits at a rounding tie).
            assert error.max() < 1e-5
        elif EXACT_INT8:
            # ONNX Runtime's int8 kernels requantise their int32 sums in one multiply, which
            # can round a value at a tie the other way, which the layers after it spread
            # (measured: none, or 3 % of the outputs off by up to 2.4e-3, of a correction of
            # about 0.1).
            assert np.mean(error > 1e-5) < 0.1
            assert error.max() < 0.01
    ops = fused_op_counts(path)
    assert ops.get("QLinearConv") == int8_convs
    assert "ConvTranspose" not in ops


def test_the_export_loads_as_a_darkraw_denoiser(tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from darkraw.nn.runtime import load_onnx_denoiser

    _, model = calibrated(QuantSettings())
    path = export_qat_onnx(model, tmp_path / "int8.onnx", metadata=metadata())
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props == metadata()
    loaded = load_onnx_denoiser(path, device="cpu", threads=1)
    assert loaded.config == CONFIG
    assert loaded.card == {"name": "tiny"}
    x = inputs(1, 20, 24, 3)
    with torch.no_grad():
        want = model(x).numpy()
    error = np.abs(loaded(x.numpy()) - want)
    # Where the kernels' 16-bit sums saturate (EXACT_INT8), only near: a few per cent of the
    # planes' range.
    assert error.max() < (1e-5 if EXACT_INT8 else 0.05)


def test_a_tiny_run_calibrates_trains_and_resumes_to_the_same_weights(photo_folder, tmp_path):
    from darkraw.nn.infer import save_model_file

    recipe = from_dict(
        DenoiserTrainConfig,
        {
            "task": "denoise",
            "train": [str(photo_folder)],
            "val_fraction": 0.3,
            "val_items": 2,
            "pairs": {"crop": {"patch": 16}},
            "model": {"width": 4, "levels": 2, "mean_window": 7},
            "batch_size": 2,
            "mean_weight": 0.1,
            "coarse_weight": 1.0,
        },
    )
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(dump_yaml(recipe))
    start = save_model_file(tmp_path / "start.safetensors", trained_like())
    run = QATRun(
        recipe=str(recipe_file),
        init_from=str(start),
        out_dir=str(tmp_path / "run"),
        steps=4,
        warmup=1,
        calibration_batches=1,
        threads=1,
        workers=0,
        log_every=1,
        val_every=2,
        checkpoint_every=2,
    )
    train_qat(run, QuantSettings())
    checkpoints = tmp_path / "run" / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == [f"step_000000{s}.safetensors" for s in (0, 2, 4)]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"fp32", "ranges", "calibrated"} <= {k for e in log for k in e}
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]
    whole = load_checkpoint(checkpoints / "step_0000004.safetensors").model_state
    assert any(not torch.equal(whole[k], v) for k, v in trained_like().state_dict().items())
    (checkpoints / "step_0000004.safetensors").unlink()
    train_qat(run, QuantSettings(), resume=True)
    again = load_checkpoint(checkpoints / "step_0000004.safetensors").model_state
    assert all(torch.equal(whole[k], again[k]) for k in whole)
