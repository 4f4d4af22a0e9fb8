import enum
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from darkraw.config import ConfigError, dump_yaml, from_dict, load_config, to_dict


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    size: int = 3
    scale: float = 1.0
    pair: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("size must be >= 1")


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    colour: Colour = Colour.RED
    inner: Inner = field(default_factory=Inner)
    paths: tuple[str, ...] = ()
    limit: int | None = None
    flag: bool = False


def test_overrides_keep_other_defaults():
    config = from_dict(Outer, {"inner": {"scale": 2}, "paths": ["a", "b"], "colour": "blue"})
    assert config == Outer(colour=Colour.BLUE, inner=Inner(scale=2.0), paths=("a", "b"))
    assert isinstance(config.inner.scale, float)
    assert from_dict(Outer, None) == Outer()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nmae": "x"}, "unknown key.*nmae"),
        ({"inner": {"sise": 2}}, r"unknown key.*inner\.sise"),
        ({"inner": {"size": "big"}}, r"inner\.size: expected an integer"),
        ({"inner": {"size": 2.5}}, r"inner\.size: expected an integer"),
        ({"flag": "yes"}, "flag: expected true or false"),
        ({"colour": "green"}, "colour: expected one of red, blue"),
        ({"inner": {"pair": [1.0]}}, r"inner\.pair: expected 2 values"),
        ({"inner": {"size": 0}}, "inner: size must be >= 1"),
        ({"limit": "none"}, "limit: expected an integer"),
        ({"inner": 5}, "inner.: expected a mapping"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        from_dict(Outer, data)


def test_round_trip_through_yaml(tmp_path):
    config = Outer(name="x", colour=Colour.BLUE, paths=("p",), limit=4, inner=Inner(pair=(1, 2)))
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(config))
    assert load_config(Outer, path) == config
    assert to_dict(config)["colour"] == "blue"


def test_load_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(Outer, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("inner:\n  sise: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, typo)
    assert str(info.value).startswith(str(typo)) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_configs_load(path):
    from darkraw.config import read_yaml
    from darkraw.training.experiment import ExperimentConfig
    from darkraw.training.train import TrainConfig
    from darkraw.training.train_denoiser import DenoiserTrainConfig, is_denoiser_task

    kind: type = ExperimentConfig if path.name.startswith("experiment_") else TrainConfig
    if is_denoiser_task(read_yaml(path)):
        kind = DenoiserTrainConfig
    config = load_config(kind, path)
    assert isinstance(config, kind)
