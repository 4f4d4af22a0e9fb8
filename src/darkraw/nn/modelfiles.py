"""Model files and checkpoints as files: which bundled models exist, where they live, and what a
file's header says (its format, config, card), read without torch.

Enhancing with the bundled raw denoiser needs none of torch (:mod:`darkraw.nn.runtime` runs it
through ONNX Runtime), so everything a command asks of a model file before running it lives
here; building a torch network from the weights is :mod:`darkraw.nn.infer`'s.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from darkraw.errors import CheckpointError
from darkraw.nn.denoiser_config import is_denoiser_config

#: Value of the ``format`` metadata entry of a training checkpoint.
CHECKPOINT_FORMAT = "darkraw-checkpoint"

#: Value of the ``format`` metadata entry of a model file.
MODEL_FORMAT = "darkraw-model"

#: Model-file layout version darkraw writes and reads.
MODEL_VERSION = 1

#: What ``--model default`` names: the weights shipped inside the package, when present.
DEFAULT_MODEL = "default"

#: The default's twin for X-Trans (Fujifilm) files: the raw denoiser on nine packed planes,
#: which ``--model default`` runs on them.
XTRANS_MODEL = "xtrans"

#: The bundled models by name, and their files under ``darkraw/data``: the default, the raw
#: denoiser (:mod:`darkraw.nn.denoiser`), and its X-Trans twin; ``sid``, the seed's
#: See-in-the-Dark U-Net, which renders colour itself; and ``small``, its half-width version,
#: 2-3x faster.
BUNDLED_MODELS = {
    DEFAULT_MODEL: "denoiser_model.safetensors",
    XTRANS_MODEL: "denoiser_xtrans_model.safetensors",
    "sid": "sid_model.safetensors",
    "small": "small_model.safetensors",
}

#: Deepest nesting of lists and objects a metadata entry may have. darkraw writes 5 levels at
#: most (an optimizer's state); a file may hold 100,000, which Python's JSON parser and any
#: recursive walk of the result meet as a RecursionError.
MAX_JSON_DEPTH = 32


def read_safetensors_file(
    path: Path, what: str, *, framework: str = "numpy", tensors: bool = True
) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors (as ``framework``'s arrays) and metadata of a safetensors file, with one-line
    errors naming it.

    Never unpickles: a ``torch.save`` pickle is refused as not safetensors.

    Args:
        what: what the file should be, for the messages (``"checkpoint"``, ``"model file"``).
        framework: ``"numpy"`` or ``"pt"`` (torch tensors; needs torch).
        tensors: read the tensors too (``False``: metadata only, from the header).

    Raises:
        CheckpointError: missing, not a file, unreadable, truncated or not safetensors.
    """
    if not path.exists():
        raise CheckpointError(path, f"no such {what}")
    if not path.is_file():
        raise CheckpointError(path, "not a file")
    try:
        with safe_open(str(path), framework=framework, device="cpu") as file:
            metadata = dict(file.metadata() or {})
            state = {key: file.get_tensor(key) for key in file.keys()} if tensors else {}  # noqa: SIM118
    except SafetensorError as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(
            path, f"not a complete safetensors {what} (pickles are refused): {reason}"
        ) from None
    except OSError as err:
        raise CheckpointError(path, f"cannot read ({err.strerror or err})") from None
    return state, metadata


def parse_json_entry(path: Path, text: str, what: str) -> Any:
    """One JSON metadata entry of a safetensors file, nested at most :data:`MAX_JSON_DEPTH` deep.

    Args:
        what: the entry, for the messages (``"checkpoint metadata 'extra'"``).

    Raises:
        CheckpointError: one line naming ``path``: not valid JSON, or nested too deeply.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise CheckpointError(path, f"{what} is nested too deeply") from None
    except ValueError:
        # JSONDecodeError, and integers of more than 4300 digits.
        raise CheckpointError(path, f"{what} is not valid JSON") from None
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise CheckpointError(
            path, f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels)"
        )
    return value


def _json_depth(value: Any) -> int:
    """Nesting depth of lists and dicts in parsed JSON, without recursion; stops past the limit."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def read_metadata(path: Path) -> dict[str, str]:
    """A model file's or checkpoint's metadata, from its header alone."""
    return read_safetensors_file(path, "model file", tensors=False)[1]


def json_entry(path: Path, metadata: Mapping[str, str], key: str) -> Any:
    """The metadata entry ``key``, parsed; its absence is a one-line error."""
    if key not in metadata:
        raise CheckpointError(path, f"a safetensors file but not a darkraw model (no {key!r})")
    return parse_json_entry(path, metadata[key], f"metadata {key!r}")


def show(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a one-line message, shortened: metadata may hold anything."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def is_model_file(path: str | Path) -> bool:
    """Whether ``path`` is a model file (not a training checkpoint); reads only the header.

    Raises:
        CheckpointError: it is missing, not safetensors, or not a darkraw file.
    """
    path = Path(path)
    return bool(json_entry(path, read_metadata(path), "format") == MODEL_FORMAT)


def model_card(path: str | Path) -> dict[str, Any]:
    """The card of a model file (empty for a training checkpoint); reads only the header."""
    path = Path(path)
    metadata = read_metadata(path)
    if json_entry(path, metadata, "format") != MODEL_FORMAT:
        return {}
    card = json_entry(path, metadata, "card")
    if not isinstance(card, dict):
        raise CheckpointError(path, "model card is not a JSON object")
    return card


def model_arch(spec: str | Path) -> str:
    """Which network a model spec holds, from the file's header alone: ``"raw_denoiser"`` or
    ``"sid"``. An ONNX file (``.onnx``) is a raw denoiser exported by
    :func:`darkraw.nn.onnx_export.export_denoiser_onnx`.

    Raises:
        CheckpointError: the file is missing, not safetensors or not a darkraw model.
    """
    path = existing_source(spec)
    if path.suffix.lower() == ".onnx":
        return "raw_denoiser"
    metadata = read_metadata(path)
    fmt = json_entry(path, metadata, "format")
    config = json_entry(path, metadata, "config")
    if not isinstance(config, dict):
        raise CheckpointError(path, "its config is not a JSON object")
    if fmt == CHECKPOINT_FORMAT:
        return "raw_denoiser" if config.get("task") == "denoise" else "sid"
    return "raw_denoiser" if is_denoiser_config(config) else "sid"


def bundled_model_path(name: str) -> Path:
    """Where the bundled model ``name`` (a key of :data:`BUNDLED_MODELS`) lives; may be absent."""
    return Path(str(importlib.resources.files("darkraw").joinpath("data", BUNDLED_MODELS[name])))


def bundled_onnx_path(name: str) -> Path:
    """Where the ONNX export of the bundled model ``name`` lives (beside its weights); may be
    absent (only the default raw denoiser ships one)."""
    return bundled_model_path(name).with_suffix(".onnx")


def bundled_int8_path(name: str) -> Path:
    """Where the int8 ONNX version of the bundled model ``name`` lives (quantisation-aware
    fine-tuned from its weights, ``scripts/qat_denoiser.py``); may be absent."""
    path = bundled_model_path(name)
    return path.with_name(f"{path.stem}_int8.onnx")


def model_source(spec: str | Path) -> Path:
    """The file a model spec names: a bundled model's file, or the path itself."""
    if str(spec) in BUNDLED_MODELS:
        return bundled_model_path(str(spec))
    return Path(spec)


def existing_source(spec: str | Path) -> Path:
    """The file a model spec names; a bundled model that is absent is a one-line error."""
    if str(spec) not in BUNDLED_MODELS:
        return Path(spec)
    path = bundled_model_path(str(spec))
    if not path.is_file():
        raise CheckpointError(
            path,
            f"no {spec} model is bundled with this darkraw yet; "
            "give a model file or checkpoint, or use the classic pipeline",
        )
    return path
