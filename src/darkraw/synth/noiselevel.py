"""The noise level of one raw frame, to tell a noise-aware denoising network at run time.

Noise follows the Poisson-Gaussian model of Foi, Trimeche, Katkovnik & Egiazarian ("Practical
Poissonian-Gaussian noise modeling and fitting for single-image raw-data", IEEE TIP 2008): on raw
values normalised to black 0 and white 1, ``x = (dn - black) / (white - black)``, a pixel of
expected value ``x`` has variance ``shot * x + read``.

The level comes from one of two places:

- darktable's camera noise profiles (``noiseprofiles.json``, shipped with darktable; matching
  and ISO interpolation as darktable's ``src/common/noiseprofiles.c`` does them), when the
  camera and ISO are profiled. The file is darktable's (GPL) and is read where darktable is
  installed, never copied into darkraw.
- an estimate from the frame itself otherwise: Immerkaer's residual (Immerkaer, "Fast noise
  variance estimation", CVIU 1996) binned by local brightness and a line fitted to the binned
  variances, as in Foi et al. 2008.

How darktable measures its profiles matters when reading them as raw noise (darktable's
``tools/noise``): it exports the photo demosaicked and colour-converted, and takes the noise from
one level of a Haar transform (``HH = (a - b - c + d) / 4``, whose variance is a quarter of a
white noise's). Its ``a`` and ``b`` are therefore on darktable's own scale, not the per-pixel
variance of the raw planes; darktable's denoiser uses them with its own strength slider.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

import numpy as np

from darkraw.classic.filters import box_mean, filter2d, max_filter
from darkraw.errors import DarkrawError
from darkraw.parallel import bands, cpu_threads, thread_map
from darkraw.synth.noise import NoiseProfile, load_profile

Quad = tuple[float, float, float, float]
Triple = tuple[float, float, float]

#: Environment variable naming a darktable ``noiseprofiles.json`` to use before the usual places.
DARKTABLE_NOISEPROFILES_ENV = "DARKRAW_DARKTABLE_NOISEPROFILES"

#: Where darktable installs its noise profiles: Linux packages, a source build, Homebrew, the
#: macOS application bundle.
DARKTABLE_NOISEPROFILE_PATHS = (
    Path("/usr/share/darktable/noiseprofiles.json"),
    Path("/usr/local/share/darktable/noiseprofiles.json"),
    Path("/opt/homebrew/share/darktable/noiseprofiles.json"),
    Path("/Applications/darktable.app/Contents/Resources/share/darktable/noiseprofiles.json"),
)

#: The layout version darktable's reader accepts (``DT_NOISE_PROFILE_VERSION``).
_DARKTABLE_VERSION = 0


def _quad(values: Sequence[float], name: str) -> Quad:
    if len(values) != 4:
        raise ValueError(f"{name} must have 4 values (R, G1, B, G2), got {len(values)}")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) and v >= 0 for v in out):
        raise ValueError(f"{name} must be finite and non-negative, got {out}")
    return out[0], out[1], out[2], out[3]


@dataclass(frozen=True)
class RawNoise:
    """Poisson-Gaussian noise of normalised raw values: var(x) = shot * x + read, per packed Bayer
    plane (R, G1, B, G2).

    Attributes:
        shot: variance per unit of signal, for each plane (normalised raw units).
        read: signal-independent variance, for each plane (normalised raw units squared).
        source: where the numbers come from, for people: ``"darktable profile Sony ILCE-7M3,
            ISO 12800"`` or ``"estimated from the frame"``.
    """

    shot: Quad
    read: Quad
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "shot", _quad(self.shot, "shot"))
        object.__setattr__(self, "read", _quad(self.read, "read"))

    def amplified(self, ratio: float) -> RawNoise:
        """The noise of ``y = ratio * x``: shot times ``ratio``, read times ``ratio**2``."""
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"ratio must be a positive number, got {ratio}")
        return RawNoise(
            shot=_quad([s * ratio for s in self.shot], "shot"),
            read=_quad([r * ratio**2 for r in self.read], "read"),
            source=self.source,
        )

    def scaled(self, strength: float) -> RawNoise:
        """The noise with its standard deviation times ``strength`` (>= 0; 0 gives no noise)."""
        if not (math.isfinite(strength) and strength >= 0):
            raise ValueError(f"strength must be a number >= 0, got {strength}")
        gain = strength**2
        return RawNoise(
            shot=_quad([s * gain for s in self.shot], "shot"),
            read=_quad([r * gain for r in self.read], "read"),
            source=self.source,
        )

    def describe(self) -> str:
        """One line for the command line: the green planes' noise and where it came from."""
        shot = (self.shot[1] + self.shot[3]) / 2
        read = (self.read[1] + self.read[3]) / 2
        return f"shot {shot:.1e}, read {read:.1e} (green; {self.source})"


@dataclass(frozen=True)
class _Profile:
    """One profiled ISO of a camera: darktable's ``a`` (shot) and ``b`` (read) for R, G, B."""

    iso: float
    a: Triple
    b: Triple


@dataclass(frozen=True)
class _Camera:
    maker: str
    model: str
    #: Sorted by ISO, one per ISO.
    profiles: tuple[_Profile, ...]


def _key(name: str) -> str:
    """A maker or model name as matched: case and all whitespace ignored."""
    return "".join(name.casefold().split())


def _without_prefix(name_key: str, prefix_key: str) -> str:
    if prefix_key and name_key.startswith(prefix_key) and len(name_key) > len(prefix_key):
        return name_key[len(prefix_key) :]
    return name_key


class NoiseDatabase:
    """Camera noise profiles in darktable's noiseprofiles.json format (per camera maker/model, per
    ISO: a and b for R, G, B).

    darktable's layout (version 0)::

        {"version": 0, "noiseprofiles": [
          {"maker": "Sony", "models": [
            {"comment": "...", "model": "ILCE-7M3", "profiles": [
              {"name": "ILCE-7M3 iso 100", "iso": 100, "a": [r, g, b], "b": [r, g, b]},
              {"skip": true, "name": ..., "iso": ..., "a": [...], "b": [...]}, ...]}]}]}

    What is read, and why:

    - Profiles marked ``"skip": true`` are left out, as darktable leaves them out (they are
      superseded measurements). darktable's fallback "generic poissonian" profile lives in its
      code, not in the file; a camera without a profile gets ``None`` here, never a generic guess.
    - A profile with a non-finite ``a``, ``b`` or ISO is left out; a negative ``a`` or ``b`` (an
      imperfect fit, about one profile in eight has a negative green ``b``) is clamped to 0.
    - Where one ISO is profiled twice, the first profile is kept: the one darktable picks for
      that exact ISO.
    - Every plane gets darktable's green values. darktable's red and blue are measured after its
      colour conversion, which scales them roughly by the white-balance multipliers (across the
      file, red ``a`` is a median 2.2 times green ``a``, blue 1.9 times; in the raw planes every
      photosite has the same gain), and darktable's own denoiser uses only green.
    - The values are darktable's, unscaled: see the module docstring on how darktable measures
      them, which puts them on another scale than the per-pixel variance of the raw planes.
    """

    def __init__(self, cameras: Iterable[_Camera]) -> None:
        self._cameras = tuple(cameras)

    @classmethod
    def load(cls, path: str | Path) -> NoiseDatabase:
        """Read a darktable ``noiseprofiles.json``.

        Raises:
            DarkrawError: ``PATH: problem`` when the file cannot be read, is not JSON, or is not
                laid out as darktable's (the message names the offending key).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DarkrawError(path, f"cannot read darktable noise profiles: {err}") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DarkrawError(
                path, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
            ) from err
        return cls(_parse_darktable(data, path))

    def lookup(self, make: str | None, model: str | None, iso: float | None) -> RawNoise | None:
        """The profiled noise of this camera at this ISO, or ``None`` when it is not known.

        The camera matches when darktable's maker name is contained in ``make`` (darktable's own
        rule, here ignoring case and whitespace: "NIKON CORPORATION" matches "Nikon") or begins
        ``model`` ("RICOH IMAGING COMPANY, LTD." and "PENTAX K-70" match "Pentax"), and the
        model names agree ignoring case, whitespace and a leading maker name ("Canon EOS 5D Mark
        IV" matches "EOS 5D Mark IV"). Between two profiled ISOs, ``a`` and ``b`` are
        interpolated linearly in ISO, as darktable does; below the lowest or above the highest
        profiled ISO, the nearest profile is used as it is.
        """
        if make is None or model is None or iso is None:
            return None
        if not (math.isfinite(iso) and iso > 0):
            return None
        camera = self._find(make, model)
        if camera is None:
            return None
        a, b, iso_note = _at_iso(camera.profiles, float(iso))
        name = camera.model
        if not _key(name).startswith(_key(camera.maker)):
            name = f"{camera.maker} {name}"
        return RawNoise(
            shot=(a[1],) * 4, read=(b[1],) * 4, source=f"darktable profile {name}, {iso_note}"
        )

    def __len__(self) -> int:
        """The number of cameras with at least one usable profile."""
        return len(self._cameras)

    def _find(self, make: str, model: str) -> _Camera | None:
        make_key = _key(make)
        model_key = _key(model)
        # EXIF makes like "NIKON CORPORATION" prefix models as "NIKON D850".
        make_words = make.casefold().split()
        wanted = {model_key, _without_prefix(model_key, make_words[0] if make_words else "")}
        for camera in self._cameras:
            maker_key = _key(camera.maker)
            # Pentax bodies say "RICOH IMAGING COMPANY, LTD." but name themselves "PENTAX K-70".
            if not maker_key or not (maker_key in make_key or model_key.startswith(maker_key)):
                continue
            wanted_here = wanted | {_without_prefix(model_key, maker_key)}
            camera_key = _key(camera.model)
            if wanted_here & {camera_key, _without_prefix(camera_key, maker_key)}:
                return camera
        return None


def _at_iso(profiles: Sequence[_Profile], iso: float) -> tuple[Triple, Triple, str]:
    """darktable's ``a`` and ``b`` at ``iso``, and a note of how they were found."""
    isos = [p.iso for p in profiles]
    k = bisect.bisect_left(isos, iso)
    if k < len(isos) and isos[k] == iso:
        return profiles[k].a, profiles[k].b, f"ISO {iso:g}"
    if k == 0 or k == len(isos):
        nearest = profiles[0] if k == 0 else profiles[-1]
        return nearest.a, nearest.b, f"ISO {nearest.iso:g} (nearest to ISO {iso:g})"
    lo, hi = profiles[k - 1], profiles[k]
    t = (iso - lo.iso) / (hi.iso - lo.iso)
    a = tuple((1 - t) * u + t * v for u, v in zip(lo.a, hi.a, strict=True))
    b = tuple((1 - t) * u + t * v for u, v in zip(lo.b, hi.b, strict=True))
    note = f"ISO {iso:g} (interpolated from ISO {lo.iso:g} and {hi.iso:g})"
    return (a[0], a[1], a[2]), (b[0], b[1], b[2]), note


_T = TypeVar("_T")


class _Layout:
    """Checks of darktable's layout, failing with one line that names the offending key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> NoReturn:
        raise DarkrawError(self.path, f"not a darktable noise profile file: {where}: {problem}")

    def expect(self, value: object, kind: type[_T], where: str, what: str) -> _T:
        if not isinstance(value, kind):
            self.fail(where, f"expected {what}, got {_shown(value)}")
        return value

    def number(self, value: object, where: str) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(where, f"expected a number, got {_shown(value)}")
        return float(value)

    def triple(self, value: object, where: str) -> Triple:
        if not (isinstance(value, list) and len(value) == 3):
            self.fail(where, f"expected a list of 3 numbers, got {_shown(value)}")
        x, y, z = (self.number(v, f"{where}[{i}]") for i, v in enumerate(value))
        return x, y, z


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_darktable(data: object, path: Path) -> list[_Camera]:
    """darktable's JSON as cameras; a layout error raises :class:`DarkrawError` naming the key."""
    layout = _Layout(path)
    top = layout.expect(data, dict, "top level", "an object")
    if "version" not in top:
        layout.fail("version", "missing")
    if layout.number(top["version"], "version") != _DARKTABLE_VERSION:
        layout.fail("version", f"darkraw reads version {_DARKTABLE_VERSION}, got {top['version']}")
    makers = layout.expect(top.get("noiseprofiles"), list, "noiseprofiles", "a list")
    cameras: list[_Camera] = []
    for i, maker_entry in enumerate(makers):
        at = f"noiseprofiles[{i}]"
        maker_entry = layout.expect(maker_entry, dict, at, "an object")
        maker = layout.expect(maker_entry.get("maker"), str, f"{at}.maker", "a string")
        models = layout.expect(maker_entry.get("models"), list, f"{at}.models", "a list")
        for j, model_entry in enumerate(models):
            camera = _parse_camera(layout, model_entry, maker, f"{at}.models[{j}]")
            if camera is not None:
                cameras.append(camera)
    return cameras


def _parse_camera(layout: _Layout, entry: object, maker: str, at: str) -> _Camera | None:
    """One camera's usable profiles, ``None`` when it has none."""
    entry = layout.expect(entry, dict, at, "an object")
    model = layout.expect(entry.get("model"), str, f"{at}.model", "a string")
    profiles = layout.expect(entry.get("profiles"), list, f"{at}.profiles", "a list")
    by_iso: dict[float, _Profile] = {}
    for k, profile_entry in enumerate(profiles):
        profile = _parse_profile(layout, profile_entry, f"{at}.profiles[{k}]")
        if profile is not None and profile.iso not in by_iso:
            by_iso[profile.iso] = profile
    if not by_iso:
        return None
    return _Camera(maker, model, tuple(by_iso[iso] for iso in sorted(by_iso)))


def _parse_profile(layout: _Layout, entry: object, at: str) -> _Profile | None:
    """One profile, ``None`` when darktable skips it or its numbers are not finite."""
    entry = layout.expect(entry, dict, at, "an object")
    if layout.expect(entry.get("skip", False), bool, f"{at}.skip", "true or false"):
        return None
    iso = layout.number(entry.get("iso"), f"{at}.iso")
    a = layout.triple(entry.get("a"), f"{at}.a")
    b = layout.triple(entry.get("b"), f"{at}.b")
    if not (math.isfinite(iso) and iso > 0) or not all(map(math.isfinite, a + b)):
        return None
    return _Profile(iso, _clamp_negative(a), _clamp_negative(b))


def _clamp_negative(values: Triple) -> Triple:
    return (max(values[0], 0.0), max(values[1], 0.0), max(values[2], 0.0))


def find_darktable_database() -> Path | None:
    """darktable's ``noiseprofiles.json`` if installed, else ``None``.

    Looks at ``$DARKRAW_DARKTABLE_NOISEPROFILES`` first (skipped when it names no file), then
    :data:`DARKTABLE_NOISEPROFILE_PATHS` in order.
    """
    override = os.environ.get(DARKTABLE_NOISEPROFILES_ENV, "").strip()
    candidates = [Path(override).expanduser()] if override else []
    for candidate in [*candidates, *DARKTABLE_NOISEPROFILE_PATHS]:
        if candidate.is_file():
            return candidate
    return None


# --- Estimation from the frame --------------------------------------------------------------

#: Immerkaer's (1996) kernel scaled so that its response to white noise of variance v has
#: variance v (the unscaled kernel's squared weights sum to 36).
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32) / 6.0
#: Side of the box whose mean gives a pixel's brightness.
_MEAN_SIZE = 5
#: Texture is measured from the residuals this many pixels away: their 3x3 supports do not
#: overlap the centre's, so for any pixel-independent noise the choice is independent of the
#: residual it keeps and biases nothing, while it still finds texture nearby.
_TEXTURE_OFFSET = 3
#: Pixels this close to a plane's edge are not sampled, so that their texture lies inside it.
_BORDER = _TEXTURE_OFFSET
#: The smoothest share of each brightness bin kept (textures inflate residuals).
_KEEP_SMOOTHEST = 0.5
#: About this many pixels are sampled in all (a regular grid), which keeps a 12-Mpixel frame fast.
_TARGET_SAMPLES = 2_000_000
#: Brightness bins per plane (pooled over the four planes).
_BINS_PER_PLANE = 16
#: The fewest residuals a bin's variance is measured from (bins start 4 times larger: the
#: rougher half and the pixels near a clip are taken out).
_MIN_BIN = 64
#: A value at the frame's extreme shared by this share of pixels is a clip (sensor saturation,
#: or a camera that clips at black) rather than noise.
_CLIP_SHARE = 1e-3
#: A brightness bin with more than this share of pixels near a clipped value is left out: its
#: variance is cut by the clip. Left-out pixels are those with a clipped value in their 5x5
#: window; at 10 % the bins kept sit about 2.6 std above a black clip, where the kept windows'
#: variance is lowered by about 3 %.
_MAX_CLIPPED_SHARE = 0.10
#: Fewer usable bins than this and clipped bins are used too (biased low, better than nothing).
_MIN_BINS = 3
_MAD_TO_STD = 1.0 / 0.6744897501960817
#: Residuals beyond this many standard deviations are dropped (edges, hot pixels), and the
#: second moment of what is left divided by that of a Gaussian truncated alike.
_TRIM = 3.0
_TRIM_GAIN = 1.0 - 2.0 * _TRIM * math.exp(-(_TRIM**2) / 2) / math.sqrt(2 * math.pi) / math.erf(
    _TRIM / math.sqrt(2)
)


def _check_planes(planes: np.ndarray) -> None:
    if not isinstance(planes, np.ndarray) or planes.ndim != 3 or planes.shape[0] != 4:
        shape = getattr(planes, "shape", type(planes).__name__)
        raise ValueError(f"expected packed Bayer planes of shape (4, h, w), got {shape}")


def estimate_raw_noise(planes: np.ndarray) -> RawNoise:
    """Estimate the Poisson-Gaussian noise of a frame from its pixels alone.

    Each pixel's Immerkaer residual (a 3x3 second difference whose variance is the pixel's noise
    variance wherever the image is locally linear) is put in a bin by the pixel's 5x5 mean; in
    each bin the smoother half of the pixels is kept, and its variance measured robustly (3-sigma
    trimmed second moment: edges and hot pixels are outliers); ``var = shot * x + read`` is then
    fitted to the bins by least squares weighted by each bin's precision (``n / var**2``,
    iterated), both terms kept non-negative. Pixels near a clipped value (saturation, a camera's
    clip at black) are left out, and so are bins where they are common.

    The four planes are pooled into one fit: before white balance every photosite of a sensor
    has the same gain, so one ``shot`` and one ``read`` serve all planes, and pooling halves the
    error of a fit to one plane (rms error of each term 2-7 % pooled against 6-12 % for one
    plane, on 128x128 and 256x256 planes).

    Accuracy, measured on synthetic frames (a smooth scene at mean levels 0.02, 0.08 and 0.32;
    Poisson-Gaussian noise with shot 1e-4, 1e-3, 1e-2 and read 1e-6, 1e-5, 1e-4; 4 x 256 x 256;
    3 seeds): the variance of each term that makes at least 10 % of the variance at the mean
    level is recovered within 8 % for shot (rms 2 %) and 14 % for read (rms 4 %); on 128x128
    planes within 28 % and 26 %. A smaller term cannot be told apart and may be far off. Limits:
    where a frame clipped at black has every pixel within about 3 std of the clip, too few bins
    remain, the clipped ones are used too and ``read`` comes out low (down to 0); on textured
    photos ``shot`` comes out high where the noise is weak against the texture.

    Speed: 0.18 s for a 12-Mpixel frame's planes (4 x 1500 x 2000 float32; median of 9 runs on
    2 CPU cores shared with other work); about 2 million pixels are sampled on a regular grid.
    :func:`darkraw.classic.denoise.estimate_noise` took 1.8 s on the same frame, was as accurate
    on unclipped synthetic frames, but is thrown by clipping (a frame 40 % saturated gave shot 0).

    Args:
        planes: ``(4, h, w)`` float normalised raw (black 0, white 1, not amplified), h, w >= 8.

    Returns:
        The same ``shot`` and ``read`` for all four planes; source ``"estimated from the frame"``.
        A frame too small to bin gives ``shot`` 0 and its residual variance as ``read``.

    Raises:
        ValueError: planes not of shape ``(4, h, w)``, smaller than 8x8, or not finite.
    """
    _check_planes(planes)
    _, h, w = planes.shape
    if min(h, w) < 2 * _BORDER + 2:
        raise ValueError(f"planes too small to estimate noise: need h, w >= 8, got {planes.shape}")
    values = np.asarray(planes, dtype=np.float32)
    step = max(1, math.ceil(math.sqrt(values.size / _TARGET_SAMPLES)))
    low, high = _clip_levels(values)
    parts = thread_map(
        lambda p: _plane_samples(np.ascontiguousarray(p), step, low, high), values, size=values.size
    )
    resid, mean, texture, clipped = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    bins = _bin_variances(resid, mean, texture, clipped, avoid_clipped=True)
    if len(bins[0]) < _MIN_BINS:
        bins = _bin_variances(resid, mean, texture, clipped, avoid_clipped=False)
    if len(bins[0]) >= 2:
        shot, read = _fit_line(*bins)
    else:
        shot, read = 0.0, _robust_variance(resid)
    return RawNoise(shot=(shot,) * 4, read=(read,) * 4, source="estimated from the frame")


def _clip_levels(values: np.ndarray) -> tuple[float | None, float | None]:
    """The values at which the frame is clipped below and above, ``None`` where it is not.

    Two passes over row bands on every core (a 12-Mpixel frame's planes are 48 MB): the
    extremes, then how many samples sit at them.

    Raises:
        ValueError: NaN or infinite values.
    """
    rows = values.reshape(-1, values.shape[-1])
    parts = bands(rows.shape[0])

    def extremes(band: slice) -> tuple[bool, float, float]:
        part = rows[band]
        return bool(np.isfinite(part).all()), float(part.min()), float(part.max())

    found = thread_map(extremes, parts, size=values.size)
    if not all(finite for finite, _, _ in found):
        raise ValueError("planes contain NaN or infinite values")
    lowest = min(lo for _, lo, _ in found)
    highest = max(hi for _, _, hi in found)

    def at_extremes(band: slice) -> tuple[int, int]:
        part = rows[band]
        return int(np.count_nonzero(part == lowest)), int(np.count_nonzero(part == highest))

    counts = thread_map(at_extremes, parts, size=values.size)
    share = _CLIP_SHARE * values.size
    low = lowest if sum(c for c, _ in counts) >= share else None
    if highest >= 1.0:
        high: float | None = 1.0
    else:
        high = highest if sum(c for _, c in counts) >= share else None
    return low, high


def _plane_samples(
    plane: np.ndarray, step: int, low: float | None, high: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Residual, local mean, texture and near-clip flag of one plane, on a grid of ``step``."""
    h, w = plane.shape
    resid = filter2d(plane, _IMMERKAER)
    mean = box_mean(plane, _MEAN_SIZE)

    def grid(dy: int = 0, dx: int = 0) -> tuple[slice, slice]:
        rows = slice(_BORDER + dy, h - _BORDER + dy, step)
        return rows, slice(_BORDER + dx, w - _BORDER + dx, step)

    d = _TEXTURE_OFFSET
    texture = sum(resid[grid(dy, dx)] ** 2 for dy, dx in ((-d, 0), (d, 0), (0, -d), (0, d)))
    at_clip = np.zeros(plane.shape, dtype=np.uint8)
    if low is not None:
        at_clip |= plane <= low
    if high is not None:
        at_clip |= plane >= high
    near_clip = max_filter(at_clip, _MEAN_SIZE)[grid()] > 0
    return (
        resid[grid()].ravel(),
        mean[grid()].ravel(),
        np.asarray(texture).ravel(),
        near_clip.ravel(),
    )


def _bin_variances(
    resid: np.ndarray,
    mean: np.ndarray,
    texture: np.ndarray,
    clipped: np.ndarray,
    *,
    avoid_clipped: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean brightness, noise variance and pixel count of each usable brightness bin."""
    usable = ~clipped if avoid_clipped else np.ones_like(clipped)
    levels = mean[usable]
    n_bins = min(4 * _BINS_PER_PLANE, levels.size // (4 * _MIN_BIN))
    if n_bins < 1:
        return np.empty(0), np.empty(0), np.empty(0)
    # Quantile edges of a subsample: bins with equal counts, without sorting millions of values.
    sub = levels[:: max(1, levels.size // 20_000)]
    edges = np.quantile(sub, np.linspace(0.0, 1.0, n_bins + 1))
    # A binary search of 2 million samples takes 0.05 s; in chunks it runs on every core.
    chunks = np.array_split(mean, max(1, mean.size // 250_000))
    found = thread_map(lambda c: np.searchsorted(edges, c, side="right"), chunks, size=mean.size)
    index = np.clip(np.concatenate(found) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    clipped_counts = np.bincount(index, weights=clipped, minlength=n_bins)
    # Bin numbers fit 16 bits, for which numpy's stable sort is a radix sort: ten times faster
    # than on int64 (0.02 against 0.2 s for 2 million samples), and the same order.
    order = np.argsort(index.astype(np.uint16), kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])

    def measure(b: int) -> tuple[float, float, int] | None:
        if avoid_clipped and clipped_counts[b] > _MAX_CLIPPED_SHARE * counts[b]:
            return None
        members = order[starts[b] : starts[b + 1]]
        members = members[usable[members]]
        if members.size < _MIN_BIN / _KEEP_SMOOTHEST:
            return None
        smooth = texture[members] <= np.quantile(texture[members], _KEEP_SMOOTHEST)
        members = members[smooth]
        return float(mean[members].mean()), _robust_variance(resid[members]), members.size

    # Bins are independent: spread over the cores, a share of them to each (one hand-off per
    # core, not per bin: 0.064 against 0.072 s for a 12-Mpixel frame), kept in order.
    shares = max(1, min(cpu_threads(), n_bins))
    measured = thread_map(
        lambda first: [measure(b) for b in range(first, n_bins, shares)],
        range(shares),
        size=mean.size,
    )
    found_bins = [measured[b % shares][b // shares] for b in range(n_bins)]
    bins = [m for m in found_bins if m is not None]
    xs = np.array([m[0] for m in bins])
    variances = np.array([m[1] for m in bins])
    return xs, variances, np.array([m[2] for m in bins], dtype=np.float64)


def _robust_variance(resid: np.ndarray) -> float:
    """Variance of mostly Gaussian residuals, ignoring a minority of outliers."""
    r = resid.astype(np.float64)
    sigma = float(np.median(np.abs(r))) * _MAD_TO_STD
    if sigma == 0.0:
        return float(np.mean(r * r))
    variance = sigma * sigma
    for _ in range(2):
        kept = r[np.abs(r) < _TRIM * math.sqrt(variance)]
        if kept.size == 0:
            break
        variance = float(np.mean(kept * kept)) / _TRIM_GAIN
    return variance


def _fit_line(x: np.ndarray, y: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """``y = shot * x + read`` with both >= 0, each point weighted by ``n / var**2``.

    A bin's measured variance has a standard error proportional to ``var / sqrt(n)``; weighting
    by it keeps the bright bins (large variance) from drowning the dark ones that carry ``read``.
    """
    fit = _nonnegative_wls(x, y, np.sqrt(n) / np.maximum(y, 1e-30))
    for _ in range(3):
        predicted = np.maximum(fit[0] * x + fit[1], 1e-30)
        fit = _nonnegative_wls(x, y, np.sqrt(n) / predicted)
    return fit


def _nonnegative_wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    design = np.stack([x, np.ones_like(x)], axis=1) * w[:, None]
    target = y * w
    candidates = []
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    if solution[0] >= 0 and solution[1] >= 0:
        candidates.append((float(solution[0]), float(solution[1])))
    # Otherwise the optimum lies on an edge: no read noise, or no shot noise.
    xw = x * w
    if float(xw @ xw) > 0:
        candidates.append((max(float(xw @ target) / float(xw @ xw), 0.0), 0.0))
    candidates.append((0.0, max(float(w @ target) / float(w @ w), 0.0)))

    def cost(c: tuple[float, float]) -> float:
        return float(np.sum((design @ np.array(c) - target) ** 2))

    return min(candidates, key=cost)


def noise_for_frame(
    planes: np.ndarray,
    make: str | None,
    model: str | None,
    iso: float | None,
    database: NoiseDatabase | None = None,
) -> RawNoise:
    """The noise of a frame: the database's profile when it knows this camera and ISO, otherwise
    :func:`estimate_raw_noise`.

    Args:
        planes: ``(4, h, w)`` float normalised raw (black 0, white 1, not amplified).
        make, model, iso: the file's camera and ISO, as :class:`~darkraw.raw.metadata.RawMetadata`
            holds them.
        database: profiles to look in; ``None`` estimates from the frame (see
            :func:`find_darktable_database` and :meth:`NoiseDatabase.load`).
    """
    _check_planes(planes)
    if database is not None:
        profiled = database.lookup(make, model, iso)
        if profiled is not None:
            return profiled
    return estimate_raw_noise(planes)


def load_noise_profiles(spec: str | Path) -> NoiseDatabase:
    """Profiles from a file in darktable's format, or ``"darktable"`` for darktable's own.

    Raises:
        DarkrawError: darktable's file is not installed, or the file cannot be read.
    """
    if str(spec) == "darktable":
        found = find_darktable_database()
        if found is None:
            raise DarkrawError(
                None,
                "darktable's noiseprofiles.json was not found; install darktable or set "
                f"{DARKTABLE_NOISEPROFILES_ENV} to the file",
            )
        spec = found
    return NoiseDatabase.load(spec)


# --- Black-level offset ----------------------------------------------------------------------

#: White level of the DN that black-offset bounds are given in when no calibration says: a
#: 14-bit sensor's, the scale of ELD's calibrations.
OFFSET_DN_WHITE = 16383.0

#: Largest black-level offset corrected without a camera calibration, in DN of a 14-bit sensor
#: (:data:`OFFSET_DN_WHITE`). Only a black that reads *below* the file's black level is corrected
#: then: no scene is darker than black, so that offset is certain, where a dark level above it
#: may be the scene's own (measured: lowering it by even 1 DN cost 0.9 dB on unbiased frames at
#: x100, ``docs/model-card.md``).
DEFAULT_OFFSET_BOUND_DN = 2.0

#: Side of the blocks whose levels measure a plane's dark level, in packed pixels.
_BLACK_BLOCK = 8
#: How many of the darkest blocks (by the selection half of their samples) are averaged.
_BLACK_DARKEST = 4

#: Bundled ELD calibrations (:mod:`darkraw.synth.noise`) by the camera's make and model as raw
#: files name them (matched ignoring case, whitespace and a leading make).
CALIBRATED_CAMERAS: dict[tuple[str, str], str] = {
    ("sony", "ilce-7sm2"): "SonyA7S2",
    ("nikon", "d850"): "NikonD850",
    ("canon", "eos5dmarkiv"): "CanonEOS5D4",
    ("canon", "eos70d"): "CanonEOS70D",
    ("canon", "eos700d"): "CanonEOS700D",
    ("canon", "eosrebelt5i"): "CanonEOS700D",
    ("canon", "eoskissx7i"): "CanonEOS700D",
}


@dataclass(frozen=True)
class BlackOffsetRange:
    """The black-level offsets a frame may carry, per packed plane (R, G1, B, G2), as a share of
    white (normalised raw: black 0, white 1).

    Attributes:
        low, high: the offset :func:`estimate_black_offset` gives is the frame's measurement
            clipped to ``[low, high]`` in each plane.
        source: where the range comes from, for people.
    """

    low: tuple[float, float, float, float]
    high: tuple[float, float, float, float]
    source: str

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 4 or not all(math.isfinite(v) and abs(v) < 1 for v in values):
                raise ValueError(f"{name} must be 4 finite shares of white, got {values}")
            object.__setattr__(self, name, values)
        if any(lo > hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError(f"low {self.low} above high {self.high}")

    def clip(self, offsets: Sequence[float]) -> tuple[float, float, float, float]:
        """Each plane's offset held within ``[low, high]``."""
        out = [
            min(max(float(m), lo), hi)
            for m, lo, hi in zip(offsets, self.low, self.high, strict=True)
        ]
        return out[0], out[1], out[2], out[3]

    @classmethod
    def fixed(
        cls, bound_dn: float = DEFAULT_OFFSET_BOUND_DN, *, lower_only: bool = True
    ) -> BlackOffsetRange:
        """No calibration: black read low by at most ``bound_dn`` DN of a 14-bit sensor is
        corrected (``lower_only``), or an offset of at most ``bound_dn`` either way."""
        bound = float(bound_dn) / OFFSET_DN_WHITE
        high = 0.0 if lower_only else bound
        what = "below black" if lower_only else "either way"
        return cls((-bound,) * 4, (high,) * 4, f"at most {bound_dn:g} DN of 14 bits {what}")

    @classmethod
    def from_calibration(
        cls, profile: NoiseProfile, span_dn: float, *, up_to: Literal["mean", "max"] = "mean"
    ) -> BlackOffsetRange:
        """A calibrated camera's range: from the lowest of its measured colour biases up to
        their mean (``up_to="mean"``, the darkest-level rule's) or their highest (``"max"``,
        the learnt estimate's), per plane.

        The frame's darkest level is an upper bound of its offset (the scene adds light, never
        takes it away): below the calibration's mean it is taken, above it the mean is (ELD's
        biases are drawn one row per frame, whatever the gain, so their mean is the best guess
        a frame with no black allows).

        Args:
            profile: the camera's calibration (:func:`darkraw.synth.noise.load_profile`).
            span_dn: the file's white level less its black level, DN.
        """
        if not (math.isfinite(span_dn) and span_dn > 0):
            raise ValueError(f"span_dn must be a positive number, got {span_dn}")
        rows = np.asarray(profile.color_bias, dtype=np.float64) / float(span_dn)
        low = rows.min(axis=0)
        high = rows.mean(axis=0) if up_to == "mean" else rows.max(axis=0)
        what = "" if up_to == "mean" else ", lowest to highest"
        return cls(
            (low[0], low[1], low[2], low[3]),
            (high[0], high[1], high[2], high[3]),
            f"{profile.name} calibration{what}",
        )


def calibrated_camera(make: str | None, model: str | None) -> NoiseProfile | None:
    """The bundled ELD calibration of this camera (:data:`CALIBRATED_CAMERAS`), or ``None``."""
    if not make or not model:
        return None
    make_key, model_key = _key(make), _key(model)
    for (maker, name), profile in CALIBRATED_CAMERAS.items():
        if maker in make_key and _without_prefix(model_key, maker) == name:
            return load_profile(profile)
    return None


def black_offset_range(make: str | None, model: str | None, span_dn: float) -> BlackOffsetRange:
    """The offsets a file of this camera may carry: its calibration's
    (:meth:`BlackOffsetRange.from_calibration`) when it is one of the bundled cameras, otherwise
    :meth:`BlackOffsetRange.fixed`."""
    profile = calibrated_camera(make, model)
    if profile is None:
        return BlackOffsetRange.fixed()
    return BlackOffsetRange.from_calibration(profile, span_dn)


#: The learnt estimate's largest offset, either way, for a camera with no calibration: DN of 14
#: bits (:data:`OFFSET_DN_WHITE`). ELD's five cameras' colour biases reach 6 DN.
LEARNT_OFFSET_BOUND_DN = 6.0


def learnt_offset_range(make: str | None, model: str | None, span_dn: float) -> BlackOffsetRange:
    """The offsets the learnt estimate (:mod:`darkraw.nn.blackoffset`) may give a file of this
    camera: for one of the bundled cameras, from the lowest of its calibration's colour biases
    to the highest, per plane; otherwise at most :data:`LEARNT_OFFSET_BOUND_DN` either way.

    Args:
        span_dn: the file's white level less its black level, DN.
    """
    profile = calibrated_camera(make, model)
    if profile is None:
        return BlackOffsetRange.fixed(LEARNT_OFFSET_BOUND_DN, lower_only=False)
    return BlackOffsetRange.from_calibration(profile, span_dn, up_to="max")


def estimate_black_offset(
    planes: np.ndarray,
    limits: BlackOffsetRange | None = None,
    *,
    block: int = _BLACK_BLOCK,
    darkest: int = _BLACK_DARKEST,
) -> tuple[float, float, float, float]:
    """The black-level offset of each plane: its darkest level, clipped to ``limits``.

    A plane's darkest level is the mean level (middle half of the samples) of its darkest
    blocks: blocks are chosen by one half of their samples (even columns) and measured on the
    other (odd columns), so that the noise that makes a block look darkest does not lower its
    measured level. Noise is zero-mean, so in a region with no light this is the black-level
    offset; where the scene has no black it is an upper bound (offset plus the scene's darkest
    level), which is why it is clipped.

    Args:
        planes: ``(4, h, w)`` float normalised raw (black 0, white 1, not amplified).
        limits: the range of offsets allowed; ``None``: :meth:`BlackOffsetRange.fixed`.
        block: side of the blocks, packed pixels (even; smaller for smaller planes).
        darkest: how many of the darkest blocks are averaged.

    Returns:
        The offset of each plane, as a share of white: what to subtract from it.
    """
    measured = measure_black_level(planes, block=block, darkest=darkest)
    limits = BlackOffsetRange.fixed() if limits is None else limits
    return limits.clip(measured)


def measure_black_level(
    planes: np.ndarray, *, block: int = _BLACK_BLOCK, darkest: int = _BLACK_DARKEST
) -> tuple[float, float, float, float]:
    """The level of each plane's darkest region (see :func:`estimate_black_offset`), unclipped."""
    _check_planes(planes)
    _, h, w = planes.shape
    b = max(2, min(block, h, w) // 2 * 2)
    nby, nbx = h // b, w // b

    def level(plane: np.ndarray) -> float:
        tiles = plane[: nby * b, : nbx * b].reshape(nby, b, nbx, b).transpose(0, 2, 1, 3)
        blocks = tiles.reshape(nby * nbx, b, b)
        select = _central_mean(blocks[:, :, 0::2].reshape(nby * nbx, -1))
        measure = _central_mean(blocks[:, :, 1::2].reshape(nby * nbx, -1))
        k = min(darkest, select.size)
        chosen = np.argpartition(select, k - 1)[:k]
        return float(np.mean(measure[chosen]))

    values = np.asarray(planes, dtype=np.float32)
    out = thread_map(level, values, size=values.size)
    return out[0], out[1], out[2], out[3]


def _central_mean(samples: np.ndarray) -> np.ndarray:
    """The mean of the middle half of each row (not quantised as a median of whole DN is)."""
    n = samples.shape[1]
    ordered = np.sort(samples, axis=1)
    middle: np.ndarray = ordered[:, n // 4 : n - n // 4].mean(axis=1)
    return middle
