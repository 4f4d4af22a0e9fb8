import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from darkraw.nn.inputs import network_input
from darkraw.raw.dng import write_dng
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.simulate import SimulationConfig
from darkraw.training.dataset import (
    FLAT_GRADIENT,
    PairConfig,
    SyntheticPairs,
    blur_scene,
    flat_scene,
)

from conftest import mosaic_from_rgb, smooth_scene


def write_photo(path, height, width, seed=0):
    rgb = (smooth_scene(height, width, seed) * 255).round().astype(np.uint8)
    Image.fromarray(np.moveaxis(rgb, 0, -1)).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    return [write_photo(tmp_path / f"p{i}.png", 70 + 10 * i, 90, seed=i) for i in range(3)]


def test_network_input_follows_sid():
    meta = RawMetadata.for_bayer(
        "BGGR", 4, 4, black_level=512, white_level=16383, wb_gains=(1.0, 1.0, 1.0)
    )
    dn = np.full((4, 4), 512 + 100, dtype=np.uint16)
    dn[0, 0] = 16383  # a saturated blue pixel stays at 1 after amplification
    dn[1, 1] = 500  # below black: clipped to 0
    planes = network_input(dn, meta, 100)
    assert planes.shape == (4, 2, 2) and planes.dtype == np.float32
    # Packed order is R, G1, B, G2; BGGR's top-left pixel is blue and its (1, 1) is red.
    assert planes[2, 0, 0] == 1.0 and planes[0, 0, 0] == 0.0
    assert planes[1, 0, 1] == pytest.approx(100 * 100 / (16383 - 512))
    with pytest.raises(ValueError, match="ratio"):
        network_input(dn, meta, 0)


def test_network_input_applies_the_files_white_balance_and_colour_matrix():
    # A gray scene shot through a camera that sees red at half and blue at a quarter of green.
    meta = RawMetadata.for_bayer("RGGB", 4, 4, black_level=0, white_level=1000)
    dn = np.zeros((4, 4), dtype=np.uint16)
    dn[0::2, 0::2], dn[0::2, 1::2], dn[1::2, 0::2], dn[1::2, 1::2] = 40, 80, 80, 20
    balanced = network_input(dn, meta.replace(wb_gains=(2.0, 1.0, 4.0)), 5)
    np.testing.assert_allclose(balanced, 0.4, rtol=1e-6)
    # No white balance in the file: gray world finds the same gains on this gray scene.
    np.testing.assert_allclose(network_input(dn, meta, 5), 0.4, rtol=1e-6)
    # The colour matrix mixes colours: here it swaps red and blue.
    swap = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))
    tinted = meta.replace(wb_gains=(1.0, 1.0, 1.0), rgb_cam=swap)
    planes = network_input(dn, tinted, 5)
    np.testing.assert_allclose(planes[0], 0.1, rtol=1e-6)  # red plane holds blue's light
    np.testing.assert_allclose(planes[2], 0.2, rtol=1e-6)
    np.testing.assert_allclose(planes[[1, 3]], 0.4, rtol=1e-6)


def test_items_have_the_documented_shapes(photos):
    ds = SyntheticPairs(photos, PairConfig(patch=32), length=5)
    assert len(ds) == 5
    item = ds[4]
    assert item["input"].shape == (4, 32, 32) and item["target"].shape == (3, 64, 64)
    assert item["input"].dtype == torch.float32
    assert float(item["input"].min()) >= 0 and float(item["input"].max()) <= 1
    assert float(item["ratio"]) in (100.0, 250.0, 300.0) and int(item["index"]) == 4
    with pytest.raises(IndexError):
        ds[5]


def test_raw_targets_are_the_clean_planes_as_the_network_sees_them(photos):
    config = PairConfig(patch=32, ratios=(100.0,), simulation=SimulationConfig(model="simple"))
    srgb = SyntheticPairs(photos, config, train=False, classic=True)[1]
    raw = SyntheticPairs(photos, config, train=False, classic=True, raw_target=True)[1]
    assert raw["target"].shape == raw["classic"].shape == raw["input"].shape == (4, 32, 32)
    # Same dark frame; only the target's form differs.
    torch.testing.assert_close(raw["input"], srgb["input"])
    assert float(raw["target"].min()) >= 0 and float(raw["target"].max()) <= 1
    # Clean planes are the noisy input's expectation: close in mean, far less rough.
    assert abs(float(raw["target"].mean() - raw["input"].mean())) < 0.02
    rough = lambda x: float((x[:, 1:] - x[:, :-1]).abs().mean())  # noqa: E731
    assert rough(raw["target"]) < 0.5 * rough(raw["input"])
    assert rough(raw["classic"]) < rough(raw["input"])
    train_item = SyntheticPairs(photos, config, raw_target=True)[0]
    assert train_item["target"].shape == train_item["input"].shape


def test_small_photos_are_mirror_padded_to_the_crop(tmp_path):
    path = write_photo(tmp_path / "tiny.png", 20, 30)
    item = SyntheticPairs([path], PairConfig(patch=32))[0]
    assert item["target"].shape == (3, 64, 64)


def test_input_is_a_noisy_amplified_clean_target(photos):
    """Amplified by its ratio the input carries the target's brightness (in linear terms)."""
    config = PairConfig(patch=32, ratios=(100.0,), simulation=SimulationConfig(model="simple"))
    item = SyntheticPairs(photos, config, train=False)[0]
    target_lin = float((item["target"] ** 2.2).mean())
    # Raw is white-balance-divided (gains 1 to 2.4), so it is somewhat darker than the target.
    assert 0.25 * target_lin < float(item["input"].mean()) < 1.2 * target_lin


def test_items_are_reproducible_in_any_order(photos):
    ds = SyntheticPairs(photos, PairConfig(patch=32), seed=7, length=9)
    a = ds[4]
    ds[8], ds[0]
    b = SyntheticPairs(photos, PairConfig(patch=32), seed=7, length=9)[4]
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
    other_seed = SyntheticPairs(photos, PairConfig(patch=32), seed=8, length=9)
    assert not torch.equal(other_seed[4]["input"], a["input"])


def test_each_epoch_visits_every_file_once_in_a_new_order(photos):
    ds = SyntheticPairs(photos, seed=1, length=300)
    epochs = [[ds.file_index(e * 3 + k) for k in range(3)] for e in range(100)]
    assert all(sorted(order) == [0, 1, 2] for order in epochs)
    assert len({tuple(order) for order in epochs}) > 1


def test_validation_items_are_fixed_and_cycle_ratios(photos):
    ds = SyntheticPairs(photos, PairConfig(patch=32), train=False, classic=True)
    items = [ds[i] for i in range(3)]
    assert [float(item["ratio"]) for item in items] == [100.0, 250.0, 300.0]
    assert [ds.file_index(i) for i in range(4)] == [0, 1, 2, 0]
    assert torch.equal(ds[1]["input"], items[1]["input"])
    assert items[0]["classic"].shape == items[0]["target"].shape


def test_raw_file_sources(tmp_path):
    dn, meta = mosaic_from_rgb(smooth_scene(80, 96, seed=3), "GRBG")
    path = tmp_path / "clean.dng"
    write_dng(path, dn, meta)
    item = SyntheticPairs([path], PairConfig(patch=32))[0]
    assert item["input"].shape == (4, 32, 32) and item["target"].shape == (3, 64, 64)


def test_a_bad_file_is_skipped_with_a_warning(photos, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    ds = SyntheticPairs([bad, *photos], PairConfig(patch=32), train=False)
    with pytest.warns(UserWarning, match="bad.png"):
        item = ds[0]
    assert item["input"].shape == (4, 32, 32)


def test_loader_with_workers_gives_the_same_items(photos):
    ds = SyntheticPairs(photos, PairConfig(patch=32), length=4)
    serial = [batch["input"] for batch in DataLoader(ds, batch_size=2)]
    parallel = [batch["input"] for batch in DataLoader(ds, batch_size=2, num_workers=2)]
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)


def test_config_checks():
    with pytest.raises(ValueError, match="multiple of 16"):
        PairConfig(patch=30)
    with pytest.raises(ValueError, match="ratios"):
        PairConfig(ratios=(0.5,))
    with pytest.raises(ValueError, match="no source files"):
        SyntheticPairs([])


def write_noisy_photo(path, height, width, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def high_frequency(image):
    return float(torch.diff(image, dim=-1).abs().mean() + torch.diff(image, dim=-2).abs().mean())


def test_smooth_fraction_blurs_training_scenes_only(tmp_path):
    photos = [write_noisy_photo(tmp_path / f"n{i}.png", 80, 80, seed=i) for i in range(2)]
    sharp = SyntheticPairs(photos, PairConfig(patch=32), seed=3, length=4)
    smooth = SyntheticPairs(photos, PairConfig(patch=32, smooth_fraction=1.0), seed=3, length=4)
    for i in range(4):
        assert high_frequency(smooth[i]["target"]) < 0.5 * high_frequency(sharp[i]["target"])
    fixed = SyntheticPairs(photos, PairConfig(patch=32), train=False)
    fixed_smooth = SyntheticPairs(photos, PairConfig(patch=32, smooth_fraction=1.0), train=False)
    assert torch.equal(fixed[0]["target"], fixed_smooth[0]["target"])


def test_smooth_fraction_is_a_share_of_the_items(tmp_path):
    photos = [write_noisy_photo(tmp_path / f"n{i}.png", 80, 80, seed=i) for i in range(2)]
    sharp = SyntheticPairs(photos, PairConfig(patch=32), seed=3, length=40)
    some = SyntheticPairs(photos, PairConfig(patch=32, smooth_fraction=0.3), seed=3, length=40)
    blurred = sum(
        high_frequency(some[i]["target"]) < 0.5 * high_frequency(sharp[i]["target"])
        for i in range(40)
    )
    assert 4 <= blurred <= 20


def test_flat_fraction_makes_flat_darker_training_scenes_only(tmp_path):
    photos = [write_noisy_photo(tmp_path / f"n{i}.png", 80, 80, seed=i) for i in range(2)]
    sharp = SyntheticPairs(photos, PairConfig(patch=32), seed=3, length=6)
    flat = SyntheticPairs(
        photos, PairConfig(patch=32, flat_fraction=1.0, flat_gain=(0.05, 0.2)), seed=3, length=6
    )
    for i in range(6):
        assert high_frequency(flat[i]["target"]) < 0.05 * high_frequency(sharp[i]["target"])
        assert flat[i]["target"].mean() < 0.8 * sharp[i]["target"].mean()
    # Half of them, about: the share is drawn per item.
    some = SyntheticPairs(photos, PairConfig(patch=32, flat_fraction=0.5), seed=3, length=40)
    flats = sum(
        high_frequency(some[i]["target"]) < 0.05 * high_frequency(sharp[i % 6]["target"])
        for i in range(40)
    )
    assert 10 <= flats <= 30
    fixed = SyntheticPairs(photos, PairConfig(patch=32), train=False)
    fixed_flat = SyntheticPairs(photos, PairConfig(patch=32, flat_fraction=1.0), train=False)
    assert torch.equal(fixed[0]["target"], fixed_flat[0]["target"])
    with pytest.raises(ValueError, match="flat_fraction"):
        PairConfig(flat_fraction=1.5)
    with pytest.raises(ValueError, match="flat_gain"):
        PairConfig(flat_gain=(0.5, 2.0))


def test_flat_scene_is_the_mean_colour_scaled_with_a_gentle_gradient():
    rgb = np.random.default_rng(0).random((3, 40, 50), dtype=np.float32)
    out = flat_scene(rgb, 0.25, np.random.default_rng(1))
    assert out.shape == rgb.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.25 * rgb.mean(axis=(1, 2)), rtol=0.01)
    spread = (out.max(axis=(1, 2)) - out.min(axis=(1, 2))) / out.mean(axis=(1, 2))
    assert np.all(spread <= 2 * FLAT_GRADIENT + 1e-6)
    with pytest.raises(ValueError, match="gain"):
        flat_scene(rgb, 0.0, np.random.default_rng(1))


def test_blur_scene_keeps_the_mean_and_removes_detail():
    rgb = np.random.default_rng(0).random((3, 40, 50), dtype=np.float32)
    out = blur_scene(rgb, 3.0)
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert np.allclose(out.mean(axis=(1, 2)), rgb.mean(axis=(1, 2)), atol=0.02)
    assert out.std() < 0.2 * rgb.std()
    with pytest.raises(ValueError, match="sigma"):
        blur_scene(rgb, 0.0)


def test_smooth_config_checks():
    with pytest.raises(ValueError, match="smooth_fraction"):
        PairConfig(smooth_fraction=1.5)
    with pytest.raises(ValueError, match="smooth_sigma"):
        PairConfig(smooth_sigma=(3.0, 1.0))


def test_training_items_keep_each_sample_at_its_own_sub_pixel(tmp_path):
    # SID's flips of packed planes and picture move red within the picture's 2x2 tiles; here the
    # photo is flipped before it becomes raw, so the red plane is the picture's top-left
    # sub-pixels in every item (high-pass correlation, little noise at ratio 1).
    write_noisy_photo(tmp_path / "n.png", 96, 96)
    config = PairConfig(patch=32, ratios=(1.0,), simulation=SimulationConfig(camera="SonyA7S2"))
    items = SyntheticPairs([tmp_path / "n.png"], config, seed=4, length=8)

    def detail(a):
        return a - (np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1)) / 4

    for i in range(len(items)):
        item = items[i]
        red = detail(item["input"].numpy()[0]).ravel()
        target = item["target"].numpy()[0]
        corr = [
            np.corrcoef(red, detail(target[dy::2, dx::2]).ravel())[0, 1]
            for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1))
        ]
        assert int(np.argmax(corr)) == 0 and corr[0] > 0.6, corr


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_a_raw_crop_is_transposed_as_its_mosaic_would_be(pattern):
    from darkraw.classic.pipeline import pack, rggb_view
    from darkraw.training.dataset import _transpose_rggb

    mosaic = np.random.default_rng(1).random((8, 12)).astype(np.float32)
    meta = RawMetadata.for_bayer(pattern, 8, 12)
    view = rggb_view(mosaic, meta)
    planes = pack(view.mosaic, view.meta)
    picture = np.stack([view.mosaic] * 3)
    # A generator whose first draw of integers(2) is 1: the transpose is taken.
    rng = next(np.random.default_rng(s) for s in range(50) if np.random.default_rng(s).integers(2))
    got_planes, got_picture = _transpose_rggb(planes, picture, rng, target_planes=False)
    transposed = view.mosaic.T
    np.testing.assert_array_equal(
        got_planes, pack(transposed, view.meta.replace(height=12, width=8))
    )
    np.testing.assert_array_equal(got_picture[0], transposed)
    xtrans = planes[:1].repeat(9, 0)
    same, _ = _transpose_rggb(xtrans, picture, np.random.default_rng(0), target_planes=False)
    assert same is xtrans  # X-Trans planes are left alone
