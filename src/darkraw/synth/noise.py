"""Physically calibrated raw noise of real cameras (Wei et al., CVPR 2020, "ELD").

Noise in sensor DN: shot noise through the system gain K (``K * Poisson(signal / K)``), read noise
(Tukey-lambda, or Gaussian as the simpler alternative), row noise (one Gaussian offset per sensor
row), quantisation (uniform over one DN) and a per-channel colour bias of the black level. For
each camera, log K is uniform in ``[log k_min, log k_max]`` and the log of each noise scale is
normal around a line in log K. The bundled numbers are ELD's calibrations of five cameras;
a user's own camera is a JSON file in the same layout (see :func:`load_profile`).
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np

from darkraw.choices import parse_choice
from darkraw.raw.cfa import BAYER_PLANE_ROWS

#: The camera of the See-in-the-Dark dataset.
DEFAULT_CAMERA = "SonyA7S2"

#: Largest system gain K a profile may give, DN per electron (ELD's cameras reach about 30).
K_MAX_LIMIT = 1e4

#: White levels a profile may be measured in, DN: a 4-bit to a 24-bit sensor.
WHITE_LEVEL_RANGE = (16.0, float(2**24))

#: Tukey-lambda shapes a profile may hold: the variance is finite above -1/2, and above 1 the
#: distribution is no longer a model of read noise (ELD measured -0.25 to 0.2).
TUKEY_SHAPE_RANGE = (-0.5, 1.0)

#: Bounds of a fit's slope, bias (of log scale against log K) and sigma (of log scale); ELD's
#: are within 1.1, 2.1 and 0.4.
FIT_LIMITS = {"slope": 10.0, "bias": 50.0, "sigma": 5.0}

#: Largest profile file read, bytes (ELD's five cameras take 30 KB together).
MAX_PROFILE_BYTES = 4 << 20


class ReadNoise(enum.Enum):
    """Distribution of read noise."""

    TUKEY = "tukey"
    GAUSSIAN = "gaussian"

    @classmethod
    def parse(cls, name: str | ReadNoise) -> ReadNoise:
        return parse_choice(cls, name, "read-noise model")


@dataclass(frozen=True)
class LogLinearFit:
    """``log(scale) ~ Normal(slope * log(K) + bias, sigma)``."""

    slope: float
    bias: float
    sigma: float

    def median(self, k: float) -> float:
        """The median scale at system gain ``k``."""
        return math.exp(self.slope * math.log(k) + self.bias)

    def sample(self, k: float, rng: np.random.Generator) -> float:
        return math.exp(rng.normal(self.slope * math.log(k) + self.bias, self.sigma))


@dataclass(frozen=True)
class NoiseFit:
    """Noise scales as functions of K: Tukey-lambda read, Gaussian read, and row noise."""

    tukey_scale: LogLinearFit
    gauss_scale: LogLinearFit
    row_scale: LogLinearFit


@dataclass(frozen=True)
class NoiseProfile:
    """A camera's measured noise, in DN of a sensor whose white level is ``white_level``.

    Attributes:
        name: camera name.
        k_min, k_max: range of the system gain K (DN per photo-electron).
        white_level: white level (above black) of the DN the profile was measured in.
        tukey_shapes: measured Tukey-lambda shape parameters; one is drawn per sample.
        color_bias: black-level offsets per packed plane (R, G1, B, G2) in DN, one row per
            measured setting; one row is drawn per sample.
        fits: noise-scale fits; most cameras have one, ELD gives the Nikon D850 two (its
            calibration does not say which gain range each covers, so the first is used unless
            asked otherwise).
    """

    name: str
    k_min: float
    k_max: float
    white_level: float
    tukey_shapes: tuple[float, ...]
    color_bias: tuple[tuple[float, float, float, float], ...]
    fits: tuple[NoiseFit, ...]

    def __post_init__(self) -> None:
        """Every number finite and in a physical range; a ``ValueError`` names the first key
        that is not (``Cam.color_bias[2][1]: expected a finite number, got nan``)."""
        name = self.name
        _check_number(self.k_min, f"{name}.k_min", low=0.0, low_open=True)
        _check_number(
            self.k_max, f"{name}.k_max", low=self.k_min, high=K_MAX_LIMIT, low_name="k_min"
        )
        low, high = WHITE_LEVEL_RANGE
        _check_number(self.white_level, f"{name}.white_level", low=low, high=high)
        if not self.tukey_shapes or not self.fits:
            raise ValueError(f"{name}: tukey_shapes and fits must not be empty")
        if not self.color_bias or any(len(row) != 4 for row in self.color_bias):
            raise ValueError(f"{name}: color_bias must be rows of 4 values (R, G1, B, G2)")
        for i, lam in enumerate(self.tukey_shapes):
            where = f"{name}.tukey_shapes[{i}]"
            _check_number(lam, where)
            low, high = TUKEY_SHAPE_RANGE
            if not low < lam <= high:
                raise ValueError(
                    f"{where}: expected a Tukey-lambda shape in ({low}, {high:g}], got {lam:g}"
                )
        for i, row in enumerate(self.color_bias):
            for j, bias in enumerate(row):
                where = f"{name}.color_bias[{i}][{j}]"
                _check_number(bias, where)
                if not abs(bias) < self.white_level:
                    raise ValueError(
                        f"{where}: expected a black-level offset whose size is below the white "
                        f"level ({self.white_level:g}), got {bias:g}"
                    )
        for i, fit in enumerate(self.fits):
            for key in ("tukey_scale", "gauss_scale", "row_scale"):
                _check_fit(getattr(fit, key), f"{name}.fits[{i}].{key}", self)


def _check_number(
    value: float,
    where: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    low_name: str | None = None,
) -> None:
    """A ``ValueError`` naming ``where`` unless ``value`` is finite and within the bounds."""
    if not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value:g}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        parts = []
        if low is not None:
            bound = low_name if low_name is not None else f"{low:g}"
            parts.append(f"{'>' if low_open else '>='} {bound}")
        if high is not None:
            parts.append(f"<= {high:g}")
        raise ValueError(f"{where}: expected a number {' and '.join(parts)}, got {value:g}")


def _check_fit(fit: LogLinearFit, where: str, profile: NoiseProfile) -> None:
    for key, limit in FIT_LIMITS.items():
        low = 0.0 if key == "sigma" else -limit
        _check_number(getattr(fit, key), f"{where}.{key}", low=low, high=limit)
    # The median scale over the profile's range of K: a noise scale above the white level is no
    # camera's, and exp() of it would overflow.
    for k in (profile.k_min, profile.k_max):
        log_scale = fit.slope * math.log(k) + fit.bias
        if log_scale > math.log(profile.white_level):
            raise ValueError(
                f"{where}: its median scale at K={k:g} is exp({log_scale:.4g}) DN, above the "
                f"white level ({profile.white_level:g})"
            )


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    missing = allowed - set(obj)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if missing:
        raise ValueError(f"{where}: missing keys {sorted(missing)}")


def _float(value: Any, where: str) -> float:
    """``float(value)``, with a ``ValueError`` naming ``where`` for what does not convert."""
    try:
        return float(value)
    except TypeError as err:
        raise ValueError(f"{where}: a value has the wrong type ({err})") from None
    except OverflowError:
        raise ValueError(f"{where}: expected a number, got an integer too large") from None
    except ValueError as err:
        raise ValueError(f"{where}: {_shortened(str(err))}") from None


def _list(value: Any, where: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of {what}, got {type(value).__name__}")
    return value


def _shortened(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fit(obj: Any, where: str) -> LogLinearFit:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object with slope, bias, sigma")
    _check_keys(obj, {"slope", "bias", "sigma"}, where)
    return LogLinearFit(*(_float(obj[key], f"{where}.{key}") for key in ("slope", "bias", "sigma")))


def profile_from_dict(name: str, obj: Any) -> NoiseProfile:
    """Build a profile from darkraw's JSON layout.

    Raises:
        ValueError: one line naming the profile and the key, for unknown or missing keys, wrong
            types, and numbers that are not finite or outside a physical range.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected a profile object, got {type(obj).__name__}")
    keys = {f.name for f in fields(NoiseProfile)} - {"name"}
    _check_keys(obj, keys, name)
    fit_keys = ("tukey_scale", "gauss_scale", "row_scale")
    fits = []
    for i, entry in enumerate(_list(obj["fits"], f"{name}.fits", "fit objects")):
        where = f"{name}.fits[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with {', '.join(fit_keys)}")
        _check_keys(entry, set(fit_keys), where)
        fits.append(NoiseFit(**{key: _fit(entry[key], f"{where}.{key}") for key in fit_keys}))
    shapes = _list(obj["tukey_shapes"], f"{name}.tukey_shapes", "numbers")
    rows = _list(obj["color_bias"], f"{name}.color_bias", "rows of 4 numbers")
    return NoiseProfile(
        name=name,
        k_min=_float(obj["k_min"], f"{name}.k_min"),
        k_max=_float(obj["k_max"], f"{name}.k_max"),
        white_level=_float(obj["white_level"], f"{name}.white_level"),
        tukey_shapes=tuple(_float(v, f"{name}.tukey_shapes[{i}]") for i, v in enumerate(shapes)),
        color_bias=tuple(_bias_row(row, f"{name}.color_bias[{i}]") for i, row in enumerate(rows)),
        fits=tuple(fits),
    )


def _bias_row(row: Any, where: str) -> tuple[float, float, float, float]:
    values = tuple(_float(v, f"{where}[{j}]") for j, v in enumerate(_list(row, where, "4 numbers")))
    # Kept whole, so that the profile's own check sees a wrong length.
    return cast(tuple[float, float, float, float], values)


def _bundled() -> dict[str, Any]:
    text = (resources.files("darkraw") / "data" / "noise_profiles.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def available_profiles() -> list[str]:
    """Names of the bundled camera profiles."""
    return sorted(_bundled())


def load_profile(name_or_path: str | Path = DEFAULT_CAMERA) -> NoiseProfile:
    """A bundled camera profile by name, or a user's profile from a JSON file.

    A user's file holds one profile object (the keys of :class:`NoiseProfile` but ``name``), or
    an object mapping one camera name to it.

    Raises:
        ValueError: one line: the file is missing, not a regular file (a FIFO or a device would
            block or never end), over 4 MiB, not JSON, nested too deeply, or not a valid profile.
    """
    path = Path(name_or_path)
    if path.suffix.lower() == ".json":
        obj = _read_profile_json(path)
        if isinstance(obj, dict) and len(obj) == 1 and "fits" not in obj:
            ((name, body),) = obj.items()
            return profile_from_dict(_printable(str(name)), body)
        return profile_from_dict(_printable(path.stem), obj)
    bundled = _bundled()
    if str(name_or_path) not in bundled:
        raise ValueError(
            f"unknown camera {str(name_or_path)!r}; bundled: {', '.join(sorted(bundled))}, "
            "or give a .json profile file"
        )
    return profile_from_dict(str(name_or_path), bundled[str(name_or_path)])


def _read_profile_json(path: Path) -> Any:
    def refuse(problem: str) -> ValueError:
        return ValueError(f"{path}: cannot read noise profile ({problem})")

    if path.exists() and not path.is_file():
        raise refuse("not a regular file")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PROFILE_BYTES + 1)
    except OSError as err:
        raise refuse(str(err)) from None
    if len(data) > MAX_PROFILE_BYTES:
        raise refuse(f"larger than {MAX_PROFILE_BYTES >> 20} MiB")
    try:
        return json.loads(data.decode())
    except RecursionError:
        raise refuse("nested too deeply") from None
    except ValueError as err:
        # Not JSON, not UTF-8, or an integer of more than 4300 digits.
        raise refuse(_shortened(str(err))) from None


def _printable(name: str) -> str:
    """A camera name as it can stand in a one-line message."""
    return name if name.isprintable() else repr(name)


@dataclass(frozen=True)
class CalibratedNoiseParams:
    """One draw of a camera's noise parameters, in the profile's DN."""

    k: float
    read_model: ReadNoise
    tukey_lambda: float
    read_scale: float
    row_scale: float
    color_bias: tuple[float, float, float, float]


def sample_calibrated_params(
    profile: NoiseProfile,
    rng: np.random.Generator,
    *,
    k: float | None = None,
    read_model: ReadNoise | str = ReadNoise.TUKEY,
    fit_index: int = 0,
) -> CalibratedNoiseParams:
    """Draw noise parameters as ELD does: log K uniform, scales log-normal around their fits.

    Args:
        k: fix the system gain instead of drawing it.
        read_model: Tukey-lambda (ELD) or Gaussian read noise.
        fit_index: which of the profile's fits to use.
    """
    read_model = ReadNoise.parse(read_model)
    if not 0 <= fit_index < len(profile.fits):
        raise ValueError(f"{profile.name} has {len(profile.fits)} fits, got index {fit_index}")
    fit = profile.fits[fit_index]
    if k is None:
        k = math.exp(rng.uniform(math.log(profile.k_min), math.log(profile.k_max)))
    elif not k > 0:
        raise ValueError(f"system gain K must be positive, got {k}")
    scale_fit = fit.tukey_scale if read_model is ReadNoise.TUKEY else fit.gauss_scale
    bias = profile.color_bias[int(rng.integers(len(profile.color_bias)))]
    return CalibratedNoiseParams(
        k=float(k),
        read_model=read_model,
        tukey_lambda=float(profile.tukey_shapes[int(rng.integers(len(profile.tukey_shapes)))]),
        read_scale=scale_fit.sample(k, rng),
        row_scale=fit.row_scale.sample(k, rng),
        color_bias=bias,
    )


def tukey_lambda_quantile(u: np.ndarray, lam: float) -> np.ndarray:
    """Quantile function of the standard Tukey-lambda distribution."""
    if abs(lam) < 1e-6:
        return np.asarray(np.log(u / (1.0 - u)))
    return np.asarray((np.power(u, lam) - np.power(1.0 - u, lam)) / lam)


def tukey_lambda_variance(lam: float) -> float:
    """Variance of the standard Tukey-lambda distribution (finite for lam > -1/2)."""
    if abs(lam) < 1e-6:
        return math.pi**2 / 3
    g = math.lgamma(lam + 1) * 2 - math.lgamma(2 * lam + 2)
    return 2 / lam**2 * (1 / (1 + 2 * lam) - math.exp(g))


def calibrated_noise(
    signal_dn: np.ndarray,
    params: CalibratedNoiseParams,
    rng: np.random.Generator,
    *,
    quantization: bool = True,
) -> np.ndarray:
    """A noisy raw reading of a clean signal, in DN above black.

    Args:
        signal_dn: ``(4, h, w)`` packed Bayer planes (R, G1, B, G2), expected DN above black.
        quantization: add uniform noise of one DN step; leave it out when the caller rounds
            the result to whole DN itself.

    Returns:
        ``(4, h, w)`` float32 DN above black: shot + read + row + quantisation noise and the
        colour bias. Not clipped: negative values are what a sensor reads below black.
    """
    if signal_dn.ndim != 3 or signal_dn.shape[0] != 4:
        raise ValueError(f"expected packed Bayer planes (4, h, w), got {signal_dn.shape}")
    h = signal_dn.shape[1]
    k = params.k
    shot = k * rng.poisson(np.clip(signal_dn, 0.0, None).astype(np.float64) / k)
    if params.read_model is ReadNoise.TUKEY:
        u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=signal_dn.shape)
        read = params.read_scale * tukey_lambda_quantile(u, params.tukey_lambda)
    else:
        read = rng.normal(0.0, params.read_scale, size=signal_dn.shape)
    # One offset per sensor row: a packed row holds two sensor rows (R/G1 and G2/B).
    rows = rng.normal(0.0, params.row_scale, size=(2, h))
    row = rows[np.asarray(BAYER_PLANE_ROWS)][:, :, None]
    quant = rng.uniform(-0.5, 0.5, size=signal_dn.shape) if quantization else 0.0
    bias = np.asarray(params.color_bias)[:, None, None]
    return np.asarray(shot + read + row + quant + bias, dtype=np.float32)


def calibrated_mosaic_noise(
    signal_dn: np.ndarray,
    colours: np.ndarray,
    params: CalibratedNoiseParams,
    rng: np.random.Generator,
    *,
    quantization: bool = True,
    color_bias: bool = True,
) -> np.ndarray:
    """:func:`calibrated_noise` on a mosaic of any layout (X-Trans included), sample by sample.

    Args:
        signal_dn: ``(H, W)`` expected DN above black at each photosite.
        colours: ``(H, W)`` colour index (0 R, 1 G, 2 B) of each photosite.
        quantization: add uniform noise of one DN step (leave it out to round the result).
        color_bias: add the colour bias: red's and blue's, and the two Bayer greens' mean for
            every green.

    Returns:
        ``(H, W)`` float32 DN above black; one row offset per sensor row, as on a Bayer sensor.
    """
    if signal_dn.ndim != 2 or colours.shape != signal_dn.shape:
        raise ValueError(
            f"expected a mosaic (H, W) and its colours alike, got {signal_dn.shape}, "
            f"{colours.shape}"
        )
    k = params.k
    noisy = k * rng.poisson(np.clip(signal_dn, 0.0, None).astype(np.float64) / k)
    if params.read_model is ReadNoise.TUKEY:
        u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=signal_dn.shape)
        noisy += params.read_scale * tukey_lambda_quantile(u, params.tukey_lambda)
    else:
        noisy += rng.normal(0.0, params.read_scale, size=signal_dn.shape)
    noisy += rng.normal(0.0, params.row_scale, size=(signal_dn.shape[0], 1))
    if quantization:
        noisy += rng.uniform(-0.5, 0.5, size=signal_dn.shape)
    if color_bias:
        r, g1, b, g2 = params.color_bias
        noisy += np.asarray([r, (g1 + g2) / 2, b])[colours]
    return np.asarray(noisy, dtype=np.float32)
