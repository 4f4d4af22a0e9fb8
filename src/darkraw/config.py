"""Typed configuration: frozen dataclasses whose defaults a YAML file may override.

A YAML file only overrides defaults; an unknown key or a value of the wrong type is an error
that names the key, so a typo never silently trains with the default. The resolved config is a
plain dictionary (:func:`to_dict`) saved beside every checkpoint and loadable again.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from darkraw.errors import DarkrawError

T = TypeVar("T")


class ConfigError(DarkrawError):
    """A configuration file or dictionary that does not fit its dataclass."""


def from_dict(cls: type[T], data: Any, *, where: str = "") -> T:
    """Build dataclass ``cls`` from a (YAML-loaded) mapping; missing keys keep their defaults.

    Raises:
        ValueError: an unknown key, a wrong type or an invalid value; the message names the key
            (dotted for nested sections).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    # YAML keys may be numbers or null as well as strings: sort them by their text.
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        names = ", ".join(_show(f"{where}{key}", quote=False) for key in unknown)
        raise ValueError(f"unknown key(s) {names}; known: {', '.join(sorted(fields))}")
    values = {name: _convert(hints[name], value, f"{where}{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where.rstrip('.') or cls.__name__}: {err}") from None


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, where=f"{key}.")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in hint)
            raise ValueError(f"{key}: expected one of {choices}, got {_show(value)}") from None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"{key}: expected a number, got an integer too large") from None
        # No setting means anything at .inf or .nan; they would only surface as NaN losses.
        if not math.isfinite(number):
            raise ValueError(f"{key}: expected a finite number, got {_show(value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {_show(value)}")
        return value
    raise ValueError(f"{key}: unsupported config type {hint}")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 2, 40, 40, 40


def _show(value: Any, *, quote: bool = True) -> str:
    """A value for a one-line message: at most a few dozen characters, newlines escaped."""
    if not quote and isinstance(value, str) and value.isprintable() and len(value) <= 40:
        return value
    try:
        return _SHORT.repr(value)
    except ValueError:
        # An integer of more than 4300 digits has no str() by default.
        return f"a {type(value).__name__} too large to show"


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML/JSON-ready values (enums by value, tuples as lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


#: Largest config file read: a config is a page of YAML.
MAX_CONFIG_BYTES = 4 * 2**20


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML file of overrides into dataclass ``cls``.

    Raises:
        ConfigError: the file is missing, not YAML, or does not fit ``cls``; one line naming it.
    """
    path = Path(path)
    try:
        return from_dict(cls, read_yaml(path))
    except ValueError as err:
        raise ConfigError(path, str(err)) from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content.

    Raises:
        ConfigError: the file is missing, unreadable or not YAML; one line naming it.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        # A FIFO would block for ever and /dev/zero fill the memory.
        raise ConfigError(path, "not a regular file")
    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(path, f"over {MAX_CONFIG_BYTES // 2**20} MiB: not a config")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(path, f"cannot read it ({err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(path, f"not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(path, "not a config: its YAML is nested too deeply") from None
    except ValueError as err:
        # PyYAML lets some errors through, e.g. an integer of more than 4300 digits.
        raise ConfigError(path, f"not a config: {err}") from None
    return data


def dump_yaml(config: Any) -> str:
    """The resolved config as YAML text."""
    return str(yaml.safe_dump(to_dict(config), sort_keys=False))
