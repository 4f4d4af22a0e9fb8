"""Where a long step of one file has got to, for whoever shows it (the batch's progress bar).

A batch's bar counts files; a single file can take tens of seconds (a 24-Mpixel X-Trans frame,
eight passes of the raw denoiser, BM3D), and a bar that does not move for that long looks hung.
The steps inside a file say where they are (:func:`step`); the batch listens while a file is
worked on (:func:`listening`) and shows the latest line beside its bar. Nothing is shown, and
the calls cost a context-variable lookup, where nobody listens: a program that imports darkraw,
or a command whose output is not a terminal.

The listener and the parts are context variables, so a thread that is not listening (the
batch's reader, its renderer) reports nothing, and two threads never mix their lines.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

#: Who hears the steps (``None``: nobody).
_LISTENER: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "darkraw_progress_listener", default=None
)

#: The parts the current step lies in, outermost first (``("pass 2/8",)``).
_PARTS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "darkraw_progress_parts", default=()
)


@contextlib.contextmanager
def listening(listener: Callable[[str], None]) -> Iterator[None]:
    """Within the block, :func:`step` lines of this thread go to ``listener``."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


@contextlib.contextmanager
def part(name: str) -> Iterator[None]:
    """Within the block, every :func:`step` line starts with ``name`` (parts nest)."""
    token = _PARTS.set((*_PARTS.get(), name))
    try:
        yield
    finally:
        _PARTS.reset(token)


def step(text: str) -> None:
    """Say where the work has got to: ``text`` after the enclosing :func:`part` names, joined
    by commas (``pass 2/8, window 3/4``), to the listener, if any."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(", ".join((*_PARTS.get(), text)))
