"""Denoising packed raw planes with Poisson-Gaussian noise: noise estimation, VST, BM3D or NLM.

Raw noise is signal dependent, with variance ``a * x + b`` (shot noise plus read noise). It is
estimated from the image itself, made unit-variance by the generalized Anscombe transform
(Starck, Murtagh & Bijaoui 1998), removed by a Gaussian denoiser, and the transform undone with
the closed-form approximation of the exact unbiased inverse (Makitalo & Foi, IEEE TIP 2013).
The Gaussian denoiser is BM3D (Dabov et al., IEEE TIP 2007; the ``bm3d`` package) or, for
speed, OpenCV's non-local means (Buades et al., CVPR 2005). Both packages come with the
``darkraw[classic]`` extra; without them only the denoiser ``none`` runs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from tqdm import tqdm

from darkraw import progress
from darkraw.choices import parse_choice
from darkraw.classic.filters import box_mean, filter2d, opencv
from darkraw.errors import DarkrawError

#: Immerkaer's (1996) noise-estimation kernel; its response to unit white noise has std 6.
_LAPLACE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_LAPLACE_GAIN = 6.0
#: Median of |N(0, 1)|.
_MAD_TO_STD = 1.0 / 0.6744897501960817


class Denoiser(enum.Enum):
    """Gaussian denoisers available after the variance-stabilizing transform."""

    NONE = "none"
    BM3D = "bm3d"
    NLM = "nlm"
    AUTO = "auto"

    @classmethod
    def parse(cls, name: str | Denoiser) -> Denoiser:
        return parse_choice(cls, name, "denoiser")


#: ``auto`` uses BM3D up to this many plane pixels in all (about 35 s per megapixel on 2 cores)
#: and non-local means above it.
BM3D_AUTO_LIMIT = 1_000_000


#: What to install for the denoisers ``bm3d`` and ``nlm``.
CLASSIC_EXTRA = "pip install 'darkraw[classic]'"


def _bm3d() -> ModuleType | None:
    try:
        import bm3d
    except ImportError:
        return None
    module: ModuleType = bm3d
    return module


def denoiser_available(method: Denoiser | str) -> bool:
    """Whether ``method``'s package is installed (``bm3d`` for BM3D, OpenCV for NLM); ``auto``
    is available when either is, ``none`` always."""
    method = Denoiser.parse(method)
    if method is Denoiser.BM3D:
        return _bm3d() is not None
    if method is Denoiser.NLM:
        return opencv() is not None
    if method is Denoiser.AUTO:
        return denoiser_available(Denoiser.NLM) or denoiser_available(Denoiser.BM3D)
    return True


def resolve_denoiser(method: Denoiser | str, num_values: int) -> Denoiser:
    """The denoiser ``method`` stands for on an input of ``num_values`` plane pixels.

    ``auto`` is BM3D up to :data:`BM3D_AUTO_LIMIT` values and NLM above, or whichever of the
    two is installed.

    Raises:
        DarkrawError: the denoiser's package is not installed (one line naming the extra).
    """
    method = Denoiser.parse(method)
    if method is Denoiser.AUTO:
        preferred = Denoiser.BM3D if num_values <= BM3D_AUTO_LIMIT else Denoiser.NLM
        fallback = Denoiser.NLM if preferred is Denoiser.BM3D else Denoiser.BM3D
        for choice in (preferred, fallback):
            if denoiser_available(choice):
                return choice
        raise DarkrawError(
            None,
            f"the classic denoisers need BM3D or OpenCV: {CLASSIC_EXTRA} "
            "(or choose the denoiser 'none')",
        )
    if not denoiser_available(method):
        raise _missing_package(method)
    return method


def _missing_package(method: Denoiser) -> DarkrawError:
    package = "bm3d" if method is Denoiser.BM3D else "OpenCV"
    return DarkrawError(None, f"the {method.value} denoiser needs {package}: {CLASSIC_EXTRA}")


@dataclass(frozen=True)
class NoiseLevel:
    """Poisson-Gaussian noise: variance ``shot * x + read`` for a signal ``x``."""

    shot: float
    read: float

    def std(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(self.shot * x + self.read, 0.0))


def estimate_noise(planes: np.ndarray, bins: int = 16) -> NoiseLevel:
    """Estimate Poisson-Gaussian noise parameters from the packed planes themselves.

    For every pixel a high-pass residual (Immerkaer's kernel) and a local mean are computed;
    pixels are binned by local mean, each bin's noise std is the median absolute residual
    (robust to edges), and ``var = shot * mean + read`` is fitted by least squares with both
    parameters kept non-negative.

    Args:
        planes: ``(C, h, w)`` float, black level subtracted (values in any linear scale).

    Returns:
        The fitted :class:`NoiseLevel`, in the units of ``planes``.
    """
    if planes.ndim != 3:
        raise ValueError(f"expected planes of shape (C, h, w), got {planes.shape}")
    means, variances = [], []
    for plane in planes.astype(np.float32, copy=False):
        if min(plane.shape) < 8:
            continue
        resid = filter2d(plane, _LAPLACE)[1:-1, 1:-1]
        local = box_mean(plane, 5)[1:-1, 1:-1]
        means.append(local.ravel())
        variances.append(resid.ravel())
    if not means:
        return NoiseLevel(shot=0.0, read=0.0)
    mean = np.concatenate(means)
    resid = np.concatenate(variances)
    edges = np.unique(np.quantile(mean, np.linspace(0.0, 1.0, bins + 1)))
    idx = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, max(len(edges) - 2, 0))
    xs, ys, ws = [], [], []
    for b in range(max(len(edges) - 1, 1)):
        sel = idx == b
        n = int(sel.sum())
        if n < 64:
            continue
        sigma = np.median(np.abs(resid[sel])) * _MAD_TO_STD / _LAPLACE_GAIN
        xs.append(float(np.median(mean[sel])))
        ys.append(float(sigma**2))
        ws.append(np.sqrt(n))
    if not xs:
        return NoiseLevel(shot=0.0, read=0.0)
    return _fit_nonnegative_line(np.array(xs), np.array(ys), np.array(ws))


def _fit_nonnegative_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> NoiseLevel:
    """Weighted least squares ``y = a x + b`` with ``a, b >= 0``."""
    best: tuple[float, float, float] | None = None
    a_mat = np.stack([x, np.ones_like(x)], axis=1) * w[:, None]
    yw = y * w
    candidates = []
    sol, *_ = np.linalg.lstsq(a_mat, yw, rcond=None)
    candidates.append((float(sol[0]), float(sol[1])))
    denom = float(np.sum((x * w) ** 2))
    candidates.append((max(float(np.sum(x * w * yw)) / denom, 0.0) if denom > 0 else 0.0, 0.0))
    candidates.append((0.0, max(float(np.sum(w * yw)) / float(np.sum(w * w)), 0.0)))
    for a, b in candidates:
        if a < 0 or b < 0:
            continue
        err = float(np.sum((a_mat @ np.array([a, b]) - yw) ** 2))
        if best is None or err < best[2]:
            best = (a, b, err)
    assert best is not None  # the last two candidates are always non-negative
    return NoiseLevel(shot=best[0], read=best[1])


#: Shot-noise variance at the brightest value, as a share of the read variance, below which the
#: noise is treated as Gaussian.
_NEGLIGIBLE_SHOT = 0.05


def negligible_shot_as_gaussian(noise: NoiseLevel, peak: float) -> NoiseLevel:
    """``noise`` without its shot term when that term is negligible up to ``peak``.

    A fit to a flat or dark frame can return a shot coefficient that is positive but tiny (1e-9
    against a read variance of 2e-3). The generalized Anscombe transform then adds
    ``read / shot**2`` (2e15) to the signal and loses every digit of it in float32, and the
    denoiser gets back pure noise (a flat grey field came out of BM3D with an 8-bit standard
    deviation of 98). Where the shot noise stays under 5 % of the read noise's variance over the
    whole signal range, a Gaussian model is as good and exact.
    """
    if noise.shot > 0 and noise.shot * max(peak, 0.0) < _NEGLIGIBLE_SHOT * noise.read:
        return NoiseLevel(shot=0.0, read=noise.read)
    return noise


def anscombe(x: np.ndarray, noise: NoiseLevel) -> np.ndarray:
    """Generalized Anscombe transform: Poisson-Gaussian ``x`` to unit-variance Gaussian."""
    if noise.shot <= 0:
        return np.asarray(x / np.sqrt(max(noise.read, 1e-20)))
    sigma2 = noise.read / noise.shot**2
    return 2.0 * np.sqrt(np.maximum(x / noise.shot + 0.375 + sigma2, 0.0))


def inverse_anscombe(d: np.ndarray, noise: NoiseLevel) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`anscombe`."""
    if noise.shot <= 0:
        return np.asarray(d * np.sqrt(max(noise.read, 1e-20)))
    sigma2 = noise.read / noise.shot**2
    d = np.maximum(d, 0.8)
    s32 = np.sqrt(1.5)
    y = 0.25 * d**2 + 0.25 * s32 / d - 1.375 / d**2 + 0.625 * s32 / d**3 - 0.125 - sigma2
    return np.asarray(np.maximum(y, 0.0) * noise.shot)


#: Scale of the stabilized (unit-noise) signal when quantized to 16 bits for OpenCV's NLM.
_NLM_SCALE = 256.0
#: NLM filter strength in units of the (unit) noise std; chosen on synthetic Poisson data.
_NLM_STRENGTH = 1.4


def _gaussian_denoise(plane: np.ndarray, method: Denoiser) -> np.ndarray:
    """Denoise a ``(h, w)`` plane whose noise is white Gaussian with std 1."""
    if method is Denoiser.BM3D:
        bm3d = _bm3d()
        if bm3d is None:
            raise _missing_package(method)
        return np.asarray(bm3d.bm3d(plane, sigma_psd=1.0), dtype=np.float32)
    cv2 = opencv()
    if cv2 is None:
        raise _missing_package(method)
    lo = float(plane.min())
    scaled = np.clip((plane - lo) * _NLM_SCALE, 0, 65535).astype(np.uint16)
    out = cv2.fastNlMeansDenoising(
        scaled,
        h=[_NLM_STRENGTH * _NLM_SCALE],
        templateWindowSize=5,
        searchWindowSize=13,
        normType=cv2.NORM_L1,
    )
    return np.asarray(out, dtype=np.float32) / _NLM_SCALE + lo


def denoise_planes(
    planes: np.ndarray, method: Denoiser | str = Denoiser.AUTO, noise: NoiseLevel | None = None
) -> np.ndarray:
    """Remove Poisson-Gaussian noise from packed raw planes.

    Args:
        planes: ``(C, h, w)`` float32, black level subtracted, linear.
        method: ``bm3d``, ``nlm`` (fast), ``auto`` (BM3D for small images) or ``none``.
        noise: the noise level; estimated from ``planes`` when ``None``.

    Returns:
        ``(C, h, w)`` float32, the same linear scale.
    """
    method = resolve_denoiser(method, planes.size)
    if method is Denoiser.NONE:
        return planes.astype(np.float32, copy=True)
    if noise is None:
        noise = estimate_noise(planes)
    if noise.shot <= 0 and noise.read <= 0:
        return planes.astype(np.float32, copy=True)
    noise = negligible_shot_as_gaussian(noise, float(planes.max()))
    out = np.empty_like(planes, dtype=np.float32)
    # BM3D on a large frame takes minutes: show progress plane by plane (on a terminal only).
    slow = method is Denoiser.BM3D and planes.size > BM3D_AUTO_LIMIT
    bar = tqdm(planes, desc="bm3d", unit="plane", leave=False, disable=None if slow else True)
    for c, plane in enumerate(bar):
        progress.step(f"plane {c + 1}/{len(planes)}")
        stable = anscombe(plane.astype(np.float32), noise).astype(np.float32)
        out[c] = inverse_anscombe(_gaussian_denoise(stable, method), noise)
    return out
