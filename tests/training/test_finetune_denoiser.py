"""Fine-tuning the raw denoiser on real (SID-layout) pairs: data, strategies and the command."""

import numpy as np
import pytest
import torch
import yaml

import darkraw.nn.rawdenoise as rawdenoise
from darkraw.cli import main
from darkraw.config import load_config
from darkraw.nn.checkpoint import latest_checkpoint
from darkraw.nn.denoiser import DenoiserConfig, RawDenoiser, build_denoiser
from darkraw.nn.infer import load_model, save_model_file
from darkraw.nn.inputs import FrameInput
from darkraw.nn.modelfiles import model_source
from darkraw.nn.rawdenoise import DenoiseOptions, enhance_with_denoiser
from darkraw.raw.cfa import BayerPattern, pack_bayer
from darkraw.raw.rawio import read_raw
from darkraw.training.denoise_real import (
    FrameCache,
    RealDenoisePairs,
    _mirror_rggb,
    amplified_input,
    input_crop,
    sid_pair_split,
)
from darkraw.training.sid import read_list
from darkraw.training.train_denoiser import (
    DenoiserTrainConfig,
    finetune_config,
    train_denoiser,
)

from conftest import simulate_sid_layout, smooth_photos

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """SID-layout train and val lists (4 scenes, x100 and x300) and a tiny denoiser file."""
    root = tmp_path_factory.mktemp("finetune_denoiser")
    photos = smooth_photos(root / "photos", 4, 48, 64)
    simulate_sid_layout(photos, root, ("train", "val"))
    model = build_denoiser(DenoiserConfig(width=4, levels=2), torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.out.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(4))
    save_model_file(root / "start.safetensors", model, dtype=torch.float32)
    settings = {
        "task": "denoise",
        "data": {
            "kind": "sid",
            "sid_train_list": str(root / "train" / "Sony_train_list.txt"),
            "sid_val_list": str(root / "val" / "Sony_val_list.txt"),
            "sid_cache": str(root / "cache"),
        },
        "val_items": 2,
        "pairs": {"crop": {"patch": 16}},
        "steps": 3,
        "batch_size": 2,
        "warmup": 1,
        "lr": 1e-2,
        "precision": "fp32",
        "workers": 0,
        "log_every": 1,
        "val_every": 3,
        "checkpoint_every": 1,
        "keep_checkpoints": 5,
    }
    (root / "ft.yaml").write_text(yaml.safe_dump(settings))
    return root


def config_for(world, out_dir, transfer="full", **changes):
    base = load_config(DenoiserTrainConfig, world / "ft.yaml")
    config = finetune_config(
        base, init_from=str(world / "start.safetensors"), transfer=transfer, per_ratio=1
    )
    from dataclasses import replace

    return replace(config, out_dir=str(out_dir), **changes)


def test_the_input_is_what_inference_gives_the_network(world, monkeypatch):
    pair = read_list(world / "train" / "Sony_train_list.txt")[0]
    raw = read_raw(pair.short)
    seen = []

    def capture(model, x, options):
        x = x.whole() if isinstance(x, FrameInput) else x  # a frame run once: made by window
        seen.append(x)
        return x[: model.config.planes].copy()  # a new array, as run_denoiser's

    monkeypatch.setattr(rawdenoise, "run_denoiser", capture)
    model = load_model(world / "start.safetensors")
    options = DenoiseOptions(renderer="darkraw", ensemble=1)  # the frame's own pass only
    enhance_with_denoiser(raw.mosaic, raw.meta, model, pair.ratio, options)
    (x,) = seen
    frame = FrameCache(None).frame(pair)
    assert frame.ratio == pair.ratio and x.shape == (8, *frame.planes.shape[1:])
    np.testing.assert_allclose(amplified_input(frame.planes, frame.noise, pair.ratio), x, atol=1e-6)
    # A crop's noise map is the whole frame's there, at the edge as inside.
    for top, left in ((0, 0), (5, 7), (x.shape[1] - 16, x.shape[2] - 16)):
        window = x[:, top : top + 16, left : left + 16]
        np.testing.assert_allclose(input_crop(frame, top, left, 16), window, atol=1e-6)
    item = RealDenoisePairs([pair], patch=16, train=False)[0]
    top, left = (x.shape[1] - 16) // 2, (x.shape[2] - 16) // 2
    np.testing.assert_allclose(
        item["input"].numpy(), x[:, top : top + 16, left : left + 16], atol=1e-6
    )
    assert set(item) == {"input", "target", "gains", "matrix", "ratio", "index"}
    assert item["target"].shape == (4, 16, 16) and float(item["ratio"]) == pair.ratio


def test_the_prepared_planes_are_cached_and_read_back_alike(world, tmp_path):
    pairs = read_list(world / "train" / "Sony_train_list.txt")
    shorts, longs = {p.short for p in pairs}, {p.long for p in pairs}
    for pair in pairs:
        FrameCache(tmp_path).frame(pair)
    # One file per short and per long exposure, though SID's names hold dots.
    assert len(list(tmp_path.glob("*.npy"))) == len(shorts) + len(longs) > 2
    for pair in pairs:
        fresh, again = FrameCache(None).frame(pair), FrameCache(tmp_path).frame(pair)
        np.testing.assert_array_equal(again.planes, fresh.planes)
        np.testing.assert_array_equal(again.target, fresh.target)
        assert again.noise == fresh.noise and again.gains == fresh.gains


def test_mirrored_crops_are_rggb_mosaics_of_the_mirrored_scene():
    rng = np.random.default_rng(0)
    side = 9
    scene = rng.random((3, 2 * side, 2 * side)).astype(np.float32)

    def rggb(rgb):
        mosaic = np.empty(rgb.shape[1:], dtype=np.float32)
        for (r, c), channel in zip(((0, 0), (0, 1), (1, 1), (1, 0)), (0, 1, 2, 1), strict=True):
            mosaic[r::2, c::2] = rgb[channel, r::2, c::2]
        return pack_bayer(mosaic, BayerPattern.RGGB)

    planes = rggb(scene)
    mirrored = scene[:, ::-1, ::-1][:, 1:-1, 1:-1]
    np.testing.assert_array_equal(_mirror_rggb(planes, (True, True, False)), rggb(mirrored))
    plain = _mirror_rggb(planes, (False, False, True))
    np.testing.assert_array_equal(
        plain, rggb(np.ascontiguousarray(scene[:, :-2, :-2].swapaxes(1, 2)))
    )


def test_training_items_are_random_mirrored_crops_of_the_patch(world):
    pairs = read_list(world / "train" / "Sony_train_list.txt")
    data = RealDenoisePairs(pairs, patch=16, length=6, seed=1)
    first = [data[i]["input"] for i in range(6)]
    assert all(x.shape == (8, 16, 16) for x in first)
    torch.testing.assert_close(first[4], data[4]["input"])
    # Every noise map is positive and the planes are clipped at 1 from above only.
    assert all(bool((x[4:] > 0).all()) and float(x[:4].max()) <= 1 for x in first)


def test_without_a_validation_list_whole_scenes_are_held_out(world):
    train, val = sid_pair_split(world / "train" / "Sony_train_list.txt", None, val_fraction=0.25)
    assert val and train and not {p.scene for p in val} & {p.scene for p in train}
    few, _ = sid_pair_split(world / "train" / "Sony_train_list.txt", None, per_ratio=1)
    assert sorted(p.ratio_class for p in few) == [100, 300]


def test_finetune_writes_a_checkpoint_that_loads(world, tmp_path, capsys):
    (tmp_path / "ft.yaml").write_text(
        (world / "ft.yaml").read_text() + f"out_dir: {tmp_path / 'run'}\n"
    )
    start = str(world / "start.safetensors")
    args = ["finetune", str(tmp_path / "ft.yaml"), "--from", start, "--fraction", "0.5"]
    assert main([*args, "--strategy", "decoder"]) == 0
    assert "val_raw_psnr" in capsys.readouterr().out
    newest = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert newest.name == "step_0000003.safetensors"
    assert isinstance(load_model(newest), RawDenoiser)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["transfer"] == "decoder" and saved["init_from"] == start
    assert saved["data"]["sid_fraction"] == 0.5 and saved["model"]["width"] == 4


def _changed(world, out_dir):
    start = load_model(world / "start.safetensors").state_dict()
    end = load_model(latest_checkpoint(out_dir / "checkpoints")).state_dict()
    return {name for name, value in end.items() if not torch.equal(value, start[name])}


def test_head_trains_only_the_output_convolution(world, tmp_path):
    train_denoiser(config_for(world, tmp_path / "head", "head"), progress=False)
    assert _changed(world, tmp_path / "head") == {"out.weight", "out.bias"}


def test_decoder_leaves_the_encoder_as_it_was(world, tmp_path):
    train_denoiser(config_for(world, tmp_path / "dec", "decoder"), progress=False)
    changed = _changed(world, tmp_path / "dec")
    assert changed and not any(name.startswith("encoder.") for name in changed)
    assert any(name.startswith("decoder.") for name in changed)


def test_a_stopped_finetune_resumes_to_the_same_weights(world, tmp_path):
    whole = config_for(world, tmp_path / "a", "decoder")
    train_denoiser(whole, progress=False)
    parts = config_for(world, tmp_path / "b", "decoder")
    train_denoiser(parts, stop_after=1, progress=False)
    summary = train_denoiser(parts, resume=True, progress=False)
    assert summary.step == 3
    a = load_model(latest_checkpoint(tmp_path / "a" / "checkpoints")).state_dict()
    b = load_model(latest_checkpoint(tmp_path / "b" / "checkpoints")).state_dict()
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, msg=name)
    assert not any(name.startswith("encoder.") for name in _changed(world, tmp_path / "b"))


def test_the_bundled_default_is_where_finetuning_starts(world, tmp_path):
    base = load_config(DenoiserTrainConfig, world / "ft.yaml")
    config = finetune_config(base, per_ratio=1)
    default = load_model(model_source("default"))
    assert config.init_from == "default" and config.model == default.config


@pytest.mark.parametrize("strategy", ["seed", "freeze-encoder"])
def test_a_strategy_of_the_sid_network_is_refused_in_one_line(world, capsys, strategy):
    code = main(["finetune", str(world / "ft.yaml"), "--strategy", strategy])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"strategy {strategy} does not apply to the raw denoiser" in err


def test_decoder_is_refused_for_the_sid_network(tmp_path, capsys):
    (tmp_path / "sid.yaml").write_text("data:\n  kind: sid\n")
    code = main(["finetune", str(tmp_path / "sid.yaml"), "--from", "x", "--strategy", "decoder"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the SID network takes" in err


def test_finetune_needs_real_pairs(world, tmp_path, capsys):
    (tmp_path / "syn.yaml").write_text("task: denoise\ntrain: [photos]\n")
    assert main(["finetune", str(tmp_path / "syn.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finetune needs data.kind: sid" in err
