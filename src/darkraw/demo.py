"""The demo: the bundled dark sample, rendered as shot and by the classic pipeline."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from darkraw.denoise import Denoiser
from darkraw.figures import side_by_side
from darkraw.fileio import write_image
from darkraw.pipeline import ClassicOptions, run_classic
from darkraw.rawio import read_raw

#: Exposure ratio the bundled sample was darkened by (see docs/sample.md).
SAMPLE_RATIO = 100.0


def sample_path() -> Path:
    """The bundled dark raw sample (a DNG)."""
    return Path(str(resources.files("darkraw") / "data" / "sample_dark.dng"))


def run_demo(out_dir: str | Path, denoiser: Denoiser | str = Denoiser.AUTO) -> dict[str, Path]:
    """Render the bundled sample; write the classic result and a before/after comparison.

    Returns:
        Paths of the written files: ``classic`` and ``comparison``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = read_raw(sample_path())
    before = run_classic(raw.mosaic, raw.meta, ClassicOptions(ratio=1.0, denoiser=Denoiser.NONE))
    options = ClassicOptions(ratio=SAMPLE_RATIO, denoiser=Denoiser.parse(denoiser))
    classic = run_classic(raw.mosaic, raw.meta, options)
    paths = {
        "classic": write_image(out / "sample_classic.png", classic.image),
        "comparison": write_image(
            out / "comparison.png",
            side_by_side(
                [
                    ("as shot (dark raw, x1)", before.image),
                    (f"classic (x{SAMPLE_RATIO:g}, {classic.denoiser.value})", classic.image),
                ]
            ),
        ),
    }
    return paths
