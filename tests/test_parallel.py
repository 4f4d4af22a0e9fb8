import threading
import time

import pytest

from darkraw import parallel
from darkraw.parallel import bands, thread_map


def test_results_keep_the_items_order():
    assert thread_map(lambda i: i * i, range(10)) == [i * i for i in range(10)]
    assert thread_map(lambda i: i, []) == []


def test_items_run_on_several_threads_when_cores_allow(monkeypatch):
    monkeypatch.setattr(parallel, "cpu_threads", lambda: 2)
    names = thread_map(lambda _: (time.sleep(0.05), threading.current_thread().name)[1], range(4))
    assert len(set(names)) > 1


def test_small_work_runs_in_the_calling_thread(monkeypatch):
    monkeypatch.setattr(parallel, "cpu_threads", lambda: 2)
    here = threading.current_thread().name
    names = thread_map(lambda _: threading.current_thread().name, range(4), size=10)
    assert set(names) == {here}


def test_an_error_is_raised_after_every_item_has_finished(monkeypatch):
    monkeypatch.setattr(parallel, "cpu_threads", lambda: 2)
    finished = []

    def work(i):
        if i == 0:
            raise ValueError("item 0")
        time.sleep(0.05)
        finished.append(i)

    with pytest.raises(ValueError, match="item 0"):
        thread_map(work, range(3))
    # Items already running were waited for; none still writes after the call.
    count = len(finished)
    time.sleep(0.1)
    assert len(finished) == count


def test_nested_calls_do_not_wait_on_their_own_pool(monkeypatch):
    monkeypatch.setattr(parallel, "cpu_threads", lambda: 2)
    out = thread_map(lambda i: sum(thread_map(lambda j: i * j, range(3))), range(4))
    assert out == [3 * i for i in range(4)]


@pytest.mark.parametrize(("length", "parts"), [(1, 4), (5, 2), (100, 7), (3, 0)])
def test_bands_partition_the_rows(length, parts):
    cut = bands(length, parts)
    rows = [i for s in cut for i in range(s.start, s.stop)]
    assert rows == list(range(length))
    assert all(s.stop > s.start for s in cut)


def test_a_forked_process_gets_a_pool_of_its_own(monkeypatch):
    """A data-loading worker forked after the pool was made inherits it without its threads;
    work handed to that pool would never run."""
    import multiprocessing

    monkeypatch.setattr(parallel, "cpu_threads", lambda: 2)
    assert thread_map(lambda i: i, range(4)) == [0, 1, 2, 3]  # the parent's pool exists now
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        result = pool.apply_async(_square_all, (list(range(6)),))
        assert result.get(timeout=30) == [i * i for i in range(6)]


def _square_all(items):
    parallel.cpu_threads = lambda: 2  # the forked child keeps the parent's module state
    return thread_map(lambda i: i * i, items)
