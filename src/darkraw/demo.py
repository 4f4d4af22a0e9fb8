"""The demo: the bundled dark sample as shot, by the classic pipeline, and by the default model."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from darkraw import progress
from darkraw.classic.denoise import CLASSIC_EXTRA, Denoiser, denoiser_available
from darkraw.classic.pipeline import ClassicOptions, run_classic
from darkraw.nn.enhance import enhance_mosaic, load_network
from darkraw.nn.modelfiles import DEFAULT_MODEL
from darkraw.raw.figures import side_by_side
from darkraw.raw.fileio import write_image
from darkraw.raw.rawio import read_raw

#: Exposure ratio the bundled sample was darkened by (see docs/sample.md).
SAMPLE_RATIO = 100.0


class ClassicNotDenoisedWarning(UserWarning):
    """The demo's classic render is not denoised: neither BM3D nor OpenCV is installed."""


def sample_path() -> Path:
    """The bundled dark raw sample (a DNG)."""
    return Path(str(resources.files("darkraw") / "data" / "sample_dark.dng"))


def run_demo(
    out_dir: str | Path,
    denoiser: Denoiser | str = Denoiser.AUTO,
    model: str | Path = DEFAULT_MODEL,
    *,
    on_written: Callable[[str, Path], None] | None = None,
) -> dict[str, Path]:
    """Render the bundled sample both ways and write them with a side-by-side comparison.

    Args:
        out_dir: folder of the outputs (created if missing).
        denoiser: the classic pipeline's denoiser. ``auto`` without the ``darkraw[classic]``
            extra renders without denoising, with a :class:`ClassicNotDenoisedWarning`.
        model: the network: a bundled model's name (``"default"``, ``"sid"``, ``"small"``) or a
            model file.
        on_written: called with each file's name (as in the result) and path as soon as it is
            written: the network's picture is ready in a second, the classic pipeline's BM3D
            takes most of the demo's half minute.

    Returns:
        Paths of the written files: ``network``, ``classic`` and ``comparison``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def write(name: str, filename: str, image: np.ndarray) -> None:
        progress.step("writing")
        paths[name] = write_image(out / filename, image)
        if on_written is not None:
            on_written(name, paths[name])

    raw = read_raw(sample_path())
    network = load_network(model)
    before = run_classic(raw.mosaic, raw.meta, ClassicOptions(ratio=1.0, denoiser=Denoiser.NONE))
    denoiser = Denoiser.parse(denoiser)
    if denoiser is Denoiser.AUTO and not denoiser_available(denoiser):
        warnings.warn(
            f"the classic render is not denoised (no BM3D, no OpenCV: {CLASSIC_EXTRA})",
            ClassicNotDenoisedWarning,
            stacklevel=2,
        )
        denoiser = Denoiser.NONE
    options = ClassicOptions(ratio=SAMPLE_RATIO, denoiser=denoiser)
    with progress.part("the network"):
        enhanced = enhance_mosaic(
            raw.mosaic, raw.meta, network, SAMPLE_RATIO, source=sample_path()
        ).image
    write("network", "sample_network.png", enhanced)
    with progress.part("the classic pipeline"):
        classic = run_classic(raw.mosaic, raw.meta, options)
    write("classic", "sample_classic.png", classic.image)
    panes = [
        ("as shot (dark raw, x1)", before.image),
        (f"classic (x{SAMPLE_RATIO:g}, {classic.denoiser.value})", classic.image),
        (f"network (x{SAMPLE_RATIO:g}, {model} model)", enhanced),
    ]
    write("comparison", "comparison.png", side_by_side(panes))
    return paths
