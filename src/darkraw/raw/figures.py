"""Pictures for people: labelled side-by-side comparisons."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from darkraw.raw.fileio import quantize, to_hwc

_LABEL_HEIGHT = 28
_CAPTION_HEIGHT = 24
_GAP = 6


def side_by_side(
    panels: Sequence[tuple[str, np.ndarray]],
    max_width: int = 2400,
    captions: Sequence[str] | None = None,
) -> np.ndarray:
    """Lay out labelled ``(3, H, W)`` images in [0, 1] in one row, as a ``(3, H', W')`` image.

    Panels are scaled to a common height so that the row is at most ``max_width`` wide. Each
    panel's label is written above it; ``captions``, one per panel, add a row of text below.
    """
    if not panels:
        raise ValueError("expected at least one panel")
    if captions is not None and len(captions) != len(panels):
        raise ValueError(f"expected {len(panels)} captions, one per panel, got {len(captions)}")
    height = min(img.shape[1] for _, img in panels)
    widths = [round(img.shape[2] * height / img.shape[1]) for _, img in panels]
    scale = min(1.0, (max_width - _GAP * (len(panels) - 1)) / sum(widths))
    height = max(1, round(height * scale))
    widths = [max(1, round(w * scale)) for w in widths]
    total = sum(widths) + _GAP * (len(panels) - 1)
    caption_height = 0 if captions is None else _CAPTION_HEIGHT
    canvas = Image.new("RGB", (total, height + _LABEL_HEIGHT + caption_height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=18)
    small = ImageFont.load_default(size=15)
    x = 0
    for i, ((label, img), width) in enumerate(zip(panels, widths, strict=True)):
        pil = Image.fromarray(quantize(to_hwc(img), 8)).resize(
            (width, height), Image.Resampling.LANCZOS
        )
        canvas.paste(pil, (x, _LABEL_HEIGHT))
        draw.text((x + 6, 4), _fit(draw, label, font, width - 8), fill=(0, 0, 0), font=font)
        if captions is not None:
            caption = _fit(draw, captions[i], small, width - 8)
            draw.text((x + 6, _LABEL_HEIGHT + height + 4), caption, fill=(0, 0, 0), font=small)
        x += width + _GAP
    return np.moveaxis(np.asarray(canvas, dtype=np.float32) / 255.0, -1, 0)


def _fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    width: int,
) -> str:
    """``text`` cut (ending in "...") so that it fits ``width`` pixels, and does not run into
    the next panel's label."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "..." if text else ""


def preview_planes(planes: np.ndarray) -> np.ndarray:
    """Packed raw planes (already amplified) as a quick viewable RGB image.

    Args:
        planes: ``(4, h, w)`` Bayer (R, G1, B, G2) or ``(9, h, w)`` X-Trans, linear.

    Returns:
        ``(3, s*h, s*w)`` float32 in [0, 1]: greens averaged, gamma 1/2.2, each packed pixel
        repeated ``s`` times (2 Bayer, 3 X-Trans) so the preview has the mosaic's size.
    """
    if planes.shape[0] == 4:
        rgb = np.stack([planes[0], (planes[1] + planes[3]) / 2, planes[2]])
        scale = 2
    else:
        rgb = np.stack([planes[:2].mean(0), planes[2:7].mean(0), planes[7:].mean(0)])
        scale = 3
    rgb = np.clip(rgb, 0, 1) ** (1 / 2.2)
    return np.asarray(rgb.repeat(scale, axis=1).repeat(scale, axis=2), dtype=np.float32)
