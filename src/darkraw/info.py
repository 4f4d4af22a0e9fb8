"""Describing raw files: the metadata ``darkraw info`` prints."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from darkraw.errors import DarkrawError, RawReadError
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
    width = max(len(label) for _, label in _ROWS)
    lines = [f"{label:<{width}}  {_fmt(info.get(key))}" for key, label in _ROWS]
    return "\n".join(lines)


def format_json(infos: list[dict[str, Any]]) -> str:
    return json.dumps(infos if len(infos) != 1 else infos[0], indent=2)
