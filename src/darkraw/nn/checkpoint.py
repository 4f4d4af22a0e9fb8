"""Training checkpoints that load without executing pickled code.

One checkpoint is one `safetensors <https://huggingface.co/docs/safetensors>`_ file. Its tensors
are the model weights under ``model.`` and the optimizer's tensors under ``optim.`` (per-parameter
state as ``optim.state.<param_index>.<name>``). Its string metadata holds JSON:

- ``format``: ``"darkraw-checkpoint"``; ``version``: 1;
- ``config``: the resolved run config, so the network can be rebuilt from the file alone;
- ``step``: the optimizer steps taken; ``rng``: random-generator states; ``extra``: free JSON;
- ``optim``: the optimizer state's non-tensor parts (param groups, scalar state), with each of its
  tensors replaced by ``{"__tensor__": key}``, tuples by ``{"__tuple__": [...]}`` and
  integer-keyed dicts by ``{"__int_dict__": [[key, value], ...]}`` so the structure comes back
  exactly as ``torch.optim.Optimizer.state_dict`` made it;
- ``sha256``: a digest of every tensor (name, dtype, shape and bytes, in sorted key order) and of
  the other metadata entries, checked on every load.

Loading parses only the safetensors header and raw tensor bytes, so a pickle (``torch.save``
output, possibly malicious) is refused before any of it is interpreted. Files are written to a
temporary name, fsynced and renamed, so a crash never leaves a half-written checkpoint under the
real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from darkraw.errors import CheckpointError, OutputError
from darkraw.nn.modelfiles import (
    CHECKPOINT_FORMAT,
    parse_json_entry,
    read_safetensors_file,
)
from darkraw.raw.fileio import atomic_output

#: Value of the ``format`` metadata entry.
FORMAT = CHECKPOINT_FORMAT

#: Checkpoint layout version this module writes and reads.
VERSION = 1

#: Tensor-name prefixes of the model weights and the optimizer state.
MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."

#: File names :func:`latest_checkpoint` considers: ``step_<digits>.safetensors``.
CHECKPOINT_NAME = re.compile(r"step_(\d+)\.safetensors")

_METADATA_KEYS = ("format", "version", "config", "step", "rng", "extra", "optim", "sha256")
_TENSOR, _TUPLE, _INT_DICT = "__tensor__", "__tuple__", "__int_dict__"
_TAGS = frozenset({_TENSOR, _TUPLE, _INT_DICT})
_NUMPY_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes:
        model_state: the model's ``state_dict`` (keys without the ``model.`` prefix).
        optimizer_state: ``{"state": {index: {...}}, "param_groups": [...]}`` as
            ``torch.optim.Optimizer.load_state_dict`` takes it, or ``None`` if none was saved.
        step: optimizer steps taken when the checkpoint was written.
        config: the resolved config the caller saved.
        rng: random-generator states the caller saved, or ``None``.
        extra: free-form JSON the caller saved (empty if none).
    """

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    step: int
    config: dict[str, Any]
    rng: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint after ``step`` steps: ``step_0000123.safetensors``."""
    _check_step(step)
    return f"step_{step:07d}.safetensors"


def save_checkpoint(
    path: str | Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any] | None,
    step: int,
    config: Mapping[str, Any],
    rng: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write one checkpoint file atomically.

    Args:
        path: the ``.safetensors`` file to write; its folder must exist.
        model_state: ``model.state_dict()``; tensors of any dtype and device (copied to CPU).
        optimizer_state: ``optimizer.state_dict()``, or ``None``.
        step: optimizer steps taken, ``>= 0``.
        config: the resolved config, JSON-able (tuples are stored as lists).
        rng: JSON-able random-generator states (see :func:`torch_rng_state_to_json` and
            :func:`numpy_rng_state_to_json`).
        extra: any other JSON-able data (loss history, ...).

    Raises:
        TypeError: a value that is not a tensor or not JSON-able, naming where it sits.
        ValueError: a bad step or an optimizer state without the usual structure.
        OutputError: the file cannot be written.
    """
    path = Path(path)
    _check_step(step)
    for what, value, optional in (
        ("config", config, False),
        ("rng", rng, True),
        ("extra", extra, True),
    ):
        if not isinstance(value, Mapping) and not (optional and value is None):
            raise TypeError(f"{what} must be a mapping, got {type(value).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    if not isinstance(model_state, Mapping):
        raise TypeError(f"model_state must be a mapping, got {type(model_state).__name__}")
    for name, tensor in model_state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"model_state must map str to Tensor, got {name!r}: {type(tensor).__name__}"
            )
        tensors[MODEL_PREFIX + name] = _cpu_copy(tensor)
    optim_json = None
    if optimizer_state is not None:
        if not isinstance(optimizer_state, Mapping) or set(optimizer_state) != {
            "state",
            "param_groups",
        }:
            raise ValueError(
                "optimizer_state must be an optimizer state_dict with keys 'state' and "
                f"'param_groups', got {_describe_keys(optimizer_state)}"
            )
        optim_json = _encode(optimizer_state, OPTIM_PREFIX.rstrip("."), tensors)
    metadata = {
        "format": json.dumps(FORMAT),
        "version": json.dumps(VERSION),
        "config": json.dumps(_plain_json(config, "config")),
        "step": json.dumps(step),
        "rng": json.dumps(None if rng is None else _plain_json(rng, "rng")),
        "extra": json.dumps(_plain_json(extra or {}, "extra")),
        "optim": json.dumps(optim_json),
    }
    write_sealed(path, tensors, metadata, "checkpoint")


def write_sealed(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], what: str
) -> None:
    """Write a safetensors file whose metadata carries a ``sha256`` of all of it, atomically.

    Shared by checkpoints and model files (:mod:`darkraw.nn.infer`); ``what`` names the file kind
    in the one-line error a failed write gives.
    """
    metadata["sha256"] = json.dumps(content_digest(tensors, metadata))
    data = safetensors_bytes(tensors, metadata)
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            # The rename is atomic, but without fsync a power cut can leave the new name
            # pointing at blocks that were never written.
            os.fsync(file.fileno())
    except OSError as err:
        raise OutputError(path, f"cannot write {what} ({err.strerror or err})") from None
    _fsync_folder(path.parent)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Tensors are verified on the CPU, then moved to ``map_location``.

    Raises:
        CheckpointError: the file is missing, truncated, not safetensors (a pickle, say), not a
            darkraw checkpoint, of another version, or fails its sha256 check.
    """
    path = Path(path)
    tensors, metadata = read_safetensors(path, "checkpoint")
    values = _parse_metadata(path, tensors, metadata)
    model_state: dict[str, torch.Tensor] = {}
    optim_tensors: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if key.startswith(MODEL_PREFIX):
            model_state[key.removeprefix(MODEL_PREFIX)] = tensor.to(map_location)
        elif key.startswith(OPTIM_PREFIX):
            optim_tensors[key] = tensor.to(map_location)
        else:
            raise CheckpointError(path, f"unexpected tensor {key!r} in the checkpoint")
    optimizer_state = None
    if values["optim"] is not None:
        used: set[str] = set()
        try:
            optimizer_state = _decode(path, values["optim"], optim_tensors, used)
        except RecursionError:
            raise CheckpointError(path, "optimizer state is nested too deeply") from None
        if not isinstance(optimizer_state, dict):
            raise CheckpointError(path, "optimizer state is not a dict")
        unused = set(optim_tensors) - used
        if unused:
            raise CheckpointError(path, f"optimizer tensors {sorted(unused)} are not referenced")
    elif optim_tensors:
        raise CheckpointError(path, "optimizer tensors present but no optimizer state")
    return Checkpoint(
        model_state=model_state,
        optimizer_state=optimizer_state,
        step=values["step"],
        config=values["config"],
        rng=values["rng"],
        extra=values["extra"],
    )


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint in ``directory`` with the highest step that loads and verifies.

    Only files named ``step_<digits>.safetensors`` count, so the temporary files of a write in
    progress are ignored; a newer file that fails verification (cut short by a crash, say) is
    skipped in favour of the next older one. ``None`` if there is none or ``directory`` does not
    exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = []
    for entry in directory.iterdir():
        match = CHECKPOINT_NAME.fullmatch(entry.name)
        if match and entry.is_file():
            candidates.append((int(match.group(1)), entry))
    for _, candidate in sorted(candidates, reverse=True):
        try:
            load_checkpoint(candidate)
        except CheckpointError:
            continue
        return candidate
    return None


def torch_rng_state_to_json(state: torch.Tensor) -> list[int]:
    """A torch generator state (``torch.get_rng_state()``, ``Generator.get_state()``) as ints."""
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.ndim != 1:
        raise ValueError(f"expected a 1-D uint8 RNG state tensor, got {_describe_tensor(state)}")
    return [int(v) for v in state.tolist()]


def torch_rng_state_from_json(values: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`torch_rng_state_to_json`: a 1-D uint8 tensor for ``set_state``."""
    if isinstance(values, str | bytes) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values
    ):
        raise ValueError("expected a list of ints in [0, 255] for a torch RNG state")
    return torch.tensor(list(values), dtype=torch.uint8)


def numpy_rng_state_to_json(generator: np.random.Generator) -> dict[str, Any]:
    """``generator.bit_generator.state`` with arrays as lists, ready for JSON.

    Python's ``json`` keeps integers exact at any size, so PCG64's 128-bit state survives; a tool
    that reads JSON numbers as doubles (JavaScript, jq) would not, so do not edit it by hand.
    """
    json_state: dict[str, Any] = _plain_json(
        _numpy_to_python(generator.bit_generator.state), "numpy RNG state"
    )
    return json_state


def numpy_rng_from_json(state: Mapping[str, Any]) -> np.random.Generator:
    """A new ``numpy.random.Generator`` in the state :func:`numpy_rng_state_to_json` recorded."""
    name = state.get("bit_generator") if isinstance(state, Mapping) else None
    if name not in _NUMPY_BIT_GENERATORS:
        raise ValueError(
            "expected a numpy bit generator state naming one of "
            f"{', '.join(_NUMPY_BIT_GENERATORS)}, got bit_generator={name!r}"
        )
    bit_generator = getattr(np.random, name)()
    # The setters accept lists where the getter reported arrays (MT19937 key, Philox counter).
    bit_generator.state = dict(state)
    return np.random.Generator(bit_generator)


def _check_step(step: int) -> None:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    # A private contiguous copy: safetensors refuses shared or strided (channels_last) storage.
    out = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
    out.copy_(tensor.detach())
    return out


def _describe_keys(value: object) -> str:
    if isinstance(value, Mapping):
        return f"keys {sorted(map(str, value))}"
    return type(value).__name__


def _describe_tensor(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _plain_json(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (tuples become lists); ``TypeError`` naming the spot."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: JSON keys must be str, got {key!r}")
            out[key] = _plain_json(item, f"{where}[{key!r}]")
        return out
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-able")


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Optimizer state to tagged JSON; tensors move to ``tensors`` under their path ``key``."""
    if isinstance(value, torch.Tensor):
        if key in tensors:
            raise ValueError(f"optimizer state has two tensors named {key!r}")
        tensors[key] = _cpu_copy(value)
        return {_TENSOR: key}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        keys = list(value)
        if all(isinstance(k, str) for k in keys):
            if _TAGS & set(keys):
                raise ValueError(f"optimizer state at {key!r} uses a reserved key {keys}")
            return {k: _encode(v, f"{key}.{k}", tensors) for k, v in value.items()}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            return {_INT_DICT: [[k, _encode(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
        raise TypeError(f"optimizer state at {key!r}: keys must be all str or all int, got {keys}")
    raise TypeError(f"optimizer state at {key!r}: {type(value).__name__} cannot be saved")


def _decode(path: Path, value: Any, tensors: Mapping[str, torch.Tensor], used: set[str]) -> Any:
    """Inverse of :func:`_encode`; ``used`` collects the tensor keys referenced."""
    if isinstance(value, list):
        return [_decode(path, v, tensors, used) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == _TENSOR:
            if inner not in tensors or inner in used:
                raise CheckpointError(path, f"optimizer tensor {inner!r} is missing or reused")
            used.add(inner)
            return tensors[inner]
        if tag == _TUPLE and isinstance(inner, list):
            return tuple(_decode(path, v, tensors, used) for v in inner)
        if tag == _INT_DICT and isinstance(inner, list):
            if not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], int) for p in inner
            ):
                raise CheckpointError(path, "malformed integer-keyed dict in optimizer state")
            return {k: _decode(path, v, tensors, used) for k, v in inner}
    return {k: _decode(path, v, tensors, used) for k, v in value.items()}


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def content_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """sha256 over every tensor and metadata entry (except ``sha256``), in sorted key order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key]
        digest.update(f"{key}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(_tensor_bytes(tensor))
    for key in sorted(metadata):
        if key != "sha256":
            digest.update(f"{key}\0{metadata[key]}\0".encode())
    return digest.hexdigest()


def read_safetensors(
    path: Path, what: str, *, tensors: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """:func:`~darkraw.nn.modelfiles.read_safetensors_file` with torch tensors."""
    return read_safetensors_file(path, what, framework="pt", tensors=tensors)


def _parse_metadata(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> dict[str, Any]:
    if "format" not in metadata:
        raise CheckpointError(path, "a safetensors file but not a darkraw checkpoint (no format)")
    values: dict[str, Any] = {}
    for key in _METADATA_KEYS:
        if key not in metadata:
            raise CheckpointError(path, f"checkpoint metadata lacks {key!r}")
        values[key] = parse_json_entry(path, metadata[key], f"checkpoint metadata {key!r}")
    if values["format"] != FORMAT:
        raise CheckpointError(path, f"not a darkraw checkpoint (format {values['format']!r})")
    if values["version"] != VERSION:
        raise CheckpointError(
            path, f"checkpoint version {values['version']!r} is not supported (reads {VERSION})"
        )
    if values["sha256"] != content_digest(tensors, metadata):
        raise CheckpointError(path, "sha256 mismatch: the checkpoint is corrupt")
    step = values["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(path, f"bad step {step!r} in checkpoint metadata")
    for key, allow_none in (("config", False), ("rng", True), ("extra", False)):
        if not (isinstance(values[key], dict) or (allow_none and values[key] is None)):
            raise CheckpointError(path, f"checkpoint metadata {key!r} is not a JSON object")
    return values


def _numpy_to_python(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _numpy_to_python(v) for k, v in value.items()}
    return value


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; best effort where folders cannot be opened."""
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
