"""Spreading numpy work over the CPU's cores with threads.

Everything around the network (box filters over a 12-Mpixel frame's planes, the 16-bit to
float conversion of LibRaw's rendering, quantising, PNG compression) is a handful of passes of
50-500 ms each that numpy, LibRaw and zlib run without holding the GIL. Run in one thread they
left one of two cores idle for half of ``darkraw enhance``; split into row bands or planes over
a shared pool of threads they use every core, with no extra copies and no process start-up.

This module is below every layer: it imports nothing from darkraw.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Below this many values, work runs in the calling thread: handing it to the pool would cost
#: more than it saves (thread hand-offs are tens of microseconds).
MIN_PARALLEL_SIZE = 1 << 18

_pool: ThreadPoolExecutor | None = None
#: The process that made ``_pool``: a process forked from it (a data-loading worker) inherits
#: the pool without its threads, and work handed to it would never run.
_pool_pid = 0
_pool_lock = threading.Lock()


def cpu_threads() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _shared_pool() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="darkraw")
            _pool_pid = os.getpid()
        return _pool


def thread_map(function: Callable[[T], R], items: Iterable[T], *, size: int = 0) -> list[R]:
    """``[function(item) for item in items]``, the items spread over the CPU's cores.

    The calling thread runs the last item itself and waits for the others. Work of fewer than
    :data:`MIN_PARALLEL_SIZE` values (``size``, when the caller gives it), a single item, a
    one-core machine or a call from one of the pool's own threads runs in order, here.

    An exception from any item is raised once every item has finished or been cancelled, so
    no thread still writes into a caller's buffer after this returns or raises.
    """
    work = list(items)
    serial = (
        len(work) < 2
        or cpu_threads() < 2
        or (0 < size < MIN_PARALLEL_SIZE)
        or threading.current_thread().name.startswith("darkraw")
    )
    if serial:
        return [function(item) for item in work]
    pool = _shared_pool()
    futures: list[Future[R]] = []
    try:
        futures = [pool.submit(function, item) for item in work[:-1]]
        last = function(work[-1])
    except BaseException:
        for future in futures:
            future.cancel()
        for future in futures:
            if not future.cancelled():
                future.exception()
        raise
    results = [_result(futures, i) for i in range(len(futures))]
    return [*results, last]


def _result(futures: Sequence[Future[R]], index: int) -> R:
    """The ``index``-th result; on an error, the remaining futures are cancelled or waited for
    before it is raised."""
    try:
        return futures[index].result()
    except BaseException:
        for future in futures[index + 1 :]:
            future.cancel()
        for future in futures[index + 1 :]:
            if not future.cancelled():
                future.exception()
        raise


def bands(length: int, parts: int = 0) -> list[slice]:
    """``length`` rows cut into ``parts`` contiguous slices of near-equal size (0: twice the
    cores, so that an unlucky band does not leave a core idle at the end); no empty slice."""
    parts = parts or 2 * cpu_threads()
    parts = max(1, min(parts, length))
    edges = [round(i * length / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(edges) if b > a]


__all__ = ["MIN_PARALLEL_SIZE", "bands", "cpu_threads", "thread_map"]
