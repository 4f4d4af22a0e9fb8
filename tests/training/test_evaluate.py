import json

import numpy as np
import pytest
from PIL import Image

from darkraw.synth.pairs import SimulateOptions, simulate_batch
from darkraw.synth.simulate import SimulationConfig
from darkraw.training.evaluate import (
    classic_method,
    evaluate,
    markdown_table,
    psnr,
    score,
    ssim,
    ssim_by_texture,
)
from darkraw.training.sid import ground_truth, read_list

from conftest import smooth_scene


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sid")
    photos = root / "photos"
    photos.mkdir()
    for i in range(2):
        rgb = (smooth_scene(48, 64, seed=i) * 255).round().astype(np.uint8)
        Image.fromarray(np.moveaxis(rgb, 0, -1)).save(photos / f"p{i}.png")
    options = SimulateOptions(
        ratios=(100.0, 300.0),
        simulation=SimulationConfig(model="simple"),
        layout="sid",
        split="test",
    )
    simulate_batch([photos], root / "data", options, log=lambda _: None, progress=False)
    return read_list(root / "data" / "Sony_test_list.txt")


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
