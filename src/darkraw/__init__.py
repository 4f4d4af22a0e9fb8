"""darkraw: make raw photos taken in the dark look as if they were taken in good light.

The package is layered (``docs/architecture.md``): :mod:`darkraw.raw` (files and metadata),
:mod:`darkraw.classic` (the traditional pipeline), :mod:`darkraw.synth` (simulated low light),
:mod:`darkraw.nn` (networks and inference), :mod:`darkraw.training` (training and evaluation),
and the commands on top (:mod:`darkraw.api`, :mod:`darkraw.batch`, :mod:`darkraw.cli`). The names
below are the public API; they are imported when first used, so ``import darkraw`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from darkraw._version import __version__

if TYPE_CHECKING:
    from darkraw.api import enhance
    from darkraw.errors import DarkrawError, OutputError, RawReadError, UnsupportedSensorError
    from darkraw.raw.metadata import RawMetadata
    from darkraw.raw.rawio import BareMosaicSpec, RawImage, read_raw

#: Where each public name lives.
_EXPORTS = {
    "enhance": "darkraw.api",
    "DarkrawError": "darkraw.errors",
    "OutputError": "darkraw.errors",
    "RawReadError": "darkraw.errors",
    "UnsupportedSensorError": "darkraw.errors",
    "RawMetadata": "darkraw.raw.metadata",
    "BareMosaicSpec": "darkraw.raw.rawio",
    "RawImage": "darkraw.raw.rawio",
    "read_raw": "darkraw.raw.rawio",
}

__all__ = [
    "BareMosaicSpec",
    "DarkrawError",
    "OutputError",
    "RawImage",
    "RawMetadata",
    "RawReadError",
    "UnsupportedSensorError",
    "__version__",
    "enhance",
    "read_raw",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'darkraw' has no attribute {name!r}")
