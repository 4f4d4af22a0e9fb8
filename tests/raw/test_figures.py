import numpy as np
import pytest

from darkraw.raw.figures import preview_planes, side_by_side


def test_side_by_side_scales_panels_to_one_height_and_adds_captions():
    a, b = np.zeros((3, 40, 60), np.float32), np.ones((3, 20, 20), np.float32)
    out = side_by_side([("a", a), ("b", b)])
    assert out.shape[0] == 3 and out.dtype == np.float32
    with_captions = side_by_side([("a", a), ("b", b)], captions=["x", "y"])
    assert with_captions.shape[1] > out.shape[1]
    with pytest.raises(ValueError, match="captions"):
        side_by_side([("a", a)], captions=["x", "y"])


def test_a_long_label_is_cut_before_it_reaches_the_next_panel():
    panel = np.full((3, 60, 60), 0.5, np.float32)
    out = side_by_side([("a very long method name " * 5, panel), ("", panel)])
    label_row = out[:, :28]
    assert (label_row[:, :, :50] < 0.5).any()  # the label is drawn
    # Everything from the end of the first panel to the right edge stays white.
    assert (label_row[:, :, 60:] == 1.0).all()


def test_preview_planes_has_the_mosaic_size():
    assert preview_planes(np.zeros((4, 5, 7), np.float32)).shape == (3, 10, 14)
    assert preview_planes(np.zeros((9, 5, 7), np.float32)).shape == (3, 15, 21)
