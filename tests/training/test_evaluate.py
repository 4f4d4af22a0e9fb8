import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from darkraw.nn.denoiser import DenoiserConfig, build_denoiser
from darkraw.nn.rawdenoise import DenoiseOptions
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw
from darkraw.training.evaluate import (
    RawOutput,
    ciede2000,
    classic_method,
    evaluate,
    markdown_table,
    mean_ciede2000,
    psnr,
    raw_planes,
    raw_scores,
    score,
    srgb_to_lab,
    ssim,
    ssim_by_texture,
)
from darkraw.training.experiment import denoiser_method
from darkraw.training.sid import ground_truth, read_list

from conftest import simulate_sid_layout, smooth_photos, xtrans_meta


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sid")
    photos = smooth_photos(root / "photos", 2, 48, 64)
    simulate_sid_layout(photos, root, ("test",))
    return read_list(root / "test" / "Sony_test_list.txt")


def test_metrics_on_known_images():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.1, 0.9, (3, 32, 32))
    assert psnr(reference + 0.01, reference) == pytest.approx(40.0, abs=1e-6)
    assert ssim(reference, reference) == pytest.approx(1.0, abs=1e-6)
    assert ssim(reference * 0.5, reference) < 0.95
    with pytest.raises(ValueError, match="one size"):
        psnr(reference[:, :16], reference)


def test_ssim_by_texture_puts_noise_in_flat_areas_where_it_is():
    rng = np.random.default_rng(1)
    reference = np.full((3, 64, 64), 0.5)
    reference[:, :, 32:] = rng.uniform(0.1, 0.9, (3, 64, 32))  # flat left half, textured right
    noisy_flat = reference.copy()
    noisy_flat[:, :, :32] += rng.normal(0, 0.05, (3, 64, 32))
    flat, textured = ssim_by_texture(noisy_flat, reference)
    assert textured > 0.95 > 0.5 > flat
    noisy_texture = reference.copy()
    noisy_texture[:, :, 32:] += rng.normal(0, 0.2, (3, 64, 32))
    flat, textured = ssim_by_texture(noisy_texture, reference)
    assert flat > 0.95 > textured


def test_ssim_by_texture_parts_average_to_ssim():
    rng = np.random.default_rng(2)
    reference = rng.uniform(0.0, 1.0, (3, 40, 56))
    output = np.clip(reference + rng.normal(0, 0.1, reference.shape), 0, 1)
    for parts in (1, 4):
        values = ssim_by_texture(output, reference, parts)
        assert len(values) == parts
        assert np.mean(values) == pytest.approx(ssim(output, reference), abs=1e-5)
    constant = np.full((3, 16, 16), 0.5)
    assert ssim_by_texture(constant, constant, 3) == pytest.approx([1.0] * 3, abs=1e-6)
    with pytest.raises(ValueError, match="parts"):
        ssim_by_texture(output, reference, 0)


def test_eight_bit_reporting_quantises_first():
    reference = np.full((3, 16, 16), 100.4 / 255)
    output = np.full((3, 16, 16), 100.6 / 255)  # rounds to 101 while the reference rounds to 100
    s = score(output, reference)
    assert s.psnr8 == pytest.approx(20 * np.log10(255), abs=1e-6)
    assert s.psnr == pytest.approx(-10 * np.log10((0.2 / 255) ** 2), abs=1e-4)


def test_a_known_output_gives_the_known_psnr(pairs, tmp_path):
    calls = []

    def grey(mosaic_dn, meta, ratio):
        calls.append(ratio)
        return np.full((3, meta.height, meta.width), 0.5, dtype=np.float32)

    result = evaluate(pairs, {"grey": grey}, tmp_path / "eval", progress=False)
    cache = tmp_path / "eval" / "ground_truth"
    for record, pair in zip(result.records, pairs, strict=True):
        reference = ground_truth(pair.long, cache).astype(np.float64)
        assert record.psnr == pytest.approx(-10 * np.log10(np.mean((0.5 - reference) ** 2)))
        ref8 = np.rint(reference * 255) / 255
        expected8 = -10 * np.log10(np.mean((np.rint(0.5 * 255) / 255 - ref8) ** 2))
        assert record.psnr8 == pytest.approx(expected8, abs=1e-4)
    assert sorted(result.table["grey"]) == ["all", "x100", "x300"]
    assert result.table["grey"]["x100"]["images"] == 2
    assert len(calls) == len(pairs)
    # A rerun measures nothing again.
    evaluate(pairs, {"grey": grey}, tmp_path / "eval", progress=False)
    assert len(calls) == len(pairs)


def test_reports_are_written(pairs, tmp_path):
    methods = {"classic": classic_method("none")}
    result = evaluate(pairs[:2], methods, tmp_path / "e", sheet_images=1, progress=False)
    folder = tmp_path / "e"
    for name in ("table.md", "table.csv", "table.json", "sheet.png", "report.html"):
        assert (folder / name).stat().st_size > 0, name
    page = (folder / "report.html").read_text()
    assert "data:image/jpeg;base64," in page and "classic" in page
    assert json.loads((folder / "table.json").read_text()) == result.table
    lines = (folder / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["method"] == "classic"
    with Image.open(folder / "sheet.png") as sheet:
        assert sheet.width > 3 * 64  # input | classic | reference side by side


def test_markdown_table_layout():
    table = {
        "m": {
            "x100": {"psnr8": 30.0, "ssim8": 0.8, "psnr": 30.1, "ssim": 0.81, "images": 1.0},
            "all": {"psnr8": 30.0, "ssim8": 0.8, "psnr": 30.1, "ssim": 0.81, "images": 1.0},
        }
    }
    text = markdown_table(table)
    assert text.splitlines()[0] == "| method | x100 | all |"
    assert "| m | 30.00 / 0.800 | 30.00 / 0.800 |" in text


# Sharma, Wu & Dalal (2005), Table 1, all 34 pairs: L1, a1, b1, L2, a2, b2, CIEDE2000.
# Pairs 7-8 have one colour without chroma; pairs 9-16 straddle the hue wrap (|h1 - h2| ~ 180).
SHARMA_PAIRS = np.array(
    [
        [50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425],
        [50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615],
        [50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412],
        [50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669],
        [50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461],
        [50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065],
        [50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492],
        [50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977],
        [50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030],
        [50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000],
        [60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644],
        [63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630],
        [61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731],
        [35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645],
        [22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373],
        [36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146],
        [90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441],
        [90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381],
        [6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377],
        [2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082],
    ]
)


def test_ciede2000_matches_sharma_table_to_four_decimals():
    lab1, lab2, expected = SHARMA_PAIRS[:, 0:3].T, SHARMA_PAIRS[:, 3:6].T, SHARMA_PAIRS[:, 6]
    np.testing.assert_array_equal(np.round(ciede2000(lab1, lab2), 4), expected)
    np.testing.assert_array_equal(np.round(ciede2000(lab2, lab1), 4), expected)


def test_ciede2000_is_zero_for_identical_colours_and_symmetric():
    rng = np.random.default_rng(3)
    lab1 = np.stack([rng.uniform(0, 100, 500), *rng.uniform(-100, 100, (2, 500))])
    lab2 = lab1 + rng.normal(0, 5, lab1.shape)
    lab2[1:, :50] = 0  # greys, the zero-chroma branch
    assert np.all(ciede2000(lab1, lab1) == 0)
    forward, backward = ciede2000(lab1, lab2), ciede2000(lab2, lab1)
    assert forward.shape == (500,) and np.all(forward > 0)
    np.testing.assert_allclose(forward, backward, rtol=0, atol=1e-12)


def test_ciede2000_of_a_lightness_step_divides_by_s_l():
    # Greys differ in lightness only: the difference is |dL| / S_L at the mean lightness.
    l_bar = 60.5
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    value = ciede2000(np.array([60.0, 0, 0]), np.array([61.0, 0, 0]))
    assert value.shape == ()
    assert float(value) == pytest.approx(1 / s_l, abs=1e-12)


def test_srgb_to_lab_of_white_and_black():
    lab = srgb_to_lab(np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    assert lab.dtype == np.float64 and lab.shape == (3, 2)
    # sRGB's white and CIE's D65 white differ in the fifth decimal: off by a few thousandths.
    np.testing.assert_allclose(lab[:, 0], [100.0, 0.0, 0.0], atol=5e-3)
    np.testing.assert_array_equal(lab[:, 1], [0.0, 0.0, 0.0])
    # Out-of-range values are clipped first.
    np.testing.assert_allclose(srgb_to_lab(np.full((3, 1, 1), 1.5)), lab[:, :1, None], atol=0)


def test_srgb_to_lab_matches_reference_values():
    # Computed with scikit-image 0.26 (skimage.color.rgb2lab), outside this project. The last
    # colour has two channels on the sRGB curve's linear segment.
    colours = [
        ((0.625, 0.897, 0.776), (85.691, -28.093, 8.165)),
        ((0.225, 0.300, 0.874), (40.308, 42.413, -76.333)),
        ((0.005, 0.821, 0.797), (76.132, -43.213, -9.143)),
        ((0.468, 0.303, 0.278), (37.381, 16.928, 11.092)),
        ((0.255, 0.445, 0.505), (45.108, -11.969, -13.527)),
        ((0.020, 0.500, 0.030), (46.119, -50.852, 48.246)),
    ]
    rgb = np.array([c for c, _ in colours]).T.reshape(3, 2, 3)
    expected = np.array([lab for _, lab in colours]).T.reshape(3, 2, 3)
    np.testing.assert_allclose(srgb_to_lab(rgb), expected, rtol=0, atol=1e-3)


def test_mean_ciede2000_of_identical_and_grey_shifted_images():
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, (3, 20, 30))
    assert mean_ciede2000(image, image) == 0.0
    other = np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1)
    assert mean_ciede2000(image, other) == pytest.approx(mean_ciede2000(other, image), abs=1e-12)
    # Two flat greys: only lightness differs, L* = 116 Y^(1/3) - 16 with Y the decoded value.
    lightness = [116 * ((v + 0.055) / 1.055) ** (2.4 / 3) - 16 for v in (0.50, 0.51)]
    l_bar = sum(lightness) / 2
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    expected = (lightness[1] - lightness[0]) / s_l
    value = mean_ciede2000(np.full((3, 8, 8), 0.51), np.full((3, 8, 8), 0.50))
    assert 0.5 < value < 1.0
    assert value == pytest.approx(expected, abs=1e-4)


def test_mean_ciede2000_chunks_and_clips_like_one_pass():
    rng = np.random.default_rng(5)
    # 40 rows of 1000 pixels go through in several chunks of rows.
    reference = rng.uniform(0, 1, (3, 40, 1000)).astype(np.float32)
    output = reference + rng.normal(0, 0.1, reference.shape).astype(np.float32)
    clipped = np.clip(output, 0, 1)
    whole = ciede2000(srgb_to_lab(clipped), srgb_to_lab(reference)).mean()
    assert mean_ciede2000(output, reference) == pytest.approx(whole, rel=1e-12)
    assert mean_ciede2000(output, reference) == pytest.approx(
        mean_ciede2000(clipped, reference), rel=1e-12
    )


def test_colour_error_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4, 5\) and \(3, 4, 6\)"):
        mean_ciede2000(np.zeros((3, 4, 5)), np.zeros((3, 4, 6)))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\) and \(4, 4, 4\)"):
        mean_ciede2000(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(3, 3\)"):
        ciede2000(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        srgb_to_lab(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="empty"):
        mean_ciede2000(np.zeros((3, 0, 5)), np.zeros((3, 0, 5)))


def test_raw_scores_of_known_planes():
    rng = np.random.default_rng(6)
    reference = rng.uniform(0.1, 0.9, (4, 24, 32))
    s = raw_scores(reference + 0.01, reference)
    assert s.psnr == pytest.approx(40.0, abs=1e-6)
    assert s.ssim == pytest.approx(1.0, abs=1e-3)
    # SSIM per plane, averaged: one damaged plane of four costs a quarter of its loss.
    damaged = reference.copy()
    damaged[2] = rng.uniform(0.1, 0.9, (24, 32))
    alone = raw_scores(damaged[2:3], reference[2:3]).ssim
    assert alone < 0.2
    assert raw_scores(damaged, reference).ssim == pytest.approx((3 + alone) / 4, abs=1e-5)
    # Both sides are clipped to [0, 1] first.
    assert raw_scores(reference + 2.0, np.ones_like(reference)).psnr == float("inf")
    with pytest.raises(ValueError, match=r"\(4, 24, 32\) and \(4, 24, 30\)"):
        raw_scores(reference, reference[..., :30])


def test_raw_planes_are_black_subtracted_packed_rggb():
    # GRBG: the top-left sample is green, its right neighbour red.
    meta = RawMetadata.for_bayer("GRBG", 2, 4, black_level=100.0, white_level=1100.0)
    mosaic = np.array([[600, 1100, 100, 350], [850, 100, 1600, 0]], dtype=np.uint16)
    planes = raw_planes(mosaic, meta)
    assert planes.shape == (4, 1, 2)
    np.testing.assert_allclose(planes[:, 0, 0], [1.0, 0.5, 0.75, 0.0])  # R, G1, B, G2
    np.testing.assert_allclose(planes[:, 0, 1], [0.25, 0.0, 1.5, -0.1])  # not clipped
    with pytest.raises(ValueError, match="X-Trans"):
        raw_planes(np.zeros((36, 48)), xtrans_meta())


def test_a_raw_method_is_scored_in_the_raw_domain_too(pairs, tmp_path):
    calls = []

    def flat(mosaic_dn, meta, ratio):
        calls.append(ratio)
        image = np.full((3, meta.height, meta.width), 0.5, dtype=np.float32)
        planes = np.full((4, meta.height // 2, meta.width // 2), 0.25, dtype=np.float32)
        return RawOutput(image, planes)

    methods = {"classic": classic_method("none"), "flat": flat}
    result = evaluate(pairs[:2], methods, tmp_path / "e", sheet_images=1, progress=False)
    for pair in pairs[:2]:
        (record,) = [r for r in result.records if r.method == "flat" and r.pair == pair.short.name]
        long = read_raw(pair.long)
        reference = np.clip(raw_planes(long.mosaic, long.meta), 0, 1).astype(np.float64)
        assert record.raw_psnr == pytest.approx(-10 * np.log10(np.mean((0.25 - reference) ** 2)))
        assert record.raw_ssim is not None and -1 < record.raw_ssim < 1
        # The sRGB figures are the image's, as for any method.
        srgb = ground_truth(pair.long, tmp_path / "e" / "ground_truth").astype(np.float64)
        assert record.psnr == pytest.approx(-10 * np.log10(np.mean((0.5 - srgb) ** 2)))
    assert all(r.raw_psnr is None for r in result.records if r.method == "classic")
    assert "raw_psnr" in result.table["flat"]["all"]
    assert "raw_psnr" not in result.table["classic"]["all"]
    folder = tmp_path / "e"
    text = (folder / "table.md").read_text()
    raw_part = text.split("Raw-domain")[1]
    assert "| flat |" in raw_part and "| classic |" not in raw_part
    with open(folder / "table.csv") as handle:
        rows = {(r["method"], r["ratio"]): r for r in csv.DictReader(handle)}
    assert rows[("classic", "all")]["raw_psnr"] == ""
    assert float(rows[("flat", "all")]["raw_psnr"]) == pytest.approx(
        result.table["flat"]["all"]["raw_psnr"], abs=1e-4
    )
    assert "PSNR raw" in (folder / "report.html").read_text()
    # A rerun reads the raw scores back and measures nothing again.
    again = evaluate(pairs[:2], {"flat": flat}, tmp_path / "e", progress=False)
    assert len(calls) == 2
    assert again.table["flat"] == result.table["flat"]


def test_denoiser_method_gives_amplified_planes_of_the_file(pairs):
    generator = torch.Generator().manual_seed(0)
    model = build_denoiser(DenoiserConfig(width=4, levels=2), generator)
    with torch.no_grad():  # a fresh denoiser starts as the identity: make it change the frame
        for weight in model.parameters():
            weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
    pair = pairs[0]
    raw = read_raw(pair.short)
    # Strength 0 leaves the frame as it is (its black level trusted, as the black offset is a
    # step of its own): the planes are the short exposure's, amplified.
    zero = DenoiseOptions(strength=0, black_offset="none")
    still = denoiser_method(model, zero)(raw.mosaic, raw.meta, pair.ratio)
    expected = np.clip(raw_planes(raw.mosaic, raw.meta) * pair.ratio, 0, 1)
    np.testing.assert_allclose(still.planes_lin, expected, atol=1e-5)
    from darkraw.nn import rawdenoise

    runs = []
    real = rawdenoise.run_denoiser

    def counted(*args, **kwargs):
        runs.append(True)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rawdenoise, "run_denoiser", counted)
        output = denoiser_method(model)(raw.mosaic, raw.meta, pair.ratio)
    assert len(runs) == 1  # one pass, as ELD, PMN and LED score: a small frame, no ensemble
    assert output.image.shape == ground_truth(pair.long).shape
    assert output.planes_lin.shape == expected.shape
    assert not np.allclose(output.planes_lin, expected, atol=1e-3)
    assert output.planes_lin.min() >= 0 and output.planes_lin.max() <= 1
