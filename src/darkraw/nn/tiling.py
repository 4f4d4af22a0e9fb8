"""How a frame is cut into overlapping tiles that join exactly, for every network and runtime.

A tile's margin of width ``overlap`` is run and thrown away, so memory is bounded by the tile,
not the photo; a margin as wide as the network's reach makes the tiled output equal to one
whole-frame pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from darkraw import progress

#: A self-ensemble set to ``auto`` runs as many copies as keep the work within this many output
#: pixels: about one SID-size frame (4256x2848, 12.1 Mpixel, the speed target's frame), which
#: takes one copy. Smaller photos get more copies for about the same time (the SID network's 8
#: up to 1.56 Mpixel, :func:`darkraw.nn.infer.ensemble_copies`; the raw denoiser's too,
#: :func:`darkraw.nn.rawdenoise.ensemble_passes`).
ENSEMBLE_AUTO_PIXELS = 12_500_000


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
    # Equal shares, rounded up to the pooling grid, so no last tile is a sliver.
    return _spans(length, -(-length // core_max), overlap, grid)


Span = tuple[int, int, int, int]


def tile_grid(
    height: int, width: int, tile: int, overlap: int, grid: int
) -> tuple[list[Span], list[Span]]:
    """How the raw denoiser cuts a frame: the rows' and the columns' spans (as
    :func:`tile_spans` gives them) that run the fewest pixels through the network, each window
    holding at most ``tile * tile`` pixels.

    Square tiles of a fixed side waste work on a frame that is not a multiple of them: a
    12-Mpixel frame's 1424 x 2128 packed pixels in tiles of 1024 are 2 x 3 windows that run 22 %
    more pixels than the frame has; 2 x 2 windows of 776 x 1128, smaller in area, run 16 % more
    (and with the raw denoiser's default of 1280, two windows of 1424 x 1128 run 6 % more).
    The network's time and memory follow a window's area, not its shape.

    ``tile == 0`` gives one window, the whole frame.
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame must be at least 1x1, got {height}x{width}")
    if tile == 0 or height * width <= tile * tile:
        return [(0, height, 0, height)], [(0, width, 0, width)]
    if tile < 2 * overlap + grid:
        raise ValueError(f"tile {tile} leaves no centre after margins of {overlap}")
    budget = tile * tile
    best: tuple[int, int, list[Span], list[Span]] | None = None
    row_options = _count_options(height, tile, overlap, grid)
    col_options = _count_options(width, tile, overlap, grid)
    for tallest, run_height, rows in row_options:
        for widest, run_width, cols in col_options:
            if tallest * widest > budget:
                continue
            key = (run_height * run_width, len(rows) * len(cols))
            if best is None or key < (best[0], best[1]):
                best = (*key, rows, cols)
    if best is None:
        # No pair of the counts tried fits the area (tile or overlap off the grid, which
        # run_denoiser refuses, can cause it): tile_spans's squares, as before.
        return tile_spans(height, tile, overlap, grid), tile_spans(width, tile, overlap, grid)
    return best[2], best[3]


def _count_options(
    length: int, tile: int, overlap: int, grid: int
) -> list[tuple[int, int, list[Span]]]:
    """The distinct ways :func:`_spans` cuts an axis into 1, 2, ... equal tiles, up to four
    times as many as :func:`tile_spans` would (more only repeats margins), each with its longest
    window and the length it runs in all."""
    square = -(-length // max(grid, tile - 2 * overlap))
    options: list[tuple[int, int, list[Span]]] = []
    seen: set[int] = set()
    for count in range(1, min(-(-length // grid), 4 * square + 4) + 1):
        spans = _uniform_spans(length, count, overlap, grid)
        if len(spans) not in seen:
            seen.add(len(spans))
            lengths = [stop - start for start, stop, _, _ in spans]
            options.append((max(lengths), sum(lengths), spans))
    return options


def _spans(length: int, count: int, overlap: int, grid: int) -> list[Span]:
    """``length`` cut into ``count`` equal kept ranges (fewer where rounding to the grid leaves
    nothing for the last), each window widened by ``overlap`` on both sides within the axis."""
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


def _uniform_spans(length: int, count: int, overlap: int, grid: int) -> list[Span]:
    """:func:`_spans`'s kept ranges, every window made as long as the longest: each reaches at
    least ``overlap`` beyond its kept range on both sides within the axis.

    One length, so that a frame's windows have one shape: OpenVINO compiles the network for each
    shape it meets and keeps two, and a shape's first run pays for its fresh memory. A 61-Mpixel
    frame's 3 x 4 windows had six shapes, 9 compilations and slow first runs: its network took
    6.5 s, where 2 x 6 windows of one shape (6 % more pixels than the frame's) take 3.9 s, and
    the command 12.3-13.0 s against 8.2-9.5 s (``docs/speed-log.md``). A 12-Mpixel frame's windows
    had one shape already. The length is made congruent to ``length`` modulo ``grid``: the last
    window ends at the axis's end and still starts on the grid, as every window does, so that the
    pooling sees the whole frame's grid.
    """
    spans = _spans(length, count, overlap, grid)
    size = max(stop - start for start, stop, _, _ in spans)
    size += (length - size) % grid
    return [
        (min(start, length - size), min(start, length - size) + size, k0, k1)
        for start, _, k0, k1 in spans
    ]


def windows(rows: list[Span], cols: list[Span]) -> Iterator[tuple[Span, Span]]:
    """Every window of a grid (row spans by column spans), row by row, each announced to a
    listener (the batch's bar) as it starts: ``network, window k/n``, or ``network`` for a frame
    run in one window."""
    count = len(rows) * len(cols)
    for k, (row, col) in enumerate(itertools.product(rows, cols), 1):
        progress.step(f"network, window {k}/{count}" if count > 1 else "network")
        yield row, col
