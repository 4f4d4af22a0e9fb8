import pytest

from darkraw.choices import parse_choice
from darkraw.classic.pipeline import GammaCurve
from darkraw.raw.cfa import BayerPattern


def test_parse_choice_ignores_case_and_passes_members_through():
    assert parse_choice(BayerPattern, "gbrg", "Bayer pattern") is BayerPattern.GBRG
    assert parse_choice(GammaCurve, "SRGB", "gamma curve") is GammaCurve.SRGB
    assert parse_choice(GammaCurve, GammaCurve.BT709, "gamma curve") is GammaCurve.BT709


def test_parse_choice_error_names_setting_value_and_choices():
    with pytest.raises(
        ValueError, match=r"unknown gamma curve 'linear'; expected one of srgb, bt709"
    ):
        parse_choice(GammaCurve, "linear", "gamma curve")
