"""Pictures for people: labelled side-by-side comparisons."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from darkraw.fileio import quantize, to_hwc

_LABEL_HEIGHT = 28
_GAP = 6


def side_by_side(panels: Sequence[tuple[str, np.ndarray]], max_width: int = 2400) -> np.ndarray:
    """Lay out labelled ``(3, H, W)`` images in [0, 1] in one row, as a ``(3, H', W')`` image.

    Panels are scaled to a common height so that the row is at most ``max_width`` wide.
    """
    if not panels:
        raise ValueError("expected at least one panel")
    height = min(img.shape[1] for _, img in panels)
    widths = [round(img.shape[2] * height / img.shape[1]) for _, img in panels]
    scale = min(1.0, (max_width - _GAP * (len(panels) - 1)) / sum(widths))
    height = max(1, round(height * scale))
    widths = [max(1, round(w * scale)) for w in widths]
    total = sum(widths) + _GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (total, height + _LABEL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=18)
    x = 0
    for (label, img), width in zip(panels, widths, strict=True):
        pil = Image.fromarray(quantize(to_hwc(img), 8)).resize(
            (width, height), Image.Resampling.LANCZOS
        )
        canvas.paste(pil, (x, _LABEL_HEIGHT))
        draw.text((x + 6, 4), label, fill=(0, 0, 0), font=font)
        x += width + _GAP
    return np.moveaxis(np.asarray(canvas, dtype=np.float32) / 255.0, -1, 0)
