"""The ``darkraw`` command's entry point (darkraw.__main__): settings made before numpy loads."""

import os
import subprocess
import sys

import pytest

import darkraw.__main__ as entry
import darkraw.cli


@pytest.fixture
def seen_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the command would run with (the command itself is not run; the test
    process's objects are not frozen)."""
    seen: dict[str, str] = {}
    monkeypatch.setattr(darkraw.cli, "run", lambda: seen.update(os.environ))
    monkeypatch.setattr(entry.gc, "freeze", lambda: None)
    return seen


def test_openblas_idle_threads_sleep_at_once(monkeypatch, seen_environment):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    entry.run()
    assert seen_environment["OPENBLAS_THREAD_TIMEOUT"] == entry.OPENBLAS_IDLE_WAIT


def test_a_users_openblas_setting_is_kept(monkeypatch, seen_environment):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "20")
    entry.run()
    assert seen_environment["OPENBLAS_THREAD_TIMEOUT"] == "20"


def test_the_setting_comes_before_numpy_is_loaded():
    """OpenBLAS reads it when numpy loads it: the entry point must not import numpy first."""
    code = "import sys, darkraw.__main__; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_darkraw_runs_the_command():
    out = subprocess.run(
        [sys.executable, "-m", "darkraw", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip().endswith(darkraw.__version__)


def test_the_collector_waits_for_the_imports_and_leaves_their_objects_out():
    """The imports make objects that live as long as the process: the cyclic collector does not
    run while they are made (it ran about 57 times), then runs again without them."""
    code = """
import gc, sys
runs = []
gc.callbacks.append(lambda phase, info: runs.append(1) if phase == "start" else None)
import darkraw.__main__ as entry
before = len(runs)
sys.argv = ["darkraw", "--version"]
try:
    entry.run()
except SystemExit:
    pass
print(len(runs) - before, gc.get_freeze_count(), gc.isenabled())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    collections, frozen, enabled = out.stdout.split()[-3:]
    assert int(collections) < 5
    assert int(frozen) > 1000
    assert enabled == "True"
