import numpy as np
import pytest
import torch

import darkraw.nn.infer
from darkraw.nn.fused import FusedUNet, fused_available
from darkraw.nn.infer import InferenceOptions, run_network
from darkraw.nn.model import ModelConfig, build_model

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        not fused_available(torch.device("cpu")), reason="this torch has no oneDNN fused kernels"
    ),
]

BF16 = pytest.mark.skipif(
    not fused_available(torch.device("cpu"), torch.bfloat16),
    reason="oneDNN's bf16 kernels need AVX-512 BW/VL/DQ or AVX-NE-CONVERT",
)


SMALL = ModelConfig(width=8)


def network(config=SMALL, seed=0):
    return build_model(config, torch.Generator().manual_seed(seed)).eval()


def smooth(shape, seed=0):
    """Packed planes like amplified raw: a smooth scene plus a little noise, in [0, 1]."""
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    scene = 0.4 + 0.3 * np.sin(yy / 7.0) * np.cos(xx / 11.0)
    x = scene + 0.03 * rng.standard_normal((n, c, h, w))
    return torch.from_numpy(np.clip(x, 0, 1).astype(np.float32))


@pytest.mark.parametrize("in_channels", [4, 9])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("shape", [(1, 37, 45), (2, 16, 16), (1, 5, 3), (1, 1, 1)])
def test_fp32_fused_pass_equals_the_module(in_channels, channels_last, shape):
    model = network(ModelConfig(in_channels=in_channels, width=8))
    n, h, w = shape
    x = smooth((n, in_channels, h, w))
    with torch.inference_mode():
        expected = model(x)
        got = FusedUNet(model, torch.float32, channels_last)(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("in_channels", [4, 9])
def test_fp32_fused_pass_of_a_raw_output_network_equals_the_module(in_channels):
    model = network(ModelConfig(in_channels=in_channels, width=8, output="raw"))
    x = smooth((2, in_channels, 37, 45))
    with torch.inference_mode():
        expected = model(x)
        got = FusedUNet(model, torch.float32, True)(x)
    assert got.shape == expected.shape == (2, in_channels, 37, 45)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@BF16
def test_bf16_fused_pass_is_close_to_fp32_and_its_output_is_not_on_the_bf16_grid():
    model = network()
    x = smooth((1, 4, 40, 52))
    with torch.inference_mode():
        expected = model(x)
        got = FusedUNet(model, torch.bfloat16, True)(x)
    diff = (got - expected).abs()
    assert diff.max() < 0.05 and diff.mean() < 5e-3
    # The output layers run in fp32: a bf16 output would have 8 significant bits, which 16-bit
    # TIFFs would show as steps of 1/256 near white.
    assert (got != got.to(torch.bfloat16).float()).float().mean() > 0.9


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=BF16)])
def test_tiled_fused_output_equals_its_whole_frame_output(precision):
    model = network()
    x = smooth((1, 4, 250, 270))[0].numpy()
    tiled = run_network(model, x, InferenceOptions(tile=240, precision=precision, ensemble=1))
    whole = run_network(model, x, InferenceOptions(tile=0, precision=precision, ensemble=1))
    assert np.abs(tiled - whole).max() <= darkraw.nn.infer.TILING_TOLERANCE


def test_run_network_takes_the_fused_pass_and_it_matches_the_plain_one(monkeypatch):
    model, x = network(), smooth((1, 4, 30, 34))[0].numpy()
    options = InferenceOptions(precision="fp32", ensemble=1)
    calls = []

    class Spy(FusedUNet):
        def __call__(self, x):
            calls.append(x.shape)
            return super().__call__(x)

    monkeypatch.setattr(darkraw.nn.infer, "FusedUNet", Spy)
    fused = run_network(model, x, options)
    assert calls == [(1, 4, 30, 34)]
    monkeypatch.setattr(darkraw.nn.infer, "fused_available", lambda *args: False)
    plain = run_network(model, x, options)
    assert len(calls) == 1
    np.testing.assert_allclose(fused, plain, atol=1e-5)


def test_fused_pass_is_unavailable_off_the_cpu_and_in_other_dtypes():
    assert not fused_available(torch.device("meta"))
    assert not fused_available(torch.device("cpu"), torch.float16)
