"""darkraw: make raw photos taken in the dark look as if they were taken in good light."""

from darkraw.api import enhance
from darkraw.errors import DarkrawError, OutputError, RawReadError, UnsupportedSensorError
from darkraw.metadata import RawMetadata
from darkraw.rawio import BareMosaicSpec, RawImage, read_raw

__version__ = "0.1.0"

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
