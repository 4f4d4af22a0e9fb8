import json
import math
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from darkraw.config import from_dict
from darkraw.errors import DarkrawError
from darkraw.nn.checkpoint import latest_checkpoint, load_checkpoint
from darkraw.nn.model import ModelConfig, build_model
from darkraw.nn.precision import fast_cpu_bf16
from darkraw.training.dataset import PairConfig
from darkraw.training.evaluate import ssim_tensor
from darkraw.training.train import (
    DataConfig,
    DataKind,
    OptimConfig,
    TrainConfig,
    _ItemSampler,
    learning_rate,
    split_sources,
    train,
    training_loss,
)

from conftest import simulate_sid_layout, tiny_settings


def tiny_config(photo_folder, out_dir, **changes):
    return from_dict(TrainConfig, tiny_settings(photo_folder, out_dir, **changes))


def test_loader_workers_give_the_same_run_twice_in_one_process(photo_folder, tmp_path):
    # ``darkraw experiment`` trains several runs in one process; forked workers of the second
    # run once deadlocked on locks the first run's threads held. Workers must also not change
    # the result: every pair is a function of the seed and its index.
    data = {**tiny_settings(photo_folder, tmp_path)["data"], "workers": 1}
    short = {"steps": 3, "checkpoint_every": 3, "samples": 0}
    first = train(tiny_config(photo_folder, tmp_path / "a", data=data, **short), progress=True)
    second = train(tiny_config(photo_folder, tmp_path / "b", data=data, **short), progress=True)
    alone = train(tiny_config(photo_folder, tmp_path / "c", **short), progress=False)
    for summary in (first, second):
        assert summary.step == 3
        for key, value in alone.model.state_dict().items():
            torch.testing.assert_close(summary.model.state_dict()[key], value)


def test_a_run_writes_its_folder(photo_folder, tmp_path):
    summary = train(tiny_config(photo_folder, tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    assert summary.step == 6 and summary.val_psnr is not None and summary.classic_psnr is not None
    assert (run / "config.yaml").is_file() and (run / "curves.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_0000002.safetensors",
        "step_0000004.safetensors",
        "step_0000006.safetensors",
    ]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val_psnr" in r] == [3, 6]
    for record in (r for r in records if "val_psnr" in r):
        assert -1 <= record["val_ssim"] <= 1 and 0 < record["classic_ssim"] <= 1
    assert len(list((run / "samples").glob("val00_*.png"))) == 2
    ckpt = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert ckpt.step == 6 and ckpt.config["model"]["width"] == 4


def test_training_lowers_the_loss(photo_folder, tmp_path):
    config = tiny_config(
        photo_folder,
        tmp_path / "run",
        steps=60,
        val_every=60,
        checkpoint_every=60,
        optim={"lr": 1e-3, "lr_final": 1e-3},
    )
    train(config, progress=False)
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
        if "loss" in line
    ]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_resume_after_a_kill_equals_an_uninterrupted_run(photo_folder, tmp_path):
    whole = train(tiny_config(photo_folder, tmp_path / "a"), progress=False)
    config = tiny_config(photo_folder, tmp_path / "b")
    # Killed after step 3: the newest checkpoint is step 2, so step 3 is redone.
    train(config, progress=False, stop_after=3)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_0000002.safetensors"
    resumed = train(config, progress=False, resume=True)
    assert resumed.step == 6
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    log = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_an_existing_run_is_not_overwritten(photo_folder, tmp_path):
    config = tiny_config(photo_folder, tmp_path / "run", steps=2)
    train(config, progress=False)
    with pytest.raises(DarkrawError, match="holds a training run already"):
        train(config, progress=False)
    changed = tiny_config(photo_folder, tmp_path / "run", steps=2, seed=5)
    with pytest.raises(DarkrawError, match="different config"):
        train(changed, progress=False, resume=True)


def test_training_loss_mixes_l1_and_ssim():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=gen)
    output = (target + 0.1 * torch.randn(2, 3, 32, 32, generator=gen)).requires_grad_()
    l1 = torch.nn.functional.l1_loss(output, target)
    assert torch.equal(training_loss(output, target, 0.0), l1)
    torch.testing.assert_close(training_loss(output, target, 1.0), 1 - ssim_tensor(output, target))
    mixed = training_loss(output, target, 0.25)
    torch.testing.assert_close(mixed, 0.75 * l1 + 0.25 * (1 - ssim_tensor(output, target)))
    mixed.backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    assert float(training_loss(target, target, 0.5)) == pytest.approx(0.0, abs=1e-6)


def test_a_run_with_an_ssim_term_trains(photo_folder, tmp_path):
    config = tiny_config(photo_folder, tmp_path / "run", steps=2, optim={"ssim_weight": 0.5})
    summary = train(config, progress=False)
    assert summary.step == 2 and math.isfinite(summary.last_loss)
    saved = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints")).config
    assert saved["optim"]["ssim_weight"] == 0.5


def test_learning_rate_schedule_is_sids():
    optim = OptimConfig()
    assert learning_rate(optim, 1, 4000) == 1e-4 and learning_rate(optim, 2000, 4000) == 1e-4
    assert learning_rate(optim, 2001, 4000) == 1e-5


def test_ranks_and_steps_never_share_an_item():
    seen = []
    for rank in range(2):
        seen.extend(_ItemSampler(0, 5, 3, rank, 2))
    assert sorted(seen) == list(range(30))
    assert list(_ItemSampler(3, 5, 3, 1, 2)) == list(_ItemSampler(0, 5, 3, 1, 2))[9:]


def test_validation_split_is_stable(tmp_path):
    files = [tmp_path / "set" / f"{i}.png" for i in range(200)]
    train_files, val_files = split_sources(files, 0.1)
    assert 8 <= len(val_files) <= 35 and len(train_files) + len(val_files) == 200
    more = split_sources([*files, tmp_path / "set" / "new.png"], 0.1)[1]
    assert set(val_files) <= set(more)


def test_config_rejects_bad_values(photo_folder, tmp_path):
    with pytest.raises(ValueError, match="steps"):
        tiny_config(photo_folder, tmp_path, steps=0)
    with pytest.raises(ValueError, match="precision"):
        tiny_config(photo_folder, tmp_path, precision="fp16")
    with pytest.raises(ValueError, match="ssim_weight"):
        tiny_config(photo_folder, tmp_path, optim={"ssim_weight": 1.5})
    assert TrainConfig().model == ModelConfig() and TrainConfig().data.pairs == PairConfig()
    assert DataConfig().workers == 2


def _ddp_worker(rank, world, port, photo_folder, out_dir, result_dir):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    config = tiny_config(photo_folder, out_dir, steps=3, val_every=3, checkpoint_every=3)
    summary = train(config, progress=False)
    state = {k: v.contiguous() for k, v in summary.model.state_dict().items()}
    save_file(state, str(result_dir / f"rank{rank}.safetensors"))


def test_distributed_ranks_hold_identical_weights(photo_folder, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, photo_folder, tmp_path / "run", tmp_path), nprocs=2)
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    init = tiny_config(photo_folder, tmp_path / "x")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # Both ranks trained: the weights moved away from the seeded initial ones.
    start = build_model(init.model, torch.Generator().manual_seed(init.seed)).state_dict()
    assert any(not torch.equal(start[n], a[n]) for n in a)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_0000003.safetensors"


@pytest.fixture(scope="module")
def sid_lists(photo_folder, tmp_path_factory):
    """A tiny SID-layout dataset (train and val scenes) simulated from the test photo folder."""
    root = tmp_path_factory.mktemp("sid")
    simulate_sid_layout(photo_folder, root, ("train", "val"))
    return root / "train" / "Sony_train_list.txt", root / "val" / "Sony_val_list.txt"


@pytest.fixture(scope="module")
def pretrained(photo_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    train(tiny_config(photo_folder, out, steps=2, val_every=2, checkpoint_every=2), progress=False)
    return latest_checkpoint(out / "checkpoints")


def sid_config(photo_folder, sid_lists, out_dir, **changes):
    train_list, val_list = sid_lists
    config = tiny_config(photo_folder, out_dir, steps=3, val_every=3, checkpoint_every=3)
    data = replace(
        config.data,
        kind=DataKind.SID,
        sid_train_list=str(train_list),
        sid_val_list=str(val_list),
        sid_cache=str(out_dir.parent / "gt"),
        val_items=2,
    )
    return replace(config, data=data, **changes)


@pytest.mark.parametrize("strategy", ["full", "seed", "head", "freeze-encoder"])
def test_transfer_strategies(photo_folder, sid_lists, pretrained, tmp_path, strategy):
    config = sid_config(
        photo_folder, sid_lists, tmp_path / "ft", init_from=str(pretrained), transfer=strategy
    )
    before = load_checkpoint(pretrained).model_state
    after = train(config, progress=False).model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    fc = {name for name in before if name.startswith("fc.")}
    encoder = {name for name in before if name.startswith("encoder.")}
    if strategy == "head":
        assert changed == fc
    elif strategy == "freeze-encoder":
        assert changed and not changed & encoder
    else:
        assert changed & encoder and changed & fc


def test_seed_strategy_erases_the_fc_layers(photo_folder, sid_lists, pretrained, tmp_path):
    from darkraw.training.train import Transfer, _start_from

    model = build_model(ModelConfig(width=4, fc_hidden=8))
    _start_from(model, pretrained, Transfer.SEED, seed=0)
    loaded = load_checkpoint(pretrained).model_state
    state = model.state_dict()
    assert not torch.equal(state["fc.0.weight"], loaded["fc.0.weight"])
    assert torch.equal(state["encoder.0.0.weight"], loaded["encoder.0.0.weight"])
    wider = build_model(ModelConfig(width=8))
    with pytest.raises(DarkrawError, match="network, the config asks for"):
        _start_from(wider, pretrained, Transfer.FULL, seed=0)


def test_start_from_a_model_file_or_a_bundled_model(pretrained, tmp_path, monkeypatch):
    import darkraw.nn.modelfiles
    from darkraw.nn.infer import load_model, save_model_file
    from darkraw.training.train import Transfer, _start_from

    file = save_model_file(tmp_path / "m.safetensors", load_model(pretrained))
    expected = load_model(file).state_dict()
    model = build_model(ModelConfig(width=4, fc_hidden=8))
    _start_from(model, file, Transfer.FULL, seed=0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    # A bundled model by name: "default" names the file bundled_model_path gives.
    monkeypatch.setattr(darkraw.nn.modelfiles, "bundled_model_path", lambda name: file)
    fresh = build_model(ModelConfig(width=4, fc_hidden=8))
    _start_from(fresh, Path("default"), Transfer.FULL, seed=0)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in expected.items())
    with pytest.raises(DarkrawError, match="network, the config asks for"):
        _start_from(build_model(ModelConfig(width=8)), file, Transfer.FULL, seed=0)


def test_raw_loss_compares_the_output_with_the_target_through_the_srgb_curve():
    from darkraw.nn.model import raw_tone

    target = torch.tensor([0.0, 0.01, 0.2, 0.9])
    # An output equal to the target's tone has no loss; the linear target itself has.
    assert float(training_loss(raw_tone(target), target, 0.0, raw=True)) < 1e-7
    assert float(training_loss(target, target, 0.0, raw=True)) > 0.05
    under = torch.tensor([-0.05], requires_grad=True)
    training_loss(under, torch.zeros(1), 0.0, raw=True).backward()
    assert under.grad is not None and float(under.grad) < 0  # pushed back up towards black


def test_a_raw_output_run_trains_and_validates_on_planes(photo_folder, tmp_path):
    model = {"width": 4, "fc_hidden": 8, "output": "raw"}
    config = tiny_config(photo_folder, tmp_path / "run", model=model, steps=3, val_every=3)
    summary = train(config, progress=False)
    assert summary.step == 3 and summary.model.config.output == "raw"
    assert math.isfinite(summary.last_loss)
    assert summary.val_psnr is not None and summary.classic_psnr is not None
    records = [
        json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records if "val_psnr" in r] == [3]
    assert list((tmp_path / "run" / "samples").glob("val00_*.png"))
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert ckpt.config["model"]["output"] == "raw"


def test_an_srgb_network_starts_a_raw_output_one(pretrained):
    from darkraw.training.train import Transfer, _start_from

    model = build_model(ModelConfig(width=4, fc_hidden=8, output="raw"))
    _start_from(model, pretrained, Transfer.FULL, seed=0)
    loaded, state = load_checkpoint(pretrained).model_state, model.state_dict()
    for name, value in state.items():
        if name.startswith("fc.2."):
            # Rows of each colour's sub-pixels, averaged (darkraw.nn.model.raw_tail_from_srgb).
            assert value.shape[0] == 4
            torch.testing.assert_close(value[0], loaded[name][0:4].mean(dim=0))
        else:
            assert torch.equal(value, loaded[name])
    with pytest.raises(DarkrawError, match="network, the config asks for"):
        _start_from(build_model(ModelConfig(width=8, output="raw")), pretrained, Transfer.FULL, 0)


def test_a_raw_output_model_does_not_train_on_sid_pairs(photo_folder, sid_lists, tmp_path):
    config = sid_config(photo_folder, sid_lists, tmp_path / "raw")
    config = replace(config, model=ModelConfig(width=4, fc_hidden=8, output="raw"))
    with pytest.raises(DarkrawError, match="raw-output model"):
        train(config, progress=False)


def test_sid_fraction_and_per_ratio_pick_subsets(photo_folder, sid_lists, tmp_path):
    from darkraw.training.train import _Run

    def train_pairs(**data_changes):
        config = sid_config(photo_folder, sid_lists, tmp_path / str(len(data_changes)))
        config = replace(config, data=replace(config.data, **data_changes))
        return _Run(config, False, False).train_set.pairs

    every = train_pairs()
    assert len(every) == 8 * 2  # 8 photo_folder, ratios 100 and 300
    quarter = train_pairs(sid_fraction=0.25)
    assert len(quarter) == 4 and set(quarter) <= set(every)
    two = train_pairs(sid_per_ratio=1, sid_fraction=0.5)
    assert sorted(p.ratio_class for p in two) == [100, 300]


def test_bf16_is_chosen_only_where_it_was_measured_faster():
    def cpu(vendor: str, flags: str) -> str:
        return f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu {flags}\n"

    assert fast_cpu_bf16(cpu("AuthenticAMD", "avx512f avx512_bf16"))  # Zen 5: 1.9x faster
    assert not fast_cpu_bf16(cpu("GenuineIntel", "avx512f avx512_bf16"))  # no AMX: 1.6x slower
    assert fast_cpu_bf16(cpu("GenuineIntel", "avx512f avx512_bf16 amx_tile amx_bf16"))
    assert not fast_cpu_bf16(cpu("AuthenticAMD", "avx2"))  # Zen 3: emulated
    assert not fast_cpu_bf16("")
