"""Errors darkraw reports to its users: one line, naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DarkrawError(Exception):
    """An error about one input or output that a user can act on.

    ``str(err)`` is the one-line message the command line prints: ``PATH: problem``.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class RawReadError(DarkrawError):
    """A file that cannot be read as a raw photo or mosaic."""


class UnsupportedSensorError(RawReadError):
    """A raw file whose sensor layout darkraw cannot process (monochrome, Foveon, ...)."""


class OutputError(DarkrawError):
    """An output that cannot be written."""


class CheckpointError(DarkrawError):
    """A checkpoint that is missing, truncated, corrupt, or not a darkraw checkpoint."""


class NetworkOutputError(DarkrawError):
    """A network whose output is not finite (NaN or infinity): broken weights, not a bad photo."""


class MissingExtraError(DarkrawError):
    """A command that needs a package darkraw installs only with an extra (torch for training)."""
