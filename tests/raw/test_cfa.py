import numpy as np
import pytest

from darkraw.raw.cfa import (
    BAYER_PLANE_COLORS,
    XTRANS_PLANE_COLORS,
    BayerPattern,
    check_xtrans_tile,
    color_index_map,
    pack_bayer,
    pack_xtrans,
    pad_to_multiple,
    transpose_bayer_planes,
    unpack_bayer,
    unpack_xtrans,
)

from conftest import XTRANS


# The X-Trans tile of Fuji X-T and X-Pro cameras (0 R, 1 G, 2 B), as LibRaw reports it.
@pytest.mark.parametrize("pattern", list(BayerPattern))
def test_bayer_round_trip_is_exact(pattern):
    mosaic = np.random.default_rng(1).integers(0, 2**16, (3, 6, 8)).astype(np.uint16)
    packed = pack_bayer(mosaic, pattern)
    assert packed.shape == (3, 4, 3, 4)
    assert packed.dtype == np.uint16
    np.testing.assert_array_equal(unpack_bayer(packed, pattern), mosaic)


@pytest.mark.parametrize("pattern", list(BayerPattern))
def test_every_layout_packs_to_r_g1_b_g2(pattern):
    colors = color_index_map(pattern, 4, 6)
    packed = pack_bayer(colors, pattern)
    for plane, color in enumerate(BAYER_PLANE_COLORS):
        assert np.all(packed[plane] == color)
    # G1 shares rows with red, G2 with blue.
    r_row, _ = pattern.offsets[0]
    assert pattern.offsets[1][0] == r_row
    assert pattern.offsets[3][0] == pattern.offsets[2][0]


def test_pack_hand_checked_values():
    mosaic = np.arange(16).reshape(4, 4)
    # RGGB: R at (0,0), G1 at (0,1), B at (1,1), G2 at (1,0).
    np.testing.assert_array_equal(pack_bayer(mosaic, "rggb")[:, 0, 0], [0, 1, 5, 4])
    # GRBG: G1 at (0,0), R at (0,1), B at (1,0), G2 at (1,1).
    np.testing.assert_array_equal(pack_bayer(mosaic, "GRBG")[:, 0, 0], [1, 0, 4, 5])
    np.testing.assert_array_equal(pack_bayer(mosaic, "BGGR")[:, 1, 1], [15, 14, 10, 11])


def test_pack_errors_show_what_was_received():
    with pytest.raises(ValueError, match=r"multiples of 2, got 3x4"):
        pack_bayer(np.zeros((3, 4)), "RGGB")
    with pytest.raises(ValueError, match=r"\(\*, 4, h, w\), got \(3, 2, 2\)"):
        unpack_bayer(np.zeros((3, 2, 2)), "RGGB")
    with pytest.raises(ValueError, match="unknown Bayer pattern 'RGBG'"):
        BayerPattern.parse("RGBG")


def test_pattern_from_tile():
    assert BayerPattern.from_tile([[1, 0], [2, 1]]) is BayerPattern.GRBG
    with pytest.raises(ValueError, match="not a Bayer tile"):
        BayerPattern.from_tile([[0, 0], [1, 2]])


def test_xtrans_round_trip_and_plane_colors():
    mosaic = np.random.default_rng(2).random((12, 18)).astype(np.float32)
    packed = pack_xtrans(mosaic, XTRANS)
    assert packed.shape == (9, 4, 6)
    np.testing.assert_array_equal(unpack_xtrans(packed, XTRANS), mosaic)
    colors = pack_xtrans(np.tile(XTRANS, (2, 3)), XTRANS)
    for plane, color in enumerate(XTRANS_PLANE_COLORS):
        assert np.all(colors[plane] == color)


def test_xtrans_rejects_bayer_like_tile():
    with pytest.raises(ValueError, match="not an X-Trans tile"):
        check_xtrans_tile(np.tile([[0, 1], [1, 2]], (3, 3)))
    with pytest.raises(ValueError, match="multiples of 6"):
        pack_xtrans(np.zeros((6, 8)), XTRANS)


@pytest.mark.parametrize("shift", [(r, c) for r in range(6) for c in range(6)])
def test_an_xtrans_tile_starting_anywhere_packs_and_unpacks_exactly(shift):
    """A camera's visible area may start anywhere in the X-Trans pattern; rows and columns put
    before the mosaic bring its 3x3 blocks to 2 R, 5 G, 2 B, and unpacking takes them off."""
    from darkraw.classic.pipeline import pack, unpack
    from darkraw.raw.cfa import XTRANS_TILE, cfa_canvas, xtrans_phase
    from darkraw.raw.metadata import RawMetadata

    tile = np.roll(XTRANS, shift, (0, 1))
    rows, cols = xtrans_phase(tile)
    # Every shift of Fujifilm's pattern is brought to the one tile training uses.
    np.testing.assert_array_equal(np.roll(tile, (rows, cols), (0, 1)), XTRANS_TILE)
    colours = np.tile(tile, (4, 5))[:20, :27]
    canvas = cfa_canvas(colours, rows, cols)
    assert canvas.shape == (-(-(20 + rows) // 6) * 6, -(-(27 + cols) // 6) * 6)
    earlier = np.tile(np.roll(tile, (rows, cols), (0, 1)), (6, 7))
    np.testing.assert_array_equal(canvas, earlier[: canvas.shape[0], : canvas.shape[1]])
    np.testing.assert_array_equal(canvas[rows : rows + 20, cols : cols + 27], colours)
    meta = RawMetadata(
        cfa_tile=tuple(map(tuple, tile.tolist())),
        black_tile=tuple((0.0,) * 6 for _ in range(6)),
        white_level=1.0,
        height=20,
        width=27,
    )
    for plane, colour in zip(
        pack(colours.astype(np.float32), meta), XTRANS_PLANE_COLORS, strict=True
    ):
        assert np.all(plane == colour)
    mosaic = np.random.default_rng(sum(shift)).random((20, 27)).astype(np.float32)
    np.testing.assert_array_equal(unpack(pack(mosaic, meta), meta), mosaic)


def test_a_six_by_six_tile_that_no_shift_makes_x_trans_is_refused():
    from darkraw.raw.cfa import xtrans_phase

    with pytest.raises(ValueError, match="no shift of it"):
        xtrans_phase(np.tile([[0, 1], [1, 2]], (3, 3)))


@pytest.mark.parametrize("period", [2, 6])
def test_padding_keeps_colour_filters(period):
    tile = XTRANS if period == 6 else BayerPattern.GBRG.tile
    colors = np.tile(tile, (4, 4))[: 2 * period + 1, : 3 * period - 1]
    padded, size = pad_to_multiple(colors, period)
    assert size == colors.shape
    assert padded.shape[0] % period == 0 and padded.shape[1] % period == 0
    np.testing.assert_array_equal(
        padded, np.tile(tile, (4, 4))[: padded.shape[0], : padded.shape[1]]
    )
    np.testing.assert_array_equal(padded[: size[0], : size[1]], colors)


def test_transposed_planes_are_the_transposed_mosaics():
    mosaic = np.random.default_rng(2).random((6, 10), dtype=np.float32)
    planes = pack_bayer(mosaic, "RGGB")
    transposed = transpose_bayer_planes(planes)
    assert transposed.shape == (4, 5, 3) and transposed.flags.c_contiguous
    np.testing.assert_array_equal(transposed, pack_bayer(mosaic.T, "RGGB"))
    np.testing.assert_array_equal(transpose_bayer_planes(transposed), planes)  # its own inverse


def test_transposed_planes_keep_each_group_of_four():
    """A network input: the planes, then their noise map, both taken along alike."""
    mosaic = np.random.default_rng(3).random((8, 4), dtype=np.float32)
    planes, noise = pack_bayer(mosaic, "RGGB"), pack_bayer(mosaic * 2, "RGGB")
    both = transpose_bayer_planes(np.concatenate([planes, noise]))
    np.testing.assert_array_equal(both[:4], pack_bayer(mosaic.T, "RGGB"))
    np.testing.assert_array_equal(both[4:], pack_bayer(2 * mosaic.T, "RGGB"))


@pytest.mark.parametrize("shape", [(3, 4, 4), (4, 4), (1, 4, 4, 4)])
def test_transposed_planes_refuse_other_shapes(shape):
    with pytest.raises(ValueError, match="packed Bayer planes"):
        transpose_bayer_planes(np.zeros(shape, np.float32))


@pytest.mark.parametrize(("rows", "cols"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_a_bayer_canvas_puts_rows_and_columns_of_the_same_colours_before(rows, cols):
    from darkraw.raw.cfa import cfa_canvas

    colours = np.tile([[0, 1], [1, 2]], (4, 5))[:7, :9]
    canvas = cfa_canvas(colours, rows, cols, period=2)
    assert canvas.shape == (-(-(7 + rows) // 2) * 2, -(-(9 + cols) // 2) * 2)
    earlier = np.tile(np.roll([[0, 1], [1, 2]], (rows, cols), (0, 1)), (5, 6))
    np.testing.assert_array_equal(canvas, earlier[: canvas.shape[0], : canvas.shape[1]])
    np.testing.assert_array_equal(canvas[rows : rows + 7, cols : cols + 9], colours)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        cfa_canvas(colours, 2, 0, period=2)
