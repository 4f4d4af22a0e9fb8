from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from darkraw.config import from_dict
from darkraw.synth.pairs import SimulateOptions, simulate_batch
from darkraw.synth.simulate import SimulationConfig
from darkraw.training.experiment import ExperimentConfig, plan, run_experiment
from darkraw.training.train import Transfer

from conftest import smooth_scene


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    photos = root / "photos"
    target = root / "target_photos"
    photos.mkdir()
    target.mkdir()
    for i in range(6):
        rgb = (smooth_scene(40, 48, seed=i) * 255).round().astype(np.uint8)
        Image.fromarray(np.moveaxis(rgb, 0, -1)).save(photos / f"p{i}.png")
        rgb = (smooth_scene(40, 48, seed=100 + i) * 255).round().astype(np.uint8)
        Image.fromarray(np.moveaxis(rgb, 0, -1)).save(target / f"t{i}.png")
    for split in ("train", "val", "test"):
        options = SimulateOptions(
            ratios=(100.0, 300.0),
            simulation=SimulationConfig(model="calibrated"),
            layout="sid",
            split=split,
        )
        simulate_batch([target], root / split, options, log=lambda _: None, progress=False)
    config = from_dict(
        ExperimentConfig,
        {
            "out_dir": str(root / "out"),
            "synthetic": {
                "train": [str(photos)],
                "val": [str(photos / "p0.png")],
                "val_items": 2,
                "val_patch": 16,
                "pairs": {"patch": 16, "simulation": {"model": "seed"}},
            },
            "sid_train_list": str(root / "train" / "Sony_train_list.txt"),
            "sid_val_list": str(root / "val" / "Sony_val_list.txt"),
            "sid_test_list": str(root / "test" / "Sony_test_list.txt"),
            "sid_cache": str(root / "gt"),
            "model": {"width": 4, "fc_hidden": 8},
            "pretrain_steps": 2,
            "steps": 2,
            "fractions": [0.5, 1.0],
            "strategies": ["seed", "head"],
            "patch": 16,
            "test_items": 3,
            "precision": "fp32",
            "threads": 1,
            "workers": 0,
            "val_every": 2,
            "checkpoint_every": 2,
        },
    )
    return config


def test_plan_has_every_row(setup):
    rows = [run.row for run in plan(setup)]
    assert rows[0] == "synthetic only (zero-shot)"
    assert "SID baseline, 50% of real pairs" in rows
    assert "synthetic + seed transfer, 100% of real pairs" in rows
    assert len(rows) == 1 + 2 * (1 + 2)
    transfers = [run.config for run in plan(setup) if run.config.init_from]
    assert all(c.init_from.endswith("pretrain/model.safetensors") for c in transfers)
    assert {c.steps for c in (run.config for run in plan(setup)) if c.data.kind.value == "sid"} == {
        2
    }


def test_experiment_runs_and_reuses_its_models(setup):
    setup = replace(setup, fractions=(1.0,), strategies=(Transfer.SEED,))
    result = run_experiment(setup, progress=False)
    assert "classic (nlm)" in result.table and "synthetic only (zero-shot)" in result.table
    assert sorted(result.table["classic (nlm)"]) == ["all", "x100", "x300"]
    assert len(result.table) == 1 + 3
    report = result.folder
    assert (report / "report.html").is_file() and (report / "table.md").is_file()
    model_file = report.parent / "pretrain" / "model.safetensors"
    stamp = model_file.stat().st_mtime_ns
    again = run_experiment(setup, progress=False)
    assert model_file.stat().st_mtime_ns == stamp
    assert again.table == result.table
