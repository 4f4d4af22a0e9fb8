"""The transfer-learning commands: finetune and evaluate (experiment is tested as a library)."""

import json

import pytest
import torch
import yaml

from darkraw.cli import main
from darkraw.nn.checkpoint import latest_checkpoint
from darkraw.nn.denoiser import DenoiserConfig, build_denoiser
from darkraw.nn.infer import save_model_file

from conftest import simulate_sid_layout, smooth_photos


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_transfer")
    photos = smooth_photos(root / "photos", 4, 40, 48)
    simulate_sid_layout(photos, root, ("train", "val", "test"), ratios=(100.0,))
    common = {
        "model": {"width": 4, "fc_hidden": 8},
        "steps": 2,
        "precision": "fp32",
        "threads": 1,
        "val_every": 2,
        "checkpoint_every": 2,
        "samples": 0,
    }
    synthetic = {
        **common,
        "out_dir": str(root / "pre"),
        "data": {
            "train": [str(photos)],
            "val": [str(photos / "p0.png")],
            "val_items": 1,
            "val_patch": 16,
            "workers": 0,
            "pairs": {"patch": 16},
        },
    }
    (root / "pre.yaml").write_text(yaml.safe_dump(synthetic))
    sid = {
        **common,
        "out_dir": str(root / "ft"),
        "data": {
            "kind": "sid",
            "sid_train_list": str(root / "train" / "Sony_train_list.txt"),
            "sid_val_list": str(root / "val" / "Sony_val_list.txt"),
            "sid_cache": str(root / "gt"),
            "val_items": 1,
            "val_patch": 16,
            "workers": 0,
            "pairs": {"patch": 16},
        },
    }
    (root / "ft.yaml").write_text(yaml.safe_dump(sid))
    assert main(["train", str(root / "pre.yaml")]) == 0
    return root


def test_finetune_from_a_checkpoint(world, capsys):
    checkpoint = latest_checkpoint(world / "pre" / "checkpoints")
    code = main(
        [
            "finetune",
            str(world / "ft.yaml"),
            "--from",
            str(checkpoint),
            "--fraction",
            "0.5",
            "--strategy",
            "head",
        ]
    )
    assert code == 0
    assert "validation PSNR" in capsys.readouterr().out
    saved = yaml.safe_load((world / "ft" / "config.yaml").read_text())
    assert saved["transfer"] == "head" and saved["data"]["sid_fraction"] == 0.5
    assert saved["init_from"] == str(checkpoint)


def test_finetune_needs_sid_data(world, capsys):
    checkpoint = latest_checkpoint(world / "pre" / "checkpoints")
    code = main(["finetune", str(world / "pre.yaml"), "--from", str(checkpoint)])
    assert code == 2
    err = capsys.readouterr().err
    assert "finetune needs data.kind: sid" in err and len(err.strip().splitlines()) == 1


def test_evaluate_writes_the_report(world, tmp_path, capsys):
    checkpoint = latest_checkpoint(world / "pre" / "checkpoints")
    code = main(
        [
            "evaluate",
            "--data",
            str(world / "test" / "Sony_test_list.txt"),
            "--model",
            str(checkpoint),
            "--denoise",
            "none",
            "--limit",
            "2",
            "-o",
            str(tmp_path / "r"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("| method | x100 | all |")
    assert "| classic (none) |" in out and str(checkpoint) in out
    assert (tmp_path / "r" / "report.html").is_file()


def test_evaluate_with_nothing_to_do(world, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--data",
            str(world / "test" / "Sony_test_list.txt"),
            "--no-classic",
            "-o",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_evaluate_scores_the_raw_denoiser_in_the_raw_domain(world, tmp_path, capsys):
    model = build_denoiser(DenoiserConfig(width=4, levels=2), torch.Generator().manual_seed(0))
    path = save_model_file(tmp_path / "denoiser.safetensors", model)
    code = main(
        [
            "evaluate",
            "--data",
            str(world / "test" / "Sony_test_list.txt"),
            "--model",
            str(path),
            "--denoise",
            "none",
            "--limit",
            "2",
            "-o",
            str(tmp_path / "r"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("| method | x100 | all |")
    srgb, raw = out.split("raw-domain PSNR / SSIM")
    assert "| classic (none) |" in srgb and f"| {path} |" in srgb
    assert f"| {path} |" in raw and "classic" not in raw
    table = json.loads((tmp_path / "r" / "table.json").read_text())
    assert table[str(path)]["all"]["raw_psnr"] > 0 and 0 < table[str(path)]["all"]["raw_ssim"] <= 1
    assert "raw_psnr" not in table["classic (none)"]["all"]
