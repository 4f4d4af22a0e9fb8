import itertools
import json
import math

import pytest
import torch

from darkraw.config import from_dict
from darkraw.errors import OutputError
from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import load_model
from darkraw.nn.modelfiles import model_arch
from darkraw.training.train_denoiser import (
    DenoiserTrainConfig,
    coarse_penalty,
    denoiser_loss,
    forward_parts,
    learning_rate,
    removed_mean_penalty,
    render_planes_torch,
    train_denoiser,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(photo_folder, out_dir, **changes):
    settings = {
        "task": "denoise",
        "train": [str(photo_folder)],
        "val_fraction": 0.3,
        "val_items": 2,
        "pairs": {"crop": {"patch": 16}},
        "model": {"width": 4, "levels": 2},
        "steps": 6,
        "batch_size": 2,
        "warmup": 2,
        "precision": "fp32",
        "workers": 0,
        "out_dir": str(out_dir),
        "log_every": 1,
        "val_every": 3,
        "checkpoint_every": 2,
    }
    settings.update(changes)
    return from_dict(DenoiserTrainConfig, settings)


def test_a_tiny_run_trains_logs_and_saves_a_loadable_denoiser(photo_folder, tmp_path):
    summary = train_denoiser(tiny(photo_folder, tmp_path / "run"), progress=False)
    assert summary.step == 6
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert {"val_raw_psnr", "val_psnr", "val_raw_psnr_input"} <= set(lines[-1])
    newest = tmp_path / "run" / "checkpoints" / "step_0000006.safetensors"
    assert model_arch(newest) == "raw_denoiser"
    assert isinstance(load_model(newest), RawDenoiser)


def test_a_stopped_run_resumes_to_the_same_weights(photo_folder, tmp_path):
    whole = train_denoiser(tiny(photo_folder, tmp_path / "a"), progress=False)
    assert whole.step == 6
    config = tiny(photo_folder, tmp_path / "b")
    train_denoiser(config, stop_after=3, progress=False)
    train_denoiser(config, resume=True, progress=False)
    a = load_model(tmp_path / "a" / "checkpoints" / "step_0000006.safetensors")
    b = load_model(tmp_path / "b" / "checkpoints" / "step_0000006.safetensors")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, msg=name)


def test_run_folder_must_be_new_empty_or_the_same_run(photo_folder, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("# my own notes\n")
    with pytest.raises(OutputError, match="another config"):
        train_denoiser(tiny(photo_folder, folder), progress=False)
    assert (folder / "config.yaml").read_text() == "# my own notes\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="not a darkraw run"):
        train_denoiser(tiny(photo_folder, other), progress=False)
    run = tmp_path / "run"
    train_denoiser(tiny(photo_folder, run, steps=2), progress=False)
    with pytest.raises(OutputError, match="--resume"):
        train_denoiser(tiny(photo_folder, run, steps=2), progress=False)


def test_learning_rate_warms_up_then_decays_to_the_final_rate(photo_folder, tmp_path):
    config = tiny(photo_folder, tmp_path, steps=100, warmup=10, lr=1e-3, lr_final=1e-5)
    rates = [learning_rate(config, s) for s in range(1, 101)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(1e-5)


def test_loss_is_zero_for_the_target_and_weighs_shadows_more_than_highlights():
    target = torch.full((1, 4, 8, 8), 0.5)
    batch = {"target": target, "gains": torch.ones(1, 3), "matrix": torch.eye(3)[None]}
    assert float(denoiser_loss(target, batch, 0.25)) == 0.0
    dark = {**batch, "target": torch.full((1, 4, 8, 8), 0.02)}
    bright = {**batch, "target": torch.full((1, 4, 8, 8), 0.8)}
    assert float(denoiser_loss(dark["target"] + 0.01, dark, 0.0)) > float(
        denoiser_loss(bright["target"] + 0.01, bright, 0.0)
    )


def test_the_rendered_loss_sees_errors_below_black_only_when_told_to():
    # A dark flat frame whose output swings around its level: half of the error lies below
    # black, where the picture (and phases 1-5's loss) clips.
    target = torch.full((1, 4, 8, 8), 0.002)
    swing = torch.tensor([0.004, -0.004]).repeat(32).reshape(1, 1, 8, 8)
    batch = {"target": target, "gains": torch.ones(1, 3), "matrix": torch.eye(3)[None]}
    clipped = float(denoiser_loss(target + swing, batch, 0.0))
    unclipped = float(denoiser_loss(target + swing, batch, 0.0, clip_black=False))
    assert unclipped > 1.3 * clipped > 0
    above = target + swing.abs()  # the same error, all above black: both see it alike
    assert float(denoiser_loss(above, batch, 0.0)) == pytest.approx(
        float(denoiser_loss(above, batch, 0.0, clip_black=False))
    )
    below = render_planes_torch(-target, batch["gains"], batch["matrix"], clip_black=False)
    assert float(below.max()) < 0


def test_a_rendered_l2_term_weighs_a_few_large_errors_more_than_many_small_ones():
    target = torch.full((1, 4, 8, 8), 0.3)
    batch = {"target": target, "gains": torch.ones(1, 3), "matrix": torch.eye(3)[None]}
    spread = target + 0.01
    sparse = target.clone()
    sparse[..., ::4, ::4] += 0.16  # one sample in 16, sixteen times the error
    l1 = [float(denoiser_loss(o, batch, 0.0)) for o in (spread, sparse)]
    both = [float(denoiser_loss(o, batch, 0.0, l2_weight=10.0)) for o in (spread, sparse)]
    assert l1[1] < 1.2 * l1[0]  # L1 (rendered) hardly tells them apart
    assert both[1] > 1.5 * both[0]
    assert float(denoiser_loss(target, batch, 0.0, l2_weight=10.0)) == 0.0


def test_rendering_uses_each_green_with_its_tile():
    planes = torch.tensor([0.2, 0.4, 0.1, 0.3]).reshape(1, 4, 1, 1)
    out = render_planes_torch(planes, torch.tensor([[2.0, 1.0, 1.5]]), torch.eye(3)[None])
    assert out.shape == (1, 6, 1, 1)
    assert out[0, 1] > out[0, 4]  # G1 is 0.4, G2 0.3
    torch.testing.assert_close(out[0, [0, 2]], out[0, [3, 5]])  # the same red and blue


def test_rendering_xtrans_planes_judges_every_sample_in_colour():
    planes = torch.tensor([0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.1, 0.15]).reshape(1, 9, 1, 1)
    out = render_planes_torch(planes, torch.tensor([[2.0, 1.0, 1.5]]), torch.eye(3)[None])
    assert out.shape == (1, 15, 1, 1)
    for plane in range(9):
        moved = planes.clone()
        moved[0, plane] += 0.05
        changed = render_planes_torch(moved, torch.tensor([[2.0, 1.0, 1.5]]), torch.eye(3)[None])
        assert (changed - out).abs().max() > 0.01, plane


def test_a_run_on_xtrans_pairs_trains_nine_planes(photo_folder, tmp_path):
    config = tiny(
        photo_folder,
        tmp_path / "run",
        pairs={"cfa": "xtrans", "crop": {"patch": 16}},
        model={"width": 4, "levels": 2, "planes": 9},
    )
    summary = train_denoiser(config)
    assert summary.step == 6 and math.isfinite(summary.last_loss)
    assert "val_psnr" in summary.val
    with pytest.raises(ValueError, match=r"9 packed planes; model\.planes is 4"):
        tiny(photo_folder, tmp_path / "other", pairs={"cfa": "xtrans"})


def test_a_run_starts_from_another_runs_weights_with_a_mean_window(photo_folder, tmp_path):
    train_denoiser(tiny(photo_folder, tmp_path / "a", steps=2), progress=False)
    start = tmp_path / "a" / "checkpoints" / "step_0000002.safetensors"
    config = tiny(
        photo_folder,
        tmp_path / "b",
        steps=1,
        lr=1e-12,
        lr_final=1e-12,
        warmup=0,
        init_from=str(start),
        model={"width": 4, "levels": 2, "mean_window": 5},
    )
    train_denoiser(config, progress=False)
    before = load_model(start).state_dict()
    after = load_model(tmp_path / "b" / "checkpoints" / "step_0000001.safetensors")
    assert after.config.mean_window == 5
    for name, value in after.state_dict().items():
        torch.testing.assert_close(value, before[name], atol=1e-6, rtol=0, msg=name)
    with pytest.raises(Exception, match="another network"):
        wider = tiny(photo_folder, tmp_path / "c", init_from=str(start), model={"width": 8})
        train_denoiser(wider, progress=False)


@pytest.mark.parametrize("threads", [-1, 1_000_000])
def test_threads_are_bounded_naming_the_key(photo_folder, tmp_path, threads):
    from darkraw.training.train import TrainConfig

    with pytest.raises(ValueError, match="threads must be from 0 to 1024"):
        tiny(photo_folder, tmp_path, threads=threads)
    with pytest.raises(ValueError, match="threads must be from 0 to 1024"):
        from_dict(TrainConfig, {"threads": threads})


def test_low_frequency_penalties_are_zero_for_a_perfect_output_and_positive_otherwise():
    target = torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    batch = {"target": target, "gains": torch.ones(2, 3), "matrix": torch.eye(3).expand(2, 3, 3)}
    zero = torch.zeros_like(target)
    assert float(coarse_penalty(target, target, 4)) == 0.0
    assert float(removed_mean_penalty(zero)) == 0.0
    loss = denoiser_loss(target, batch, 0.25, removed=zero, mean_weight=1.0, coarse_weight=1.0)
    assert float(loss) == 0.0
    shifted = target + 0.01
    assert float(coarse_penalty(shifted, target, 4)) == pytest.approx(0.01, rel=1e-3)
    assert float(removed_mean_penalty(zero + 0.02)) == pytest.approx(0.02)
    with_mean = denoiser_loss(target, batch, 0.25, removed=zero - 0.02, mean_weight=0.5)
    assert float(with_mean) == pytest.approx(0.01)
    # Fine grain with a zero block mean costs the coarse term (almost) nothing.
    grain = torch.tensor([[0.01, -0.01], [-0.01, 0.01]]).repeat(8, 8)
    assert float(coarse_penalty(target + grain, target, 4)) < 1e-6
    assert float(coarse_penalty(target + grain, target, 1)) == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(ValueError, match="removed mean"):
        denoiser_loss(target, batch, 0.25, mean_weight=1.0)


def test_forward_parts_gives_the_networks_output_and_the_removed_mean():
    from darkraw.nn.denoiser import DenoiserConfig, box_mean, build_denoiser

    net = build_denoiser(DenoiserConfig(width=4, levels=2, mean_window=5))
    torch.nn.init.normal_(net.out.weight, std=0.01, generator=torch.Generator().manual_seed(2))
    torch.nn.init.constant_(net.out.bias, 0.3)
    x = torch.rand(1, 8, 20, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output, removed = forward_parts(net, x)
    assert removed is not None
    with torch.no_grad():
        torch.testing.assert_close(output, net(x))
        torch.testing.assert_close(removed, box_mean(net.raw_correction(x), 5))
    assert float(removed.mean()) == pytest.approx(0.3, abs=0.1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mean_weight": -1.0}, "mean_weight"),
        ({"coarse_weight": float("nan")}, "coarse_weight"),
        ({"coarse_pool": 0}, "coarse_pool"),
        ({"mean_weight": 0.1, "model": {"width": 4, "levels": 2, "mean_window": 0}}, "window"),
    ],
)
def test_bad_low_frequency_settings_are_refused(photo_folder, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(photo_folder, tmp_path, **changes)


def test_a_run_with_the_phase_4_options_trains_and_resumes_exactly(photo_folder, tmp_path):
    options = {
        "mean_weight": 0.1,
        "coarse_weight": 1.0,
        "coarse_pool": 2,
        "model": {"width": 4, "levels": 2, "mean_window": 5},
        "pairs": {"crop": {"patch": 16}, "told_factor": [1.0, 2.5], "told_factor_fraction": 0.5},
    }
    train_denoiser(tiny(photo_folder, tmp_path / "a", steps=4, **options), progress=False)
    config = tiny(photo_folder, tmp_path / "b", steps=4, **options)
    train_denoiser(config, stop_after=2, progress=False)
    train_denoiser(config, resume=True, progress=False)
    a = load_model(tmp_path / "a" / "checkpoints" / "step_0000004.safetensors")
    b = load_model(tmp_path / "b" / "checkpoints" / "step_0000004.safetensors")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, msg=name)


def test_a_run_written_before_the_new_options_still_resumes(photo_folder, tmp_path):
    import yaml

    config = tiny(photo_folder, tmp_path / "run", steps=2)
    train_denoiser(config, stop_after=1, progress=False)
    cfg_file = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(cfg_file.read_text())
    for key in ("mean_weight", "coarse_weight", "coarse_pool"):
        del old[key]
    del old["pairs"]["told_factor"], old["pairs"]["told_factor_fraction"]
    cfg_file.write_text(yaml.safe_dump(old, sort_keys=False))
    assert train_denoiser(config, resume=True, progress=False).step == 2
    with pytest.raises(OutputError, match="another config"):
        train_denoiser(tiny(photo_folder, tmp_path / "run", steps=3), resume=True, progress=False)


def test_the_phase_configs_load_with_their_options():
    from pathlib import Path

    import yaml

    from darkraw.training.train_denoiser import load_denoiser_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    phase4 = load_denoiser_config(yaml.safe_load((configs / "denoiser_phase4.yaml").read_text()))
    assert phase4.mean_weight > 0 and phase4.coarse_weight > 0
    assert phase4.pairs.told_factor_fraction > 0 and phase4.pairs.told_factor[1] >= 2.0
    assert phase4.keep_every == 1000 and phase4.threads == 1 and phase4.workers == 1
    phase3 = load_denoiser_config(yaml.safe_load((configs / "denoiser_default.yaml").read_text()))
    assert phase3.mean_weight == phase3.coarse_weight == phase3.pairs.told_factor_fraction == 0
    # Phase 5 adds flat dark crops to phase 4's options, from the bundled weights.
    phase5 = load_denoiser_config(yaml.safe_load((configs / "denoiser_phase5.yaml").read_text()))
    assert phase5.pairs.crop.flat_fraction > 0 and phase4.pairs.crop.flat_fraction == 0
    assert phase5.init_from == "default" and phase5.out_dir != phase4.out_dir
    assert phase5.mean_weight == phase4.mean_weight and phase5.pairs.told_factor_fraction > 0
    # Phase 6 keeps phase 5's options and stops clipping the rendered loss below black.
    phase6 = load_denoiser_config(yaml.safe_load((configs / "denoiser_phase6.yaml").read_text()))
    assert phase5.render_clip_black and not phase6.render_clip_black
    assert phase6.pairs == phase5.pairs and phase6.out_dir != phase5.out_dir
    # Phase 7 keeps phase 5's options and adds an L2 term after rendering.
    phase7 = load_denoiser_config(yaml.safe_load((configs / "denoiser_phase7.yaml").read_text()))
    assert phase5.rendered_l2_weight == 0 and phase7.rendered_l2_weight > 0
    assert phase7.pairs == phase5.pairs and phase7.render_clip_black
    # The X-Trans network: phase 5's recipe on nine planes.
    xtrans = load_denoiser_config(yaml.safe_load((configs / "denoiser_xtrans.yaml").read_text()))
    assert xtrans.pairs.cfa == "xtrans" and xtrans.model.planes == 9
    assert xtrans.mean_weight == phase5.mean_weight and xtrans.model.mean_window == 31
    # Its first level widened: the same recipe, 32 channels where the planes are packed.
    for name in ("denoiser_xtrans_wide.yaml", "denoiser_xtrans_wide2.yaml"):
        wide = load_denoiser_config(yaml.safe_load((configs / name).read_text()))
        assert wide.model.widths[0] == 32 and wide.model.widths[1:] == xtrans.model.widths[1:]
        assert wide.pairs == xtrans.pairs


def test_teacher_loss_is_zero_at_the_teachers_output_and_grows_away_from_it():
    from darkraw.training.train_denoiser import teacher_loss

    taught = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = {
        "target": torch.zeros_like(taught),
        "gains": torch.ones(2, 3),
        "matrix": torch.eye(3).expand(2, 3, 3),
    }
    config = DenoiserTrainConfig(train=("x",))
    assert float(teacher_loss(taught, taught, batch, config)) == 0.0
    near = float(teacher_loss(taught + 0.01, taught, batch, config))
    far = float(teacher_loss(taught + 0.05, taught, batch, config))
    assert 0 < near < far


@pytest.mark.parametrize("changes", [{"teacher": "default"}, {"teacher_weight": 1.0}])
def test_a_teacher_and_its_weight_go_together(photo_folder, tmp_path, changes):
    with pytest.raises(ValueError, match="teacher"):
        tiny(photo_folder, tmp_path, **changes)


def test_a_narrower_network_learns_from_a_teacher_and_resumes_exactly(photo_folder, tmp_path):
    train_denoiser(tiny(photo_folder, tmp_path / "t", steps=2), progress=False)
    teacher = str(tmp_path / "t" / "checkpoints" / "step_0000002.safetensors")
    options = {
        "teacher": teacher,
        "teacher_weight": 1.0,
        "model": {"width": 4, "levels": 2, "first_width": 2},
    }
    whole = train_denoiser(tiny(photo_folder, tmp_path / "a", steps=4, **options), progress=False)
    assert whole.step == 4 and whole.last_loss > 0
    config = tiny(photo_folder, tmp_path / "b", steps=4, **options)
    train_denoiser(config, stop_after=2, progress=False)
    train_denoiser(config, resume=True, progress=False)
    a = load_model(tmp_path / "a" / "checkpoints" / "step_0000004.safetensors")
    b = load_model(tmp_path / "b" / "checkpoints" / "step_0000004.safetensors")
    assert a.config.first_width == 2
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, msg=name)
    with pytest.raises(Exception, match="raw denoiser"):
        train_denoiser(
            tiny(photo_folder, tmp_path / "c", teacher="sid", teacher_weight=1.0), progress=False
        )


def test_the_narrow_configs_load_with_a_narrower_first_level_and_a_teacher():
    from pathlib import Path

    import yaml

    from darkraw.training.train_denoiser import load_denoiser_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    plain = load_denoiser_config(yaml.safe_load((configs / "denoiser_narrow8.yaml").read_text()))
    taught = load_denoiser_config(
        yaml.safe_load((configs / "denoiser_narrow8_taught.yaml").read_text())
    )
    assert plain.model.first_width == taught.model.first_width == 8
    assert not plain.teacher and taught.teacher == "default" and taught.teacher_weight > 0
    assert taught.pairs == plain.pairs and taught.out_dir != plain.out_dir
    twelve = load_denoiser_config(
        yaml.safe_load((configs / "denoiser_narrow12_taught.yaml").read_text())
    )
    assert twelve.model.first_width == 12 and twelve.teacher == taught.teacher
    assert twelve.pairs == taught.pairs and twelve.out_dir != taught.out_dir
