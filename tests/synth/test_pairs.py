import re

import numpy as np
import pytest
from PIL import Image

from darkraw.errors import DarkrawError
from darkraw.raw.fileio import read_image
from darkraw.raw.rawio import read_raw
from darkraw.synth.pairs import (
    FIGURE_TITLES,
    SID_LIST_NAMES,
    Layout,
    SimulateOptions,
    Split,
    read_pairs,
    seed_figure,
    sid_ratio,
    sid_scene,
    sid_short_exposure,
    simulate_batch,
)
from darkraw.synth.simulate import SimulationConfig

from conftest import smooth_scene


def photo(folder, name, height=48, width=64, seed=0):
    """A small 8-bit sRGB photo on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = smooth_scene(height, width, seed)
    hwc = np.rint(np.moveaxis(rgb, 0, -1) * 255).astype(np.uint8)
    path = folder / name
    Image.fromarray(hwc).save(path)
    return path


def options(**changes):
    changes.setdefault("ratios", (100, 250, 300))
    return SimulateOptions(**changes)


def run(inputs, out, opts):
    return simulate_batch(inputs, out, opts, log=lambda _: None, progress=False)


def names(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_flat_layout_files_levels_and_exposure_times(tmp_path):
    src = photo(tmp_path / "in", "cat.png")
    out = tmp_path / "out"
    report = run([src], out, options(ratios=(100, 250), bursts=2))
    assert report.ok and len(report.written) == 6
    assert names(out) == [
        "cat_clean.dng",
        "cat_reference.png",
        "cat_x100.dng",
        "cat_x100_b01.dng",
        "cat_x250.dng",
        "cat_x250_b01.dng",
        "pairs.tsv",
        "simulate.json",
    ]
    clean = read_raw(out / "cat_clean.dng")
    assert clean.mosaic.shape == (48, 64)
    assert clean.meta.cfa_name == "RGGB"
    # Calibrated SonyA7S2: black 512, white 512 + 16383; the clean frame shares the levels.
    assert clean.meta.black_tile == ((512.0, 512.0), (512.0, 512.0))
    assert clean.meta.white_level == 512 + 16383
    assert clean.meta.exposure_time == pytest.approx(10.0)
    assert clean.meta.iso == 200
    records = {r.dark: r for r in read_pairs(out / "pairs.tsv")}
    for ratio in (100, 250):
        dark = read_raw(out / f"cat_x{ratio}.dng")
        assert dark.meta.black_tile == clean.meta.black_tile
        assert dark.meta.white_level == clean.meta.white_level
        assert clean.meta.exposure_time / dark.meta.exposure_time == pytest.approx(ratio, rel=1e-4)
        # The dark frame holds 1/ratio of the light, plus the camera's colour bias (which the
        # black level does not record).
        signal = clean.mosaic.astype(float).mean() - 512
        bias = np.mean(records[f"cat_x{ratio}.dng"].noise_params["color_bias"])
        dark_signal = dark.mosaic.astype(float).mean() - 512 - bias
        assert dark_signal * ratio == pytest.approx(signal, rel=0.05)
    assert read_image(out / "cat_reference.png").shape == (3, 48, 64)
    bursts = [read_raw(out / name).mosaic for name in ("cat_x100.dng", "cat_x100_b01.dng")]
    assert not np.array_equal(*bursts)


def test_pairs_table_records_each_dark_frame_and_its_noise(tmp_path):
    src = photo(tmp_path / "in", "cat.png")
    out = tmp_path / "out"
    run([src], out, options(simulation=SimulationConfig(model="seed"), bursts=2))
    records = read_pairs(out / "pairs.tsv")
    assert [(r.ratio, r.burst) for r in records] == [
        (100, 0),
        (100, 1),
        (250, 0),
        (250, 1),
        (300, 0),
        (300, 1),
    ]
    for r in records:
        assert (out / r.dark).is_file() and r.clean == "cat_clean.dng"
        assert r.model == "seed" and set(r.noise_params) == {
            "gamma",
            "wb_gains",
            "photons",
            "black_level",
        }
        # The seed model draws its own black level; the DNG records it in whole DN.
        assert read_raw(out / r.dark).meta.black_tile[0][0] == r.black_level_dn
        assert r.black_level_dn == round(r.noise_params["black_level"] * 16383)
        assert r.dark_exposure_s == pytest.approx(10 / r.ratio)
    assert len({r.params for r in records}) == 6  # every frame draws its own parameters


def test_calibrated_params_are_recorded(tmp_path):
    src = photo(tmp_path / "in", "cat.png")
    run([src], tmp_path / "out", options(ratios=(100,)))
    (record,) = read_pairs(tmp_path / "out" / "pairs.tsv")
    params = record.noise_params
    assert record.model == "calibrated" and params["read_model"] == "tukey"
    assert 0 < params["k"] < 100 and len(params["color_bias"]) == 4


def parse_sid_list(path):
    """(short path, long path, SID ratio) per line, as SID's scripts read them."""
    out = []
    for line in path.read_text().splitlines():
        short, long, iso, fnum = line.split()
        assert re.fullmatch(r"ISO\d+", iso) and re.fullmatch(r"F[\d.]+", fnum)
        t_short = float(re.search(r"_([\d.]+)s\.dng$", short).group(1))
        t_long = float(re.search(r"_([\d.]+)s\.dng$", long).group(1))
        out.append((short, long, sid_ratio(t_long, t_short)))
    return out


def test_sid_layout_names_lists_and_ratio_rule(tmp_path):
    srcs = [photo(tmp_path / "in", f"p{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "sid"
    report = run(srcs, out, options(layout="sid", split="test"))
    assert report.ok
    assert names(out) == [
        "Sony_test_list.txt",
        "Sony_train_list.txt",
        "Sony_val_list.txt",
        "long/10001_00_10s.dng",
        "long/10002_00_10s.dng",
        "pairs.tsv",
        "reference/10001_00_10s.png",
        "reference/10002_00_10s.png",
        "short/10001_00_0.033s.dng",
        "short/10001_00_0.04s.dng",
        "short/10001_00_0.1s.dng",
        "short/10002_00_0.033s.dng",
        "short/10002_00_0.04s.dng",
        "short/10002_00_0.1s.dng",
        "simulate.json",
        "sources.tsv",
    ]
    assert (out / "Sony_train_list.txt").read_text() == ""
    pairs = parse_sid_list(out / "Sony_test_list.txt")
    assert len(pairs) == 6
    assert pairs[0] == ("./short/10001_00_0.1s.dng", "./long/10001_00_10s.dng", 100.0)
    for short, long, ratio in pairs:
        assert (out / short).is_file() and (out / long).is_file()
        # The file's own exposure time gives the same ratio as the name.
        exif = read_raw(out / long).meta.exposure_time / read_raw(out / short).meta.exposure_time
        assert ratio == pytest.approx(min(exif, 300), rel=0.01)
    assert sorted(round(r) for _, _, r in pairs) == [100, 100, 250, 250, 300, 300]
    assert (out / "sources.tsv").read_text().splitlines()[1].split("\t")[:3] == [
        "10001",
        "test",
        str(srcs[0]),
    ]


@pytest.mark.parametrize(
    ("ratio", "name"),
    [(1, "10"), (100, "0.1"), (250, "0.04"), (300, "0.033"), (150, "0.067"), (290, "0.0345")],
)
def test_sid_exposure_names_recover_the_ratio(ratio, name):
    assert sid_short_exposure(ratio) == name
    assert sid_ratio(10, float(name)) == pytest.approx(ratio, rel=0.01)


def test_sid_cannot_hold_ratios_above_300():
    with pytest.raises(ValueError, match="caps ratios at 300"):
        sid_short_exposure(1000)
    with pytest.raises(ValueError, match="caps ratios at 300"):
        SimulateOptions(ratios=(100, 1000), layout=Layout.SID)


def test_scene_ids_encode_the_split():
    assert sid_scene(0, "train") == ("00001", Split.TRAIN)
    assert sid_scene(2, "test") == ("10003", Split.TEST)
    assert sid_scene(4, "val") == ("20005", Split.VAL)
    auto = [sid_scene(i, "auto")[1] for i in range(20)]
    assert auto.count(Split.TRAIN) == 16 and auto.count(Split.VAL) == auto.count(Split.TEST) == 2
    with pytest.raises(ValueError, match="at most 9999"):
        sid_scene(9999, "train")


def test_auto_split_fills_all_three_lists(tmp_path):
    srcs = [photo(tmp_path / "in", f"p{i:02d}.png", seed=i) for i in range(10)]
    out = tmp_path / "sid"
    run(srcs, out, options(layout="sid", ratios=(100,)))
    counts = {s: len(parse_sid_list(out / n)) for s, n in SID_LIST_NAMES.items()}
    assert counts == {"train": 8, "val": 1, "test": 1}
    assert (out / "short/20009_00_0.1s.dng").is_file()
    assert (out / "short/10010_00_0.1s.dng").is_file()


def dark_pixels(folder, *names_):
    return [read_raw(folder / n).mosaic for n in names_]


def test_same_seed_same_files_whatever_the_other_inputs(tmp_path):
    a = photo(tmp_path / "in", "a.png", seed=1)
    b = photo(tmp_path / "in", "b.png", seed=2)
    run([a, b], tmp_path / "ab", options(seed=5))
    run([b], tmp_path / "b", options(seed=5))
    run([b, a], tmp_path / "ba", options(seed=5, ratios=(300,)))
    run([b], tmp_path / "other", options(seed=6))
    files = ("b_x300.dng", "b_clean.dng")
    pixels = zip(
        dark_pixels(tmp_path / "b", *files), dark_pixels(tmp_path / "ab", *files), strict=True
    )
    for got, want in pixels:
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        read_raw(tmp_path / "ba" / "b_x300.dng").mosaic,
        read_raw(tmp_path / "ab" / "b_x300.dng").mosaic,
    )
    assert (tmp_path / "b" / "b_x300.dng").read_bytes() == (
        tmp_path / "ab" / "b_x300.dng"
    ).read_bytes()
    assert not np.array_equal(
        read_raw(tmp_path / "other" / "b_x300.dng").mosaic,
        read_raw(tmp_path / "ab" / "b_x300.dng").mosaic,
    )


def test_bad_input_is_reported_and_the_rest_written(tmp_path):
    good = photo(tmp_path / "in", "good.png")
    bad = tmp_path / "in" / "bad.png"
    bad.write_bytes(b"not a png")
    tiny = photo(tmp_path / "in", "tiny.png", height=16, width=64)
    missing = tmp_path / "in" / "missing.png"
    report = run([bad, good, tiny, missing], tmp_path / "out", options(ratios=(100,)))
    failed = {path.name: why for path, why in report.failed}
    assert set(failed) == {"bad.png", "tiny.png", "missing.png"}
    assert "cannot read the photo" in failed["bad.png"]
    assert "22x22" in failed["tiny.png"]
    assert report.inputs == 4 and not report.ok
    assert "good_x100.dng" in names(tmp_path / "out")
    assert [r.scene for r in read_pairs(tmp_path / "out" / "pairs.tsv")] == ["good"]


def test_existing_files_are_skipped_and_rewritten_identically(tmp_path):
    srcs = [photo(tmp_path / "in", f"p{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "out"
    run(srcs, out, options(ratios=(100, 300)))
    before = {n: (out / n).read_bytes() for n in names(out)}
    stamp = (out / "p0_x100.dng").stat().st_mtime_ns

    again = run(srcs, out, options(ratios=(100, 300)))
    assert not again.written and len(again.skipped) == 8
    assert (out / "p0_x100.dng").stat().st_mtime_ns == stamp

    (out / "p1_x300.dng").unlink()
    redo = run(srcs, out, options(ratios=(100, 300)))
    assert redo.written == [out / "p1_x300.dng"]
    assert (out / "p1_x300.dng").read_bytes() == before["p1_x300.dng"]

    forced = run(srcs, out, options(ratios=(100, 300), overwrite=True))
    assert len(forced.written) == 8
    assert {n: (out / n).read_bytes() for n in names(out)} == before


def test_adding_ratios_keeps_earlier_rows(tmp_path):
    src = photo(tmp_path / "in", "p.png")
    out = tmp_path / "out"
    run([src], out, options(ratios=(100,)))
    run([src], out, options(ratios=(100, 250)))
    assert [r.ratio for r in read_pairs(out / "pairs.tsv")] == [100, 250]


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    src = photo(tmp_path / "in", "p.png")
    out = tmp_path / "out"
    run([src], out, options(seed=0))
    with pytest.raises(DarkrawError, match=r"other settings \(seed 0 -> 1\)"):
        run([src], out, options(seed=1))
    assert run([src], out, options(seed=1, overwrite=True)).ok


def test_another_source_under_the_same_scene_id_is_refused(tmp_path):
    a = photo(tmp_path / "in", "a.png", seed=1)
    b = photo(tmp_path / "in", "b.png", seed=2)
    out = tmp_path / "sid"
    run([a], out, options(layout="sid", ratios=(100,)))
    report = run([b], out, options(layout="sid", ratios=(100,)))
    assert report.failed and "was made from" in report.failed[0][1]
    assert read_pairs(out / "pairs.tsv")[0].source == str(a)


def test_two_inputs_with_one_stem_are_refused(tmp_path):
    a = photo(tmp_path / "x", "p.png")
    b = photo(tmp_path / "y", "p.png", seed=3)
    out = tmp_path / "out"
    with pytest.raises(DarkrawError, match="would be written here") as caught:
        run([a, b], out, options())
    assert caught.value.path == out / "p_clean.dng"


def test_raw_file_input(tmp_path, scene):
    from darkraw.raw.dng import write_dng

    from conftest import mosaic_from_rgb

    mosaic, meta = mosaic_from_rgb(scene, "GBRG")
    src = write_dng(tmp_path / "shot.dng", mosaic, meta)
    out = tmp_path / "out"
    assert run([src], out, options(ratios=(100,))).ok
    dark = read_raw(out / "shot_x100.dng")
    assert dark.meta.cfa_name == "GBRG"
    clean = read_raw(out / "shot_clean.dng").mosaic.astype(float) - 512
    # The clean frame is the raw file's own mosaic, rescaled to the profile's levels.
    expected = (mosaic.astype(float) - 512) / (16383 - 512) * 16383
    np.testing.assert_allclose(clean, expected, atol=1)


@pytest.mark.parametrize(
    "bad",
    [
        dict(ratios=(0.5,)),
        dict(ratios=()),
        dict(ratios=(100, 100.0)),
        dict(bursts=0),
        dict(seed=-1),
    ],
)
def test_bad_options_are_rejected(bad):
    with pytest.raises(ValueError):
        SimulateOptions(**bad)


def panel_spans(image):
    """Column ranges of the panels: separated by columns that are white from top to bottom."""
    white = np.all(image > 0.99, axis=(0, 1))
    spans, start = [], None
    for x, is_white in enumerate([*white, True]):
        if not is_white and start is None:
            start = x
        elif is_white and start is not None:
            spans.append((start, x))
            start = None
    return spans


def test_figure_has_five_distinct_panels(tmp_path):
    src = photo(tmp_path / "in", "p.png", height=96, width=128)
    opts = options(simulation=SimulationConfig(model="seed"), ratios=(100,), seed=2)
    path = seed_figure(src, tmp_path / "fig.png", opts)
    image = read_image(path)
    assert image.shape[2] <= 2400
    rows = slice(28, 28 + 96)  # below the titles, above the captions
    spans = panel_spans(image[:, rows])
    assert len(spans) == len(FIGURE_TITLES) == 5
    panels = {t: image[:, rows, a:b] for t, (a, b) in zip(FIGURE_TITLES, spans, strict=True)}
    assert all(p.shape[2] == 128 for p in panels.values())
    assert panels["gamma distortion"].mean() < panels["original"].mean()
    # The bias lifts the blacks: the darkest pixels (grey level) are brighter than before it.
    darkest = {t: np.percentile(p.mean(axis=0), 1) for t, p in panels.items()}
    assert darkest["black level"] > darkest["Poisson noise"] + 0.05
    assert panels["black level"].mean() > panels["Poisson noise"].mean()
    # Noise: neighbouring pixels differ more after the Poisson stage than before it.
    rough = {t: np.abs(np.diff(p, axis=2)).mean() for t, p in panels.items()}
    assert rough["Poisson noise"] > 1.5 * rough["white imbalance"]


def test_figure_batch_writes_one_figure_per_input(tmp_path):
    srcs = [photo(tmp_path / "in", f"p{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "figs"
    report = simulate_batch(srcs, out, options(), figure=True, log=lambda _: None, progress=False)
    assert report.ok and names(out) == ["p0_figure3.png", "p1_figure3.png"]


def test_lost_table_is_rebuilt_without_rewriting_files(tmp_path):
    src = photo(tmp_path / "in", "p.png")
    out = tmp_path / "out"
    run([src], out, options())
    table = (out / "pairs.tsv").read_text()
    (out / "pairs.tsv").unlink()  # as if the run had been killed before writing it
    report = run([src], out, options())
    assert not report.written and len(report.skipped) == 5
    assert (out / "pairs.tsv").read_text() == table


def test_figure_draws_the_parameters_of_the_first_dark_frame(tmp_path):
    from darkraw.synth.pairs import dark_rng, source_key
    from darkraw.synth.simulate import SeedNoiseConfig, sample_seed_params

    src = photo(tmp_path / "in", "p.png")
    run([src], tmp_path / "out", options(simulation=SimulationConfig(model="seed"), seed=4))
    first = read_pairs(tmp_path / "out" / "pairs.tsv")[0]
    assert (first.ratio, first.burst) == (100, 0)
    drawn = sample_seed_params(SeedNoiseConfig(), dark_rng(4, source_key(src), 100, 0))
    assert first.noise_params["gamma"] == drawn.gamma
    assert first.noise_params["photons"] == drawn.photons
