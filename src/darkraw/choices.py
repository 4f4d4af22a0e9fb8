"""Parsing the user's words for a setting into the enum that names it."""

from __future__ import annotations

import enum
from typing import TypeVar

E = TypeVar("E", bound=enum.Enum)


def parse_choice(cls: type[E], value: str | E, label: str) -> E:
    """The member of ``cls`` whose value is ``value``, ignoring case.

    Raises:
        ValueError: naming the ``label`` of the setting, what was given and the choices.
    """
    if isinstance(value, cls):
        return value
    text = str(value).lower()
    for member in cls:
        if str(member.value).lower() == text:
            return member
    choices = ", ".join(str(m.value) for m in cls)
    raise ValueError(f"unknown {label} {value!r}; expected one of {choices}")
