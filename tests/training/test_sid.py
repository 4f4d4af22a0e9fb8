from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from darkraw.classic.pipeline import orient, unorient
from darkraw.errors import DarkrawError
from darkraw.synth.pairs import SimulateOptions, simulate_batch
from darkraw.synth.simulate import SimulationConfig
from darkraw.training.dataset import SIDPairs
from darkraw.training.sid import (
    MISALIGNED_SCENES,
    SIDPair,
    ground_truth,
    parse_name,
    read_list,
    select,
    sid_ratio,
    subset,
)

from conftest import shared_data, smooth_scene

LINES = """\
./Sony/short/10003_00_0.04s.ARW ./Sony/long/10003_00_10s.ARW ISO200 F9
./Sony/short/10003_01_0.1s.ARW ./Sony/long/10003_00_10s.ARW ISO200 F9
./Sony/short/10034_00_0.033s.ARW ./Sony/long/10034_00_10s.ARW ISO400 F4.5
./Sony/short/00001_00_0.033s.ARW ./Sony/long/00001_00_30s.ARW ISO200 F8
"""


def test_names_and_ratios():
    assert parse_name("./Sony/short/10003_01_0.04s.ARW").burst == 1
    assert parse_name("10003_00_10s.ARW").exposure_s == 10.0
    assert sid_ratio(0.04, 10) == pytest.approx(250)
    assert sid_ratio(0.033, 10) == 300  # 303 capped, as SID does
    assert sid_ratio(0.033, 30) == 300
    with pytest.raises(ValueError, match="not a SID file name"):
        parse_name("IMG_0001.ARW")


def test_read_list(tmp_path):
    path = tmp_path / "Sony_test_list.txt"
    path.write_text(LINES)
    pairs = read_list(path)
    assert [p.ratio_class for p in pairs] == [250, 100, 300, 300]
    assert pairs[0].short == tmp_path / "Sony/short/10003_00_0.04s.ARW"
    assert pairs[0].iso == 200 and pairs[2].f_number == 4.5
    assert [p.split for p in pairs] == ["test", "test", "test", "train"]
    assert pairs[2].misaligned and 10034 in MISALIGNED_SCENES


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(LINES + "./Sony/short/10003_00_0.04s.ARW\n")
    with pytest.raises(DarkrawError, match=r"list\.txt: line 5: expected 'short long"):
        read_list(path)
    path.write_text("./a/10003_00_0.1s.ARW ./b/10004_00_10s.ARW\n")
    with pytest.raises(DarkrawError, match="scene ids differ"):
        read_list(path)


def test_select_protocols(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text(LINES)
    pairs = read_list(path)
    assert len(select(pairs)) == 3  # the misaligned scene is gone
    assert len(select(pairs, exclude_misaligned=False)) == 4
    assert [p.burst for p in select(pairs, protocol="first-burst")] == [0, 0]
    assert [p.ratio_class for p in select(pairs, ratios=[100])] == [100]


def _pairs(n_scenes, bursts=3):
    out = []
    for scene in range(1, n_scenes + 1):
        for burst in range(bursts):
            for t in (0.1, 0.04, 0.033):
                out.append(
                    SIDPair(
                        short=sid_name(scene, burst, t),
                        long=sid_name(scene, 0, 10),
                        scene=scene,
                        burst=burst,
                        short_s=t,
                        long_s=10.0,
                    )
                )
    return out


def sid_name(scene, burst, t):
    return Path(f"{scene:05d}_{burst:02d}_{t:g}s.ARW")


def test_subsets_are_deterministic_and_nested():
    pairs = _pairs(20)
    small = subset(pairs, fraction=0.05, seed=1)
    large = subset(pairs, fraction=0.2, seed=1)
    assert len(small) == 9 and len(large) == 36
    assert set(small) <= set(large)
    assert subset(list(reversed(pairs)), fraction=0.05, seed=1) == small
    assert subset(pairs, fraction=0.05, seed=2) != small
    two = subset(pairs, per_ratio=2, seed=0)
    assert sorted(p.ratio_class for p in two) == [100, 100, 250, 250, 300, 300]
    for ratio in (100, 250, 300):
        assert len({p.scene for p in two if p.ratio_class == ratio}) == 2
    with pytest.raises(ValueError, match="exactly one"):
        subset(pairs)


def test_official_lists_have_the_published_counts():
    folder = shared_data("sid_lists")
    test = read_list(folder / "Sony_test_list.txt")
    assert len(test) == 598
    assert len(select(test)) == 562
    assert len(select(test, protocol="first-burst", exclude_misaligned=False)) == 93
    assert len({p.scene for p in read_list(folder / "Sony_train_list.txt")}) == 161
    fuji = read_list(folder / "Fuji_test_list.txt")
    assert {p.split for p in fuji} == {"test"}


def test_unorient_inverts_orient():
    image = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    for flip in range(8):
        np.testing.assert_array_equal(unorient(orient(image, flip), flip), image)


@pytest.fixture(scope="module")
def sid_folder(tmp_path_factory):
    """A tiny SID-layout dataset written by `darkraw simulate --layout sid`."""
    root = tmp_path_factory.mktemp("sid")
    photos = root / "photos"
    photos.mkdir()
    for i in range(2):
        rgb = (smooth_scene(64, 96, seed=i) * 255).round().astype(np.uint8)
        Image.fromarray(np.moveaxis(rgb, 0, -1)).save(photos / f"p{i}.png")
    options = SimulateOptions(
        simulation=SimulationConfig(model="simple"), layout="sid", split="test", bursts=2
    )
    report = simulate_batch([photos], root / "data", options, log=lambda _: None, progress=False)
    assert report.ok
    return root / "data"


def test_simulated_sid_layout_reads_back(sid_folder):
    pairs = read_list(sid_folder / "Sony_test_list.txt")
    assert len(pairs) == 2 * 3 * 2
    assert sorted({p.ratio_class for p in pairs}) == [100, 250, 300]
    assert all(p.short.is_file() and p.long.is_file() for p in pairs)
    assert len(select(pairs, protocol="first-burst")) == 6


def test_ground_truth_is_cached(sid_folder, tmp_path):
    pair = read_list(sid_folder / "Sony_test_list.txt")[0]
    first = ground_truth(pair.long, tmp_path)
    assert first.shape == (3, 64, 96) and first.dtype == np.float32
    cached = list(tmp_path.glob("*.npy"))
    assert len(cached) == 1
    again = ground_truth(pair.long, tmp_path)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(DarkrawError, match="no such long-exposure file"):
        ground_truth(tmp_path / "missing.ARW", tmp_path)


def test_sid_pairs_crops_line_up(sid_folder, tmp_path):
    pairs = read_list(sid_folder / "Sony_test_list.txt")
    ds = SIDPairs(pairs, tmp_path, patch=16, length=5)
    item = ds[4]
    assert item["input"].shape == (4, 16, 16) and item["target"].shape == (3, 32, 32)
    assert float(item["ratio"]) == pytest.approx(pairs[4].ratio)
    whole = SIDPairs(pairs, tmp_path, patch=None, train=False)[0]
    assert whole["input"].shape == (4, 32, 48) and whole["target"].shape == (3, 64, 96)
    # The amplified short exposure is about as bright as the long one (linear, in raw units).
    assert 0.2 < float(whole["input"].mean()) / float((whole["target"] ** 2.2).mean()) < 1.5


def test_sid_pairs_smaller_than_the_crop_are_padded_by_whole_cfa_tiles(sid_folder, tmp_path):
    pairs = read_list(sid_folder / "Sony_test_list.txt")
    # The frames are 64x96: a 64-packed crop (128 pixels) needs padding in both directions.
    for train in (True, False):
        item = SIDPairs(pairs, tmp_path, patch=64, length=2, train=train)[1]
        assert item["input"].shape == (4, 64, 64) and item["target"].shape == (3, 128, 128)
    whole = SIDPairs(pairs, tmp_path, patch=None, train=False)[0]
    padded = SIDPairs(pairs, tmp_path, patch=64, train=False)[0]
    # The frame's own packed pixels are kept; the padding mirrors them by whole 2x2 tiles.
    np.testing.assert_array_equal(padded["input"][:, :32, :48], whole["input"])
    np.testing.assert_array_equal(padded["input"][:, 32:64, :48], whole["input"].flip(1))
    np.testing.assert_array_equal(padded["target"][:, :64, :96], whole["target"])


def test_pad_tiles_keeps_the_cfa_phase():
    from darkraw.training.dataset import _pad_tiles

    colours = np.tile(np.array([[0, 1], [1, 2]]), (3, 5))[None]  # 6x10 RGGB colour map
    padded = _pad_tiles(colours, 16, 2)
    assert padded.shape == (1, 16, 16)
    np.testing.assert_array_equal(padded, np.tile(np.array([[0, 1], [1, 2]]), (8, 8))[None])
    with pytest.raises(ValueError, match="no whole CFA tile"):
        _pad_tiles(colours[:, :1], 16, 2)
