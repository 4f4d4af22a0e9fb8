"""The ``darkraw`` command's entry point (darkraw.__main__): settings made before numpy loads."""

import os
import subprocess
import sys

import pytest

import darkraw.__main__ as entry
import darkraw.cli


@pytest.fixture
def seen_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the command would run with (the command itself is not run)."""
    seen: dict[str, str] = {}
    monkeypatch.setattr(darkraw.cli, "run", lambda: seen.update(os.environ))
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
