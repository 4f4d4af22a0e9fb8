"""Shared test helpers: synthetic scenes, small raw files made on the fly, the shared data."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from darkraw.raw.cfa import color_index_map
from darkraw.raw.metadata import RawMetadata

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

#: A plausible camera-to-sRGB matrix (rows sum to 1).
RGB_CAM = ((1.7, -0.5, -0.2), (-0.25, 1.6, -0.35), (0.05, -0.6, 1.55))
WB = (2.1, 1.0, 1.6)

#: The start of a ``darkraw enhance`` command line with the traditional pipeline (the network is
#: the default method).
ENHANCE_CLASSIC = ["enhance", "--method", "classic"]


@pytest.fixture(autouse=True)
def _no_compiled_model_cache(monkeypatch):
    """OpenVINO keeps compiled models in the user's cache folder (``darkraw.nn.runtime``); the
    tests, and the commands they start, keep none unless a test asks for a folder of its own."""
    monkeypatch.setenv("DARKRAW_CACHE_DIR", "")


@pytest.fixture(autouse=True)
def _test_process_allocator_left_alone(monkeypatch):
    """The command line tunes glibc's allocator for its own process (``darkraw.cli``); the tests
    call it in pytest's, which keeps its allocator as it is."""
    import darkraw.cli

    monkeypatch.setattr(darkraw.cli, "_glibc_mallopt", lambda: None)


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread.

    Tiny networks gain nothing from a second thread, and on a busy machine OpenMP's waiting
    threads make each pass several times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def imreads(monkeypatch):
    """The paths LibRaw is asked to open and decode from now on."""
    from darkraw.raw import rawio

    opened: list[str] = []
    real = rawio.rawpy.imread

    def imread(path, *args, **kwargs):
        opened.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(rawio.rawpy, "imread", imread)
    return opened


@pytest.fixture
def tiny_model_file(tmp_path):
    """A width-4 Bayer network with fixed random weights, saved as a model file."""
    import torch

    from darkraw.nn.infer import save_model_file
    from darkraw.nn.model import ModelConfig, build_model

    model = build_model(ModelConfig(width=4, fc_hidden=8), torch.Generator().manual_seed(0))
    return save_model_file(tmp_path / "tiny.safetensors", model)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data not available: {path}")
    return path


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """A folder of eight small smooth PNG photos, training sources for tiny runs.

    Always named ``photos``: which sources a run holds out hangs on their folder's name, which
    ``mktemp`` would number by how many such folders other tests made first."""
    return smooth_photos(tmp_path_factory.mktemp("tiny") / "photos", 8, 40, 48)


@contextlib.contextmanager
def fifo_that_cannot_hang(path: Path) -> Iterator[Path]:
    """A named pipe at ``path``; were a test to open it for reading, a writer opened beside it
    lets the reader see end of file, so the test fails instead of hanging."""
    os.mkfifo(path)
    done = threading.Event()

    def unblock() -> None:
        while not done.wait(0.2):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                continue

    threading.Thread(target=unblock, daemon=True).start()
    try:
        yield path
    finally:
        done.set()


def smooth_photos(folder: Path, count: int, height: int, width: int) -> Path:
    """``count`` smooth 8-bit PNG photos ``p0.png``... (:func:`smooth_scene`, seeds 0 up) in
    ``folder``, made if needed."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rgb = (smooth_scene(height, width, seed=i) * 255).round().astype(np.uint8)
        Image.fromarray(np.moveaxis(rgb, 0, -1)).save(folder / f"p{i}.png")
    return folder


def simulate_sid_layout(
    photos: Path,
    root: Path,
    splits: tuple[str, ...],
    ratios: tuple[float, ...] = (100.0, 300.0),
) -> None:
    """``darkraw simulate --layout sid`` of ``photos`` (the simple noise model) into
    ``root/<split>`` for each split, with SID's list files (``Sony_<split>_list.txt``)."""
    from darkraw.synth.pairs import SimulateOptions, simulate_batch
    from darkraw.synth.simulate import SimulationConfig

    for split in splits:
        options = SimulateOptions(
            ratios=ratios,
            simulation=SimulationConfig(model="simple"),
            layout="sid",
            split=split,
        )
        simulate_batch([photos], root / split, options, log=lambda _: None, progress=False)


def smooth_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, colourful linear sRGB image ``(3, H, W)`` in [0.05, 0.75]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.empty((3, height, width))
    for c in range(3):
        fy, fx, ph = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 6.28)
        out[c] = 0.4 + 0.35 * np.sin(2 * np.pi * (fy * yy / height + fx * xx / width) + ph)
    return out


def mosaic_from_rgb(
    rgb_lin: np.ndarray,
    pattern: str,
    *,
    black: float = 512.0,
    white: float = 16383.0,
    wb: tuple[float, float, float] = WB,
    rgb_cam: tuple[tuple[float, ...], ...] = RGB_CAM,
) -> tuple[np.ndarray, RawMetadata]:
    """Invert colour correction and white balance, then mosaic: a raw file's content in DN."""
    _, h, w = rgb_lin.shape
    cam = np.linalg.inv(np.asarray(rgb_cam)) @ rgb_lin.reshape(3, -1)
    cam = cam.reshape(3, h, w) / np.asarray(wb)[:, None, None]
    idx = color_index_map(pattern, h, w)
    raw_lin = np.take_along_axis(cam, idx[None], axis=0)[0]
    dn = np.rint(np.clip(raw_lin, 0, 1) * (white - black) + black).astype(np.uint16)
    meta = RawMetadata.for_bayer(
        pattern, h, w, black_level=black, white_level=white, wb_gains=wb, rgb_cam=rgb_cam
    )
    return dn, meta


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.fixture
def scene() -> np.ndarray:
    return smooth_scene(48, 64)


XTRANS = np.array(
    [
        [1, 1, 0, 1, 1, 2],
        [1, 1, 2, 1, 1, 0],
        [2, 0, 1, 0, 2, 1],
        [1, 1, 2, 1, 1, 0],
        [1, 1, 0, 1, 1, 2],
        [0, 2, 1, 2, 0, 1],
    ]
)


def xtrans_meta(height=36, width=48, **fields):
    """Metadata of an X-Trans mosaic (black 1024, white 16383), as the tests write it."""
    from darkraw.raw.metadata import RawMetadata

    return RawMetadata(
        cfa_tile=tuple(map(tuple, XTRANS.tolist())),
        black_tile=tuple(tuple([1024.0] * 6) for _ in range(6)),
        white_level=16383,
        height=height,
        width=width,
        **fields,
    )


def tiny_settings(photo_folder, out_dir, **changes):
    """A tiny training run (width 4, 16-pixel crops, 6 steps) as a YAML-ready dict."""
    base = {
        "data": {
            "train": [str(photo_folder)],
            "val_fraction": 0.3,
            "val_items": 2,
            "val_patch": 16,
            "pairs": {"patch": 16},
            "workers": 0,
        },
        "model": {"width": 4, "fc_hidden": 8},
        "out_dir": str(out_dir),
        "steps": 6,
        "precision": "fp32",
        "threads": 1,
        "log_every": 1,
        "val_every": 3,
        "checkpoint_every": 2,
        "samples": 1,
    }
    base.update(changes)
    return base
