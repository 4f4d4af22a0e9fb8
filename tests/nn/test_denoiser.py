import pytest
import torch
from torch import nn

from darkraw.nn.denoiser import (
    DenoiserConfig,
    build_denoiser,
    is_denoiser_config,
    macs_per_packed_pixel,
    receptive_radius,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model(config=DenoiserConfig(width=4, levels=3), seed=0):
    return build_denoiser(config, torch.Generator().manual_seed(seed))


def counted_macs(net, config, side=64):
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * module.in_channels * k
        elif isinstance(module, nn.ConvTranspose2d):
            total += inputs[0].numel() * module.out_channels * 4

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net(torch.zeros(1, config.in_channels, side, side))
    for h in handles:
        h.remove()
    return total / side**2


def test_untrained_network_returns_its_input():
    config = DenoiserConfig(width=4, levels=3)
    x = torch.rand(2, config.in_channels, 20, 28)
    torch.testing.assert_close(model(config)(x), x[:, :4])


@pytest.mark.parametrize(("h", "w"), [(1, 1), (7, 13), (16, 16), (33, 50)])
def test_any_size_gives_planes_of_that_size(h, w):
    net = model()
    torch.nn.init.normal_(net.out.weight)
    out = net(torch.rand(1, 8, h, w))
    assert out.shape == (1, 4, h, w)
    assert torch.isfinite(out).all()


def test_blind_network_takes_the_planes_alone():
    config = DenoiserConfig(width=4, levels=2, noise_input="none")
    assert config.in_channels == 4
    assert model(config)(torch.rand(1, 4, 8, 8)).shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"\(N, 4, h, w\)"):
        model(config)(torch.rand(1, 8, 8, 8))


@pytest.mark.parametrize(
    "changes",
    [
        {"width": 0},
        {"width": 1000},
        {"levels": 9},
        {"width": True},
        {"noise_input": "sigma"},
        {"first_width": 129},
        {"first_width": -1},
        {"first_width": 2.0},
    ],
)
def test_config_refuses_bad_values(changes):
    with pytest.raises(ValueError):
        DenoiserConfig(**changes)


def test_config_round_trips_through_its_dict_and_is_recognised():
    config = DenoiserConfig(width=8, levels=3)
    data = config.to_dict()
    assert is_denoiser_config(data)
    assert not is_denoiser_config({"width": 32, "fc_hidden": 64})
    assert DenoiserConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown"):
        DenoiserConfig.from_dict({**data, "dropout": 0.1})


def test_a_narrower_first_level_round_trips_and_older_configs_read_as_before():
    narrow = DenoiserConfig(width=8, levels=3, first_width=4)
    assert narrow.widths == (4, 16, 32)
    assert DenoiserConfig.from_dict(narrow.to_dict()) == narrow
    # A config without it is written without the key, as before it existed.
    assert "first_width" not in DenoiserConfig(width=8, levels=3).to_dict()
    assert DenoiserConfig(first_width=16).widths == DenoiserConfig().widths


def test_a_wider_first_level_keeps_the_levels_below():
    wide = DenoiserConfig(width=8, levels=3, planes=9, first_width=24)
    assert wide.widths == (24, 16, 32)
    assert DenoiserConfig.from_dict(wide.to_dict()) == wide
    net = model(wide)
    x = torch.rand(1, wide.in_channels, 12, 20)
    torch.testing.assert_close(net(x), x[:, :9])


def test_a_narrower_first_level_is_cheaper_and_still_starts_as_the_identity():
    config = DenoiserConfig(width=4, levels=3, first_width=2)
    net = model(config)
    assert net.encoder[0][0].out_channels == 2 and net.out.in_channels == 2
    x = torch.rand(1, config.in_channels, 20, 28)
    torch.testing.assert_close(net(x), x[:, :4])
    assert macs_per_packed_pixel(config) < macs_per_packed_pixel(DenoiserConfig(width=4, levels=3))


MAC_CONFIGS = [
    DenoiserConfig(),
    DenoiserConfig(width=8, levels=3),
    DenoiserConfig(first_width=8),
    DenoiserConfig(width=8, levels=1, first_width=3),
    DenoiserConfig(width=8, levels=3, planes=9, first_width=24),
]


@pytest.mark.parametrize("config", MAC_CONFIGS)
def test_mac_count_matches_the_layers(config):
    assert macs_per_packed_pixel(config) == counted_macs(model(config), config)


def test_default_costs_at_most_12_gmac_per_raw_megapixel():
    # One packed pixel is four raw pixels; SID's U-Net costs 46 GMAC per megapixel.
    per_raw_megapixel = macs_per_packed_pixel(DenoiserConfig()) / 4 * 1e6
    assert per_raw_megapixel <= 12e9


def test_receptive_radius_covers_what_an_output_pixel_sees():
    config = DenoiserConfig(width=4, levels=4)
    net = model(config)
    torch.nn.init.normal_(net.out.weight)
    x = torch.rand(1, config.in_channels, 160, 160, requires_grad=True)
    net(x)[0, :, 80, 80].sum().backward()
    rows = (x.grad[0].abs().sum((0, 2)) > 0).nonzero()
    reach = max(80 - int(rows.min()), int(rows.max()) - 80)
    assert 0 < reach <= receptive_radius(config)


def test_mean_window_takes_out_offsets_and_slow_changes_of_the_correction():
    """A correction that is an offset (its output layer's bias, which drifts in training) moves
    a region's level, its colour once balanced; the window takes it out entirely, and the rest
    of the correction averages about zero."""
    config = DenoiserConfig(width=4, levels=3, mean_window=9)
    net = model(config)
    torch.nn.init.constant_(net.out.bias, 0.3)
    x = torch.rand(1, config.in_channels, 40, 48, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net(x), x[:, :4])
    torch.nn.init.normal_(net.out.weight, std=0.5, generator=torch.Generator().manual_seed(1))
    correction = net(x) - x[:, :4]
    assert correction.abs().mean() > 0.05
    assert correction.mean((2, 3)).abs().max() < 0.05 * correction.std()


def test_box_mean_is_the_mean_of_the_box_inside_the_frame():
    from darkraw.nn.denoiser import box_mean

    x = torch.arange(30.0).reshape(1, 1, 5, 6)
    out = box_mean(x, 3)
    assert float(out[0, 0, 2, 2]) == pytest.approx(float(x[0, 0, 1:4, 1:4].mean()))
    assert float(out[0, 0, 0, 0]) == pytest.approx(float(x[0, 0, :2, :2].mean()))


@pytest.mark.parametrize("window", [2, -1, 301, True])
def test_mean_window_must_be_zero_or_odd_and_bounded(window):
    with pytest.raises(ValueError, match="mean_window"):
        DenoiserConfig(mean_window=window)


def test_receptive_radius_counts_the_mean_window():
    config = DenoiserConfig(width=4, levels=3, mean_window=15)
    net = model(config)
    torch.nn.init.normal_(net.out.weight)
    x = torch.rand(1, config.in_channels, 160, 160, requires_grad=True)
    net(x)[0, :, 80, 80].sum().backward()
    rows = (x.grad[0].abs().sum((0, 2)) > 0).nonzero()
    reach = max(80 - int(rows.min()), int(rows.max()) - 80)
    assert receptive_radius(DenoiserConfig(width=4, levels=3)) < reach
    assert reach <= receptive_radius(config)


@pytest.mark.parametrize(
    "config", [DenoiserConfig(), DenoiserConfig(width=8, levels=5), *MAC_CONFIGS[2:]]
)
def test_parameter_count_matches_the_network(config):
    from darkraw.nn.denoiser import denoiser_parameters

    assert denoiser_parameters(config) == sum(p.numel() for p in model(config).parameters())


def test_a_config_of_a_huge_network_is_refused_before_building():
    with pytest.raises(ValueError, match="over the limit"):
        DenoiserConfig(width=128, levels=6)


def xtrans_script():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "xtrans_denoiser.py"
    spec = importlib.util.spec_from_file_location("xtrans_denoiser", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_xtrans_starting_point_keeps_the_inner_levels_and_starts_as_the_identity():
    bayer = build_denoiser(DenoiserConfig(width=4, levels=3, mean_window=7), torch.Generator())
    torch.nn.init.normal_(bayer.out.weight, std=0.1, generator=torch.Generator().manual_seed(1))
    xtrans = xtrans_script().to_xtrans(bayer)
    ours, theirs = xtrans.state_dict(), bayer.state_dict()
    inner = [k for k in theirs if not k.startswith(("encoder.0.0.", "out."))]
    assert inner and all(torch.equal(ours[k], theirs[k]) for k in inner)
    assert ours["encoder.0.0.weight"].shape[1] == 19 and not ours["out.weight"].any()
    x = torch.rand(1, 19, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(xtrans(x), x[:, :9])


def test_the_xtrans_starting_point_denoises_a_flat_field_as_the_bayer_network_does():
    """scripts/xtrans_denoiser.py --shared: each X-Trans plane read and written with its
    colour's Bayer weights, so on a flat field of any colour the two networks agree."""
    module = xtrans_script()
    bayer = build_denoiser(DenoiserConfig(width=4, levels=3, mean_window=7), torch.Generator())
    torch.nn.init.normal_(bayer.out.weight, std=0.1, generator=torch.Generator().manual_seed(1))
    xtrans = module.to_xtrans(bayer, shared=True)
    assert xtrans.config.planes == 9 and xtrans.config.in_channels == 19
    r, g1, b, g2 = 0.1, 0.45, 0.7, 0.35
    level = torch.tensor([r, g1, b, g2])
    sigma = torch.tensor([0.02, 0.03, 0.04, 0.05])
    x_bayer = torch.cat([level, sigma]).reshape(1, 8, 1, 1).expand(1, 8, 24, 24)
    colours = [0, 0, 1, 1, 1, 1, 1, 2, 2]
    mean_level = torch.tensor([r, (g1 + g2) / 2, b])[colours]
    mean_sigma = torch.tensor([0.02, 0.04, 0.04])[colours]
    kind = torch.ones(1)
    x_xtrans = torch.cat([mean_level, mean_sigma, kind]).reshape(1, 19, 1, 1).expand(1, 19, 24, 24)
    # Each colour's weights shared among its planes see the Bayer planes' sum: equal greens.
    x_bayer = x_bayer.clone()
    x_bayer[:, [1, 3]] = (g1 + g2) / 2
    x_bayer[:, [5, 7]] = 0.04
    with torch.no_grad():
        want = bayer.raw_correction(x_bayer)[0]
        got = xtrans.raw_correction(x_xtrans)[0]
    by_colour = torch.stack([want[0], (want[1] + want[3]) / 2, want[2]])[colours]
    torch.testing.assert_close(got, by_colour, atol=1e-6, rtol=1e-5)
