import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from darkraw.errors import CheckpointError, DarkrawError, OutputError
from darkraw.nn.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    numpy_rng_from_json,
    numpy_rng_state_to_json,
    save_checkpoint,
    torch_rng_state_from_json,
    torch_rng_state_to_json,
)
from darkraw.nn.model import ModelConfig, build_model

TINY = ModelConfig(width=4, fc_hidden=8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.rand(1, 4, 8, 8, generator=g), torch.rand(1, 3, 16, 16, generator=g)


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    x, y = _batch(seed)
    opt.zero_grad()
    F.l1_loss(model(x), y).backward()
    opt.step()


def _make_optimizer(kind: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return torch.optim.SGD(model.parameters(), lr=0.01)  # no momentum: None buffers


def _saved(tmp_path, step=2, **kwargs):
    model = build_model(TINY, _gen(0))
    opt = _make_optimizer("adam", model)
    for i in range(step):
        _train_step(model, opt, i)
    path = tmp_path / checkpoint_name(step)
    save_checkpoint(
        path,
        model_state=model.state_dict(),
        optimizer_state=opt.state_dict(),
        step=step,
        config={"model": TINY.to_dict()},
        **kwargs,
    )
    return path


def _assert_same_structure(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same_structure(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _assert_same_structure(u, v)
    else:
        assert a == b


# One thread: with two, oneDNN's weight gradient may sum in a different order from one call to
# the next (seen on a 2-core Xeon), which no checkpoint could make identical.
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "sgd-plain"])
def test_resume_gives_bitwise_identical_next_step(tmp_path, kind):
    model = build_model(TINY, _gen(0))
    opt = _make_optimizer(kind, model)
    for i in range(2):
        _train_step(model, opt, i)
    path = tmp_path / "step_0000002.safetensors"
    save_checkpoint(
        path,
        model_state=model.state_dict(),
        optimizer_state=opt.state_dict(),
        step=2,
        config={"model": TINY.to_dict(), "lr": 1e-3},
    )
    ckpt = load_checkpoint(path)
    _assert_same_structure(ckpt.optimizer_state, opt.state_dict())

    fresh = build_model(ModelConfig.from_dict(ckpt.config["model"]), _gen(99))
    fresh_opt = _make_optimizer(kind, fresh)
    fresh.load_state_dict(ckpt.model_state)
    fresh_opt.load_state_dict(ckpt.optimizer_state)
    _train_step(model, opt, 2)
    _train_step(fresh, fresh_opt, 2)
    for (name, p), q in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert ckpt.step == 2
    assert ckpt.config == {"model": TINY.to_dict(), "lr": 1e-3}


def test_file_layout_is_plain_safetensors_with_json_metadata(tmp_path):
    path = _saved(tmp_path, extra={"history": [{"step": 1, "loss": 0.5}]})
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert "model.encoder.0.0.weight" in keys and "model.fc.2.bias" in keys
    assert {"optim.state.0.exp_avg", "optim.state.0.exp_avg_sq", "optim.state.0.step"} <= keys
    assert all(k.startswith(("model.", "optim.")) for k in keys)
    assert json.loads(meta["format"]) == FORMAT == "darkraw-checkpoint"
    assert json.loads(meta["version"]) == 1
    assert json.loads(meta["step"]) == 2
    assert json.loads(meta["config"]) == {"model": TINY.to_dict()}
    assert len(json.loads(meta["sha256"])) == 64
    assert load_checkpoint(path).extra == {"history": [{"step": 1, "loss": 0.5}]}


def test_channels_last_and_bf16_weights_round_trip(tmp_path):
    model = build_model(TINY, _gen(0)).to(memory_format=torch.channels_last)
    state = model.state_dict()
    state["half"] = torch.randn(3, 2, generator=_gen(1)).to(torch.bfloat16)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model_state=state, optimizer_state=None, step=0, config={})
    ckpt = load_checkpoint(path, map_location=torch.device("cpu"))
    assert ckpt.optimizer_state is None and ckpt.rng is None and ckpt.extra == {}
    assert set(ckpt.model_state) == set(state)
    for key, value in state.items():
        assert ckpt.model_state[key].dtype == value.dtype
        assert torch.equal(ckpt.model_state[key], value), key


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch_gen = _gen(3)
    torch.rand(5, generator=torch_gen)
    pcg = np.random.default_rng(2**100 + 7)  # a 128-bit state, beyond float precision
    pcg.random(3)
    mt = np.random.Generator(np.random.MT19937(5))
    rng = {
        "torch": torch_rng_state_to_json(torch_gen.get_state()),
        "numpy": numpy_rng_state_to_json(pcg),
        "mt": numpy_rng_state_to_json(mt),
    }
    path = _saved(tmp_path, rng=rng)
    loaded = load_checkpoint(path).rng
    assert loaded == rng
    restored = torch.Generator()
    restored.set_state(torch_rng_state_from_json(loaded["torch"]))
    assert torch.equal(torch.rand(4, generator=restored), torch.rand(4, generator=torch_gen))
    np.testing.assert_array_equal(numpy_rng_from_json(loaded["numpy"]).random(4), pcg.random(4))
    np.testing.assert_array_equal(numpy_rng_from_json(loaded["mt"]).random(4), mt.random(4))


def test_rng_helpers_reject_junk():
    with pytest.raises(ValueError, match="uint8"):
        torch_rng_state_to_json(torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        torch_rng_state_from_json([1, 256])
    with pytest.raises(ValueError, match="os"):
        numpy_rng_from_json({"bit_generator": "os", "state": {}})


@pytest.mark.parametrize("where", ["start", "in_length", "in_header", "header_end", "data", "last"])
def test_truncated_file_is_refused(tmp_path, where):
    path = _saved(tmp_path)
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    cut = {
        "start": 0,
        "in_length": 5,
        "in_header": 8 + header_len // 2,
        "header_end": 8 + header_len,
        "data": (8 + header_len + len(data)) // 2,
        "last": len(data) - 1,
    }[where]
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_flipped_byte_fails_the_sha256(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_edited_metadata_fails_the_sha256(tmp_path):
    path = _saved(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = dict(f.metadata())
    meta["step"] = "7"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: what a hostile checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()  # the payload really does run when unpickled

    marker = tmp_path / "marker"
    torch_file = tmp_path / "step_0000009.safetensors"
    torch.save({"model": {"w": torch.ones(2)}, "evil": _Payload(marker)}, torch_file)
    plain_file = tmp_path / "plain.safetensors"
    plain_file.write_bytes(pickle.dumps(_Payload(marker)))
    for path in (torch_file, plain_file):
        with pytest.raises(CheckpointError, match="pickles are refused"):
            load_checkpoint(path)
    assert latest_checkpoint(tmp_path) is None
    assert not marker.exists()


def test_missing_file_and_wrong_format(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.ones(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a darkraw checkpoint"):
        load_checkpoint(other)
    save_file({"x": torch.ones(2)}, str(other), metadata={"format": json.dumps("something")})
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(other)


def test_wrong_format_and_version_are_refused(tmp_path):
    path = _saved(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = dict(f.metadata())
    for key, value, message in (
        ("format", json.dumps("other-tool"), "not a darkraw checkpoint"),
        ("version", "2", "version 2"),
    ):
        save_file(tensors, str(path), metadata={**meta, key: value})
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


def test_checkpoint_error_is_a_darkraw_error_with_one_line(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DarkrawError) as info:
        load_checkpoint(path)
    assert isinstance(info.value, CheckpointError)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_latest_checkpoint_skips_corrupt_and_temporary_files(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 10):
        _saved(tmp_path, step=step)
    assert latest_checkpoint(tmp_path) == tmp_path / checkpoint_name(10)
    newest = tmp_path / checkpoint_name(10)
    newest.write_bytes(newest.read_bytes()[:-100])
    (tmp_path / ".step_0000011.abc123.part.safetensors").write_bytes(b"partial")
    (tmp_path / "step_0000012.safetensors.tmp").write_bytes(b"partial")
    (tmp_path / "step_0000013.safetensors").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / checkpoint_name(2)


def test_latest_checkpoint_orders_by_step_number_not_name(tmp_path):
    small, big = tmp_path / "step_99.safetensors", tmp_path / "step_000100.safetensors"
    for path, step in ((small, 99), (big, 100)):
        save_checkpoint(path, model_state={}, optimizer_state=None, step=step, config={})
    assert latest_checkpoint(tmp_path) == big
    assert CHECKPOINT_NAME.fullmatch(checkpoint_name(123)) is not None


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OutputError, match="No space left"):
        save_checkpoint(path, model_state={}, optimizer_state=None, step=3, config={})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_save_rejects_bad_arguments_naming_the_spot(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match=r"config\['lr'\]: ndarray"):
        save_checkpoint(
            path, model_state={}, optimizer_state=None, step=0, config={"lr": np.ones(2)}
        )
    with pytest.raises(TypeError, match="JSON keys must be str"):
        save_checkpoint(path, model_state={}, optimizer_state=None, step=0, config={1: 2})
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(path, model_state={}, optimizer_state=None, step=-1, config={})
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(path, model_state={}, optimizer_state=None, step=True, config={})
    with pytest.raises(TypeError, match="model_state"):
        save_checkpoint(path, model_state={"w": [1.0]}, optimizer_state=None, step=0, config={})
    with pytest.raises(ValueError, match="param_groups"):
        save_checkpoint(path, model_state={}, optimizer_state={"x": 1}, step=0, config={})
    with pytest.raises(OutputError, match="does not exist"):
        save_checkpoint(
            tmp_path / "absent" / "x.safetensors",
            model_state={},
            optimizer_state=None,
            step=0,
            config={},
        )
    assert not path.exists()
