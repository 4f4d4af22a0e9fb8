"""The speed benchmarks still reach the networks they time: a benchmark is run by hand, rarely,
so an API change can break it unseen (``inference_speed.py --runtime`` once timed none of the
raw denoiser's runtimes: ``load_network("default")`` had become the Bayer and X-Trans pair)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the speed benchmark times torch's paths too")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def inference_speed(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("inference_speed")
    # A small frame: what is checked is that every path runs, not how fast.
    monkeypatch.setattr(module, "PACKED", (64, 96))
    yield module
    sys.modules.pop("inference_speed", None)


def test_every_raw_denoiser_path_of_the_runtime_benchmark_runs(inference_speed):
    from darkraw.nn.runtime import openvino_available

    for name in inference_speed.DENOISER_PATHS:
        result = inference_speed.denoiser_child(name, runs=1)
        if name == "denoiser_bf16" and not openvino_available():
            assert "skipped" in result
            continue
        assert result["median_s"] > 0, (name, result)
        expected = "RawDenoiser" if name == "denoiser_torch" else "OnnxDenoiser"
        assert result["runtime"] == expected


@pytest.fixture
def accuracy(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("denoiser_vs_classic")
    yield module
    sys.modules.pop("denoiser_vs_classic", None)


def test_each_frame_of_the_accuracy_benchmark_draws_its_own_camera_setting(accuracy, monkeypatch):
    """One draw for a whole group once gave all eleven frames of (a) x100 the Sony calibration's
    largest colour bias, so that the group's mean measured one setting, not the calibration."""
    from darkraw.synth.noise import sample_calibrated_params

    simulation, _ = accuracy.GROUPS["a_sony_x100"]
    names = [f"frame{i}.dng" for i in range(8)]

    def biases() -> set[tuple[float, ...]]:
        return {
            tuple(
                sample_calibrated_params(
                    simulation.profile(), accuracy.darkening_rng("a_sony_x100", 0, name)
                ).color_bias
            )
            for name in names
        }

    assert len(biases()) > 1
    again = accuracy.darkening_rng("a_sony_x100", 0, "frame0.dng").random()
    assert again == accuracy.darkening_rng("a_sony_x100", 0, "frame0.dng").random()
    monkeypatch.setattr(accuracy, "DRAW", "group")
    assert len(biases()) == 1
