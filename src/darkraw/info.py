"""Describing raw files, and this machine's runtimes: what ``darkraw info`` prints."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from darkraw.errors import DarkrawError, RawReadError
from darkraw.parallel import cpu_threads
from darkraw.raw.fileio import scan_inputs
from darkraw.raw.rawio import BARE_EXTENSIONS, RAW_EXTENSIONS, BareMosaicSpec, read_raw


def describe_file(path: str | Path, bare: BareMosaicSpec | None = None) -> dict[str, Any]:
    """Metadata and pixel statistics of a raw file, as a JSON-ready dictionary."""
    raw = read_raw(path, bare)
    meta = raw.meta
    out: dict[str, Any] = {"file": str(path)}
    out.update(meta.to_dict())
    out["black_levels_rgb"] = list(meta.black_levels_by_color())
    mosaic = raw.mosaic
    out["dn_min"] = float(mosaic.min())
    out["dn_max"] = float(mosaic.max())
    out["dn_mean"] = float(mosaic.mean(dtype=np.float64))
    span = meta.white_level - float(np.mean(meta.black_tile))
    out["mean_level"] = (out["dn_mean"] - float(np.mean(meta.black_tile))) / span
    return out


def describe_inputs(
    inputs: Iterable[str | Path], bare: BareMosaicSpec | None = None
) -> Iterator[dict[str, Any] | DarkrawError]:
    """:func:`describe_file` of every input, folders searched as ``darkraw enhance`` searches
    them (recursively, sorted, hidden files left out; bare mosaics only with ``bare``).

    Yields, in order, each file's description or the error that stopped it; a folder without a
    raw file yields ``FOLDER: no raw files found here``.
    """
    extensions = RAW_EXTENSIONS | (frozenset(BARE_EXTENSIONS) if bare is not None else frozenset())
    for item in inputs:
        files = scan_inputs([item], extensions).files
        if not files:
            yield RawReadError(item, "no raw files found here")
        for path in files:
            try:
                yield describe_file(path, bare)
            except DarkrawError as err:
                yield err


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        if value and isinstance(value[0], list):
            return "; ".join(_fmt(v) for v in value)
        return ", ".join(_fmt(v) for v in value)
    return str(value)


_ROWS = (
    ("file", "file"),
    ("make", "make"),
    ("model", "model"),
    ("source", "read by"),
    ("cfa", "CFA pattern"),
    ("cfa_tile", "CFA tile"),
    ("width", "width"),
    ("height", "height"),
    ("black_tile", "black level (tile)"),
    ("white_level", "white level"),
    ("wb_gains", "camera WB (R, G, B)"),
    ("rgb_cam", "camera -> sRGB"),
    ("exposure_time", "exposure time (s)"),
    ("iso", "ISO"),
    ("flip", "orientation (LibRaw flip)"),
    ("dn_min", "min DN"),
    ("dn_max", "max DN"),
    ("mean_level", "mean level (0..1)"),
)


def format_table(info: dict[str, Any]) -> str:
    """A two-column text table of :func:`describe_file`'s output."""
    return _two_columns([(label, _fmt(info.get(key))) for key, label in _ROWS])


def _two_columns(rows: list[tuple[str, str]]) -> str:
    """Labels padded to the longest, then their values, one row a line."""
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {text}" for label, text in rows)


def format_json(infos: list[dict[str, Any]]) -> str:
    return json.dumps(infos if len(infos) != 1 else infos[0], indent=2)


def describe_runtime(device: str = "auto") -> dict[str, Any]:
    """What runs the networks here and why: the CPU's relevant flags, the runtimes installed,
    and how the default model loads with ``--precision auto`` (it is loaded to find out, so
    the answer includes a stale or missing file's fallback).

    Returns:
        A JSON-ready dictionary.
    """
    import importlib.metadata as metadata
    import platform

    from darkraw.errors import MissingExtraError
    from darkraw.nn.enhance import DefaultDenoiser, load_network
    from darkraw.nn.precision import cpuinfo
    from darkraw.nn.runtime import (
        CACHE_ENV,
        OPENVINO_EXTRA,
        TORCH_EXTRA,
        compiled_model_folder,
        cpu_bf16_fast,
        cpu_int8_fast,
        openvino_available,
        torch_available,
    )
    from darkraw.nn.tiling import ENSEMBLE_AUTO_PIXELS
    from darkraw.raw.rawio import Demosaic, libraw_version

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    out: dict[str, Any] = {
        "cpu": _cpu_name(cpuinfo()) or platform.processor() or platform.machine(),
        "cpu_threads": cpu_threads(),
        "int8_dot_product": cpu_int8_fast(),
        "native_bf16": cpu_bf16_fast(),
        "onnxruntime": version("onnxruntime") or version("onnxruntime-gpu"),
        "openvino": version("openvino") if openvino_available() else None,
        "torch": version("torch") if torch_available() else None,
    }
    if out["openvino"] is None:
        out["openvino_hint"] = OPENVINO_EXTRA
    if out["torch"] is None:
        out["torch_hint"] = TORCH_EXTRA
    try:
        network = load_network("default", device=device)
    except (DarkrawError, MissingExtraError) as err:
        out["default_model"] = f"cannot be loaded: {err}"
    else:
        precision = getattr(network, "precision", "fp32")
        providers = ", ".join(getattr(network, "providers", ()) or ("torch",))
        out["default_model"] = f"{precision} ({providers})"
        out["default_xtrans"] = (
            "its X-Trans twin (--model xtrans), loaded for the first one"
            if isinstance(network, DefaultDenoiser)
            else "no X-Trans twin is bundled: use --method classic"
        )
    folder = compiled_model_folder()
    if not out["openvino"]:
        out["compiled_models"] = "nowhere (OpenVINO is not installed)"
    elif folder is None:
        out["compiled_models"] = f"nowhere ({CACHE_ENV} is set empty)"
    else:
        out["compiled_models"] = f"{folder} (set {CACHE_ENV} to move it, empty for none)"
    # --ensemble auto's rule for the default model (darkraw.nn.rawdenoise.ensemble_passes).
    limits = ", ".join(f"{n} up to {ENSEMBLE_AUTO_PIXELS / n / 1e6:g}" for n in (8, 4, 2))
    out["default_passes"] = f"{limits} Mpixel (the frame mirrored and turned), 1 above"
    out["libraw"] = libraw_version()
    out["demosaic"] = Demosaic.AUTO.describe()
    return out


def _cpu_name(text: str) -> str | None:
    """The first ``model name`` in ``/proc/cpuinfo``'s text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return None


_RUNTIME_ROWS = (
    ("cpu", "CPU"),
    ("cpu_threads", "threads darkraw may use"),
    ("int8_dot_product", "8-bit dot product (VNNI, AMX)"),
    ("native_bf16", "native bf16 (AMD AVX-512 BF16, AMX)"),
    ("onnxruntime", "ONNX Runtime"),
    ("openvino", "OpenVINO"),
    ("torch", "torch"),
    ("default_model", "default model runs in"),
    ("default_passes", "its passes (--ensemble auto)"),
    ("default_xtrans", "X-Trans (Fujifilm) files"),
    ("compiled_models", "OpenVINO's compiled models kept in"),
    ("libraw", "LibRaw"),
    ("demosaic", "its demosaicking (--demosaic auto)"),
)


def format_runtime(info: dict[str, Any]) -> str:
    """A two-column text table of :func:`describe_runtime`'s output."""
    hints = {"openvino": "openvino_hint", "torch": "torch_hint"}
    rows = []
    for key, label in _RUNTIME_ROWS:
        value = info.get(key)
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif value is None and key in hints:
            text = f"not installed ({info.get(hints[key])})"
        else:
            text = _fmt(value)
        rows.append((label, text))
    return _two_columns(rows)
