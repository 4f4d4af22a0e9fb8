import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from darkraw.nn.model import (
    FC_PREFIX,
    PAD_MULTIPLE,
    ModelConfig,
    SIDUNet,
    build_model,
    count_parameters,
    fc_parameter_names,
    reset_fc,
    to_channels_last,
)

TINY = ModelConfig(width=8, fc_hidden=16)
TINY_XTRANS = ModelConfig(in_channels=9, width=8, fc_hidden=16)

# SID's U-Net at width 32 on 4 packed Bayer planes, without our FC layers: 7,760,748 parameters
# (transposed convolutions with bias, as in PyTorch). The paper quotes 7.76 M.
SID_PARAMETERS = 7_760_748


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sid_parameters_from_architecture(in_channels: int, width: int, out_channels: int) -> int:
    def conv(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k * k + c_out

    widths = [width * 2**i for i in range(5)]
    total = 0
    for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True):
        total += conv(c_in, c_out, 3) + conv(c_out, c_out, 3)
    for c_deep, c in zip(widths[:0:-1], widths[-2::-1], strict=True):
        total += conv(c_deep, c, 2)  # the 2x2 transposed convolution
        total += conv(2 * c, c, 3) + conv(c, c, 3)
    return total + conv(width, out_channels, 1)


@pytest.mark.parametrize(("config", "s"), [(TINY, 2), (TINY_XTRANS, 3)])
@pytest.mark.parametrize(("h", "w"), [(13, 21), (16, 32), (1, 1), (5, 40)])
def test_output_shape_at_any_size(config, s, h, w):
    model = build_model(config, _gen(0))
    x = torch.rand(2, config.in_channels, h, w, generator=_gen(1))
    y = model(x)
    assert y.shape == (2, 3, h * s, w * s)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("in_channels", [4, 9])
@pytest.mark.parametrize(("h", "w"), [(13, 21), (1, 1), (16, 32)])
def test_raw_output_network_gives_packed_planes_of_the_input_size(in_channels, h, w):
    config = ModelConfig(in_channels=in_channels, width=8, fc_hidden=16, output="raw")
    assert config.upscale == 1 and config.out_planes == in_channels
    model = build_model(config, _gen(0))
    assert model.head.out_channels == config.tail_channels == (12 if in_channels == 4 else 27)
    assert [conv.out_channels for conv in model.fc if isinstance(conv, nn.Conv2d)] == [
        16,
        in_channels,
    ]
    y = model(torch.rand(2, in_channels, h, w, generator=_gen(1)))
    assert y.shape == (2, in_channels, h, w)
    assert torch.isfinite(y).all()


def test_output_is_the_top_left_crop_of_the_reflect_padded_input():
    model = build_model(TINY, _gen(0)).eval()
    x = torch.rand(1, 4, 13, 21, generator=_gen(1))
    padded = F.pad(x, (0, 32 - 21, 0, 16 - 13), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :26, :42])


def test_images_in_a_batch_do_not_interact():
    model = build_model(TINY, _gen(0)).eval()
    x = torch.rand(1, 4, 13, 21, generator=_gen(1))
    batch = torch.cat([x, torch.rand(1, 4, 13, 21, generator=_gen(3))])
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[:1], model(x))


def test_tiny_input_falls_back_to_replicate_padding():
    model = build_model(TINY, _gen(0)).eval()
    x = torch.rand(1, 4, 2, 20, generator=_gen(1))
    padded = F.pad(x, (0, 12, 0, 14), mode="replicate")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :4, :40])


def test_full_width_parameter_count_is_sid_plus_two_fc_layers():
    model = build_model(ModelConfig(), _gen(0))
    fc_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith(FC_PREFIX))
    assert fc_params == (12 * 64 + 64) + (64 * 12 + 12) == 1612
    sid = count_parameters(model) - fc_params
    assert sid == SID_PARAMETERS == _sid_parameters_from_architecture(4, 32, 12)
    assert abs(sid - 7.76e6) / 7.76e6 < 0.005


def test_width_scales_channels():
    model = build_model(ModelConfig(width=4), _gen(0))
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs[1::2]] == [4, 8, 16, 32, 64]
    assert count_parameters(model) - 1612 == _sid_parameters_from_architecture(4, 4, 12)


def test_fc_layers_are_named_and_sit_before_the_pixel_shuffle():
    model = build_model(TINY, _gen(0))
    assert fc_parameter_names(model) == ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"]
    assert model.fc[0].in_channels == 12 and model.fc[0].out_channels == 16
    assert model.fc[2].out_channels == 12
    assert isinstance(model.fc[1], nn.LeakyReLU) and model.fc[1].negative_slope == 0.2


def test_reset_fc_changes_only_fc_and_is_deterministic():
    model = build_model(TINY, _gen(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reset_fc(model, _gen(123))
    after = model.state_dict()
    fc_names = set(fc_parameter_names(model))
    for key, value in after.items():
        if key in fc_names:
            if key.endswith("weight"):
                assert not torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, before[key]), key
    other = build_model(TINY, _gen(7))
    reset_fc(other, _gen(123))
    for key in fc_names:
        assert torch.equal(other.state_dict()[key], after[key]), key


def test_same_generator_seed_gives_same_weights():
    a, b = build_model(TINY, _gen(5)), build_model(TINY, _gen(5))
    c = build_model(TINY, _gen(6))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.encoder[0][0].weight, c.encoder[0][0].weight)


def test_init_keeps_activations_in_a_sane_range():
    model = build_model(ModelConfig(), _gen(0))
    with torch.no_grad():
        y = model(torch.rand(1, 4, 32, 32, generator=_gen(1)))
    assert 1e-3 < y.std().item() < 10


@pytest.mark.parametrize(
    "shape", [(4, 16, 16), (1, 3, 16, 16), (1, 9, 16, 16), (1, 1, 4, 16, 16), (1, 4, 0, 16)]
)
def test_bad_input_shape_names_the_shape(shape):
    model = build_model(TINY, _gen(0))
    with pytest.raises(ValueError, match=re.escape(str(tuple(shape)))):
        model(torch.zeros(shape))


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="floating"):
        build_model(TINY, _gen(0))(torch.zeros(1, 4, 8, 8, dtype=torch.int64))


def test_config_round_trip_and_defaults():
    config = ModelConfig(in_channels=9, width=16, fc_hidden=8)
    assert config.upscale == 3 and ModelConfig().upscale == 2
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict({"width": 8}) == ModelConfig(width=8)
    assert ModelConfig().to_dict() == {"in_channels": 4, "width": 32, "fc_hidden": 64}
    raw = ModelConfig(width=8, output="raw")
    assert raw.to_dict()["output"] == "raw"
    assert ModelConfig.from_dict(raw.to_dict()) == raw
    assert ModelConfig().out_planes == 3


@pytest.mark.parametrize(
    ("d", "key"),
    [
        ({"widht": 8}, "widht"),
        ({"width": 8.0}, "width"),
        ({"width": "32"}, "width"),
        ({"fc_hidden": True}, "fc_hidden"),
        ({"in_channels": 3}, "in_channels"),
        ({"width": 0}, "width"),
        ({"fc_hidden": -1}, "fc_hidden"),
        ({"width": 10**6}, "width"),  # an untrusted model file must not allocate terabytes
        ({"fc_hidden": 10**5}, "fc_hidden"),
        ({"output": "rgb"}, "output"),
        ({"output": 1}, "output"),
    ],
)
def test_config_rejects_bad_dicts_naming_the_key(d, key):
    with pytest.raises(ValueError, match=key):
        ModelConfig.from_dict(d)


def test_config_rejects_wrong_types_directly():
    with pytest.raises(TypeError, match="width"):
        ModelConfig(width=3.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output"):
        ModelConfig(output="linear")


def test_gradient_reaches_the_first_convolution():
    model = build_model(TINY, _gen(0))
    x = torch.rand(1, 4, 13, 21, generator=_gen(1))
    model(x).abs().mean().backward()
    grad = model.encoder[0][0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_gradient_reaches_input_through_padding_and_crop():
    model = build_model(TINY, _gen(0)).double()
    x = torch.rand(1, 4, 5, 3, generator=_gen(1), dtype=torch.float64, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_few_steps_lower_the_l1_loss(optimizer):
    torch.manual_seed(0)
    model = build_model(TINY, _gen(0))
    x = torch.rand(2, 4, 16, 16, generator=_gen(1))
    # A target the network can reach: the input's green planes, upsampled, in every channel.
    target = F.interpolate(x[:, 1:2] * 0.5 + x[:, 3:4] * 0.5, scale_factor=2).expand(-1, 3, -1, -1)
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.l1_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_bf16_autocast_and_channels_last_match_fp32():
    model = build_model(TINY, _gen(0)).eval()
    x = torch.rand(1, 4, 13, 21, generator=_gen(1))
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        model_cl = to_channels_last(model)
        cl = model_cl(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_cl = model_cl(x.contiguous(memory_format=torch.channels_last))
    assert low.shape == cl.shape == low_cl.shape == ref.shape
    assert low.dtype == torch.bfloat16
    assert model_cl.encoder[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    scale = ref.abs().max().item()
    assert (low.float() - ref).abs().max().item() < 0.05 * scale + 1e-3
    assert (low_cl.float() - ref).abs().max().item() < 0.05 * scale + 1e-3
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)


def test_pad_multiple_matches_the_pooling_depth():
    assert PAD_MULTIPLE == 16
    model = SIDUNet(TINY)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in model.modules()) == int(
        math.log2(PAD_MULTIPLE)
    )


def test_raw_tone_is_the_srgb_curve_continued_as_a_line_below_zero():
    from darkraw.classic.pipeline import gamma_encode
    from darkraw.nn.model import raw_tone

    x = torch.linspace(0, 1, 101)
    torch.testing.assert_close(raw_tone(x), torch.from_numpy(gamma_encode(x.numpy(), "srgb")))
    below = torch.tensor([-0.1, -0.01])
    torch.testing.assert_close(raw_tone(below), 12.92 * below)


@pytest.mark.parametrize("in_channels", [4, 9])
def test_a_raw_network_started_from_an_srgb_one_gives_its_picture_averaged_per_colour(
    in_channels,
):
    from darkraw.nn.model import raw_tail_from_srgb
    from darkraw.raw.cfa import plane_colors

    srgb = build_model(ModelConfig(in_channels=in_channels, width=8, fc_hidden=16), _gen(0))
    config = ModelConfig(in_channels=in_channels, width=8, fc_hidden=16, output="raw")
    raw = build_model(config, _gen(1))
    state = srgb.state_dict()
    trunk = {k: v for k, v in state.items() if not k.startswith(("head.", "fc."))}
    raw.load_state_dict(trunk | raw_tail_from_srgb(state, config))
    x = torch.rand(1, in_channels, 10, 14, generator=_gen(2))
    with torch.no_grad():
        picture, planes = srgb.eval()(x), raw.eval()(x)
    s = 2 if in_channels == 4 else 3
    # Each packed pixel's s x s block of the picture, averaged, in the plane's colour.
    blocks = F.avg_pool2d(picture, s)
    expected = torch.stack([blocks[:, c] for c in plane_colors(in_channels)], dim=1)
    torch.testing.assert_close(planes, expected, atol=1e-5, rtol=0)
