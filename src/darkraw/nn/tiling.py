"""How a frame is cut into overlapping tiles that join exactly, for every network and runtime.

A tile's margin of width ``overlap`` is run and thrown away, so memory is bounded by the tile,
not the photo; a margin as wide as the network's reach makes the tiled output equal to one
whole-frame pass.
"""

from __future__ import annotations


def tile_spans(length: int, tile: int, overlap: int, grid: int) -> list[tuple[int, int, int, int]]:
    """How :func:`run_network` (and the raw denoiser) cut one axis of ``length`` packed pixels.

    Returns:
        ``(window_start, window_end, keep_start, keep_end)`` per tile, half-open: the network
        sees the window and its output is kept for the ``keep`` range only. The kept ranges
        partition ``[0, length)``; every window starts on a multiple of ``grid`` (the network's
        pooling grid, 16 for SID's U-Net; ``overlap`` a multiple of it) and is at most ``tile``
        long. ``tile == 0`` or ``length <= tile`` gives one window, the whole axis.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if tile == 0 or length <= tile:
        return [(0, length, 0, length)]
    core_max = tile - 2 * overlap
    count = -(-length // core_max)
    # Equal shares, rounded up to the pooling grid, so no last tile is a sliver.
    core = -(-length // count)
    core = -(-core // grid) * grid
    return [
        (
            max(0, start - overlap),
            min(length, start + core + overlap),
            start,
            min(length, start + core),
        )
        for start in range(0, length, core)
    ]
