"""The ``darkraw`` command and ``python -m darkraw``: the process's settings that must come before
numpy is imported, then :func:`darkraw.cli.run`."""

from __future__ import annotations

import gc
import os
from typing import NoReturn

#: OpenBLAS's idle threads sleep at once (2**4 cycles of waiting) instead of spinning for 2**28
#: cycles (about 0.1 s) after each piece of work, their creation included.
OPENBLAS_IDLE_WAIT = "4"


def run() -> NoReturn:
    """Quiet OpenBLAS's idle threads, unless the user set it, then run the command.

    numpy's OpenBLAS makes a thread per core when it is loaded, and each spins, waiting for work
    that in ``darkraw enhance`` never comes (its matrix products are a few tiny ones): 0.13 s of
    CPU a command, while the file is read and the network loaded beside it. Sleeping at once
    took a 12-Mpixel ``darkraw enhance`` from 1.965 to 1.935 s (medians of 8 alternating pairs,
    ``docs/speed-log.md``). OpenBLAS reads the setting when it is loaded, so it is set here,
    before anything imports numpy; a program importing darkraw keeps its own.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_IDLE_WAIT)
    # What these imports make (modules, functions, classes) lives as long as the process: the
    # cyclic collector, run 100-odd times over it while they are made, took 15-17 ms of a
    # 12-Mpixel ``darkraw enhance``'s single-threaded start, and 6 ms with it held off until
    # then and those objects left out of its later runs (``gc.freeze``).
    gc.disable()
    try:
        from darkraw.cli import run as run_command
    finally:
        gc.freeze()
        gc.enable()
    run_command()


if __name__ == "__main__":
    run()
