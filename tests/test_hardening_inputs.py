"""Inputs an adversarial trial broke (issue 26): run folders, checkpoints, the profile importer.

The raw-file and noise-profile cases are in ``tests/raw/test_rawio.py`` and
``tests/synth/test_noise.py``; these are the ones that cross modules or run a command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from darkraw.cli import main
from darkraw.config import dump_yaml, from_dict
from darkraw.errors import CheckpointError, DarkrawError
from darkraw.nn.checkpoint import (
    FORMAT,
    VERSION,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_sealed,
)
from darkraw.nn.model import ModelConfig, build_model
from darkraw.training.train import TrainConfig, train

from conftest import tiny_settings

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("darkraw: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# --- a run folder must be new, empty, or an earlier run of the same config ---------------------


def test_train_refuses_a_folder_of_other_files_and_leaves_it_as_it_was(
    photo_folder, tmp_path, capsys
):
    out = tmp_path / "mine"
    out.mkdir()
    # The user's own config, with comments, in the folder it names as out_dir.
    text = "# my settings\n" + json.dumps(tiny_settings(photo_folder, out)) + "\n"
    (out / "config.yaml").write_text(text)
    (out / "notes.txt").write_text("keep me")
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["train", str(out / "config.yaml")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"darkraw: error: {out}: ")
    assert "not a darkraw run of this config" in line
    assert sorted(p.name for p in out.rglob("*")) == before
    assert (out / "config.yaml").read_text() == text


def test_root_and_other_busy_folders_are_no_run_folders(photo_folder, tmp_path):
    from darkraw.training.train import check_run_folder

    config = from_dict(TrainConfig, tiny_settings(photo_folder, "/"))
    with pytest.raises(DarkrawError, match=r"^/: .*not a darkraw run of this config") as err:
        check_run_folder(Path("/"), config)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    (tmp_path / "file").write_text("x")
    with pytest.raises(DarkrawError, match="not a darkraw run"):
        check_run_folder(tmp_path, config)
    # A folder that is a file is left to the writer, which says so in one line.
    check_run_folder(tmp_path / "file", config)


def test_new_empty_and_earlier_runs_of_the_same_config_are_run_folders(photo_folder, tmp_path):
    from darkraw.training.train import check_run_folder

    settings = tiny_settings(photo_folder, tmp_path / "run", checkpoint_every=100)
    config = from_dict(TrainConfig, settings)
    check_run_folder(tmp_path / "run", config)  # new
    (tmp_path / "run").mkdir()
    check_run_folder(tmp_path / "run", config)  # empty
    # A run stopped before its first checkpoint is started again.
    train(config, progress=False, stop_after=1)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") is None
    assert (tmp_path / "run" / "config.yaml").read_text() == dump_yaml(config)
    assert train(config, progress=False, stop_after=2).step == 2
    # ...but not with another config, whose config.yaml it would replace.
    other = from_dict(TrainConfig, {**settings, "seed": 5})
    with pytest.raises(DarkrawError, match=r"config\.yaml differs from this run's config"):
        train(other, progress=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == dump_yaml(config)


# --- deeply nested JSON in a checkpoint -------------------------------------------------------


def nested_checkpoint(path: Path, depth: int = 100_000) -> Path:
    """A sealed (sha256-correct) checkpoint whose ``extra`` is ``depth`` nested lists."""
    state = build_model(ModelConfig(width=4, fc_hidden=8)).state_dict()
    tensors = {f"model.{k}": v.contiguous() for k, v in state.items()}
    config = from_dict(TrainConfig, {"model": {"width": 4, "fc_hidden": 8}})
    from darkraw.config import to_dict

    metadata = {
        "format": json.dumps(FORMAT),
        "version": json.dumps(VERSION),
        "config": json.dumps(to_dict(config)),
        "step": json.dumps(8),
        "rng": "null",
        "extra": "[" * depth + "]" * depth,
        "optim": "null",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sealed(path, tensors, metadata, "checkpoint")
    return path


def test_deeply_nested_checkpoint_metadata_is_a_checkpoint_error(tmp_path):
    path = nested_checkpoint(tmp_path / "ckpts" / "step_0000008.safetensors")
    with pytest.raises(CheckpointError, match=r"step_0000008\.safetensors: .*nested too deeply"):
        load_checkpoint(path)
    assert latest_checkpoint(tmp_path / "ckpts") is None
    good = tmp_path / "ckpts" / "step_0000004.safetensors"
    state = build_model(ModelConfig(width=4, fc_hidden=8)).state_dict()
    save_checkpoint(good, model_state=state, optimizer_state=None, step=4, config={})
    assert latest_checkpoint(tmp_path / "ckpts") == good


def test_deeply_nested_optimizer_state_is_a_checkpoint_error(tmp_path):
    state = build_model(ModelConfig(width=4, fc_hidden=8)).state_dict()
    path = tmp_path / "step_0000001.safetensors"
    tensors = {f"model.{k}": v.contiguous() for k, v in state.items()}
    depth = 900  # under json's own limit, over what decoding it recursively allows
    metadata = {
        "format": json.dumps(FORMAT),
        "version": json.dumps(VERSION),
        "config": "{}",
        "step": "1",
        "rng": "null",
        "extra": "{}",
        "optim": '{"state": {}, "param_groups": ' + "[" * depth + "]" * depth + "}",
    }
    write_sealed(path, tensors, metadata, "checkpoint")
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_checkpoint(path)


def test_resume_reports_a_deeply_nested_checkpoint_in_one_line(
    photo_folder, tmp_path, capsys, one_torch_thread
):
    settings = tiny_settings(photo_folder, tmp_path / "run")
    config = tmp_path / "run.yaml"
    config.write_text(dump_yaml(from_dict(TrainConfig, settings)))
    bad = nested_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000008.safetensors")
    assert main(["train", str(config), "--resume"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"darkraw: error: {bad}: ") and "nested too deeply" in line


# --- scripts/import_eld_profiles.py -----------------------------------------------------------

SCRIPT = ROOT / "scripts" / "import_eld_profiles.py"
BUNDLED = ROOT / "src" / "darkraw" / "data" / "noise_profiles.json"


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def eld_profile() -> dict:
    fit = {"slope": 0.5, "bias": 1.0, "sigma": 0.25}
    return {
        "Kmin": 0.1,
        "Kmax": 6.0,
        "G_shape": [0.1, -0.1],
        "color_bias": [[0.1, 0.2, 0.3, 0.4]],
        "Profile-1": {"G_scale": fit, "g_scale": fit, "R_scale": fit},
    }


def test_import_script_help_writes_nothing(tmp_path):
    # Run where a stand-in of the bundled file sits at the script's relative target.
    target = tmp_path / "src" / "darkraw" / "data" / "noise_profiles.json"
    target.parent.mkdir(parents=True)
    target.write_text('{"stand-in": 1}\n')
    bundled = BUNDLED.read_bytes()
    result = run_script("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--out" in result.stdout
    assert target.read_text() == '{"stand-in": 1}\n'
    assert BUNDLED.read_bytes() == bundled


def test_import_script_refuses_a_folder_without_profiles(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "profiles.json"
    bundled = BUNDLED.read_bytes()
    result = run_script(str(tmp_path / "empty"), "--out", str(out), cwd=tmp_path)
    assert result.returncode != 0
    assert "no ELD profiles" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert BUNDLED.read_bytes() == bundled


def test_import_script_converts_to_a_chosen_output(tmp_path):
    source = tmp_path / "eld"
    source.mkdir()
    (source / "MyCam.json").write_text(json.dumps(eld_profile()))
    out = tmp_path / "profiles.json"
    result = run_script(str(source), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    assert list(written) == ["MyCam"] and written["MyCam"]["k_max"] == 6.0
    from darkraw.synth.noise import profile_from_dict

    assert profile_from_dict("MyCam", written["MyCam"]).tukey_shapes == (0.1, -0.1)
    # A profile with a NaN is refused, and nothing is written.
    (source / "Bad.json").write_text(json.dumps({**eld_profile(), "G_shape": [float("nan")]}))
    out.unlink()
    result = run_script(str(source), "--out", str(out), cwd=tmp_path)
    assert result.returncode != 0 and "Bad" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
