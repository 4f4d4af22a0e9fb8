"""The See-in-the-Dark dataset (Chen et al., CVPR 2018): list files, ratios, subsets, ground truth.

SID ships list files whose lines read
``./Sony/short/10003_00_0.04s.ARW ./Sony/long/10003_00_10s.ARW ISO200 F9``: a short (dark)
exposure, the long exposure of the same scene, ISO and aperture. The scene id's first digit is
the split (0 train, 1 test, 2 validation), the second field the burst, the third the exposure
time. SID amplifies the short frame by ``min(t_long / t_short, 300)`` and renders the ground
truth from the long frame with LibRaw. The authors ask to leave out the misaligned scenes 10034,
10045 and 10172. SID's own test script used only burst ``_00`` of each scene (93 Sony pairs);
later papers use all bursts (562 pairs without the misaligned scenes). ``darkraw simulate
--layout sid`` writes simulated data under the same names, so everything here reads it too.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkraw.choices import parse_choice
from darkraw.errors import DarkrawError
from darkraw.raw.fileio import atomic_output

#: Scenes the SID authors ask to exclude (misaligned long and short exposures).
MISALIGNED_SCENES = frozenset({10034, 10045, 10172})

#: SID caps the amplification ratio at this value.
MAX_RATIO = 300.0

_NAME = re.compile(r"^(?P<scene>\d{5})_(?P<burst>\d{2})_(?P<time>\d+(?:\.\d+)?)s\.[A-Za-z0-9]+$")
_SPLITS = {"0": "train", "1": "test", "2": "val"}


class Protocol(enum.Enum):
    """Which short exposures of a scene are used."""

    #: Every burst (later papers: 562 Sony test pairs without the misaligned scenes).
    ALL = "all"
    #: Burst ``_00`` only, as SID's own test script (93 Sony test pairs).
    FIRST_BURST = "first-burst"

    @classmethod
    def parse(cls, value: Protocol | str) -> Protocol:
        return parse_choice(cls, value, "SID protocol")


@dataclass(frozen=True)
class ExposureName:
    """What a SID file name says: ``10003_00_0.04s.ARW``."""

    scene: int
    burst: int
    exposure_s: float


def parse_name(name: str) -> ExposureName:
    """Scene id, burst and exposure time from a SID file name.

    Raises:
        ValueError: the name does not follow SID's pattern.
    """
    match = _NAME.match(Path(name).name)
    if match is None:
        raise ValueError(f"not a SID file name (scene_burst_time s.ext): {name!r}")
    exposure = float(match["time"])
    if not exposure > 0:
        raise ValueError(f"exposure time must be positive in {name!r}")
    return ExposureName(int(match["scene"]), int(match["burst"]), exposure)


def sid_ratio(short_s: float, long_s: float) -> float:
    """SID's amplification ratio: ``min(t_long / t_short, 300)``."""
    return min(long_s / short_s, MAX_RATIO)


@dataclass(frozen=True)
class SIDPair:
    """One line of a SID list: a dark short exposure and its long-exposure reference."""

    short: Path
    long: Path
    scene: int
    burst: int
    short_s: float
    long_s: float
    iso: int | None = None
    f_number: float | None = None

    @property
    def ratio(self) -> float:
        """Amplification ratio, capped at 300 as SID does."""
        return sid_ratio(self.short_s, self.long_s)

    @property
    def ratio_class(self) -> int:
        """The nominal ratio (100, 250, 300): the ratio rounded, as SID's tables group them."""
        return round(self.ratio)

    @property
    def split(self) -> str:
        """``train``, ``test`` or ``val``, from the scene id's first digit."""
        return _SPLITS.get(f"{self.scene:05d}"[0], "unknown")

    @property
    def misaligned(self) -> bool:
        return self.scene in MISALIGNED_SCENES


def read_list(path: str | Path, root: str | Path | None = None) -> list[SIDPair]:
    """Parse a SID list file.

    Args:
        path: e.g. ``Sony_test_list.txt``.
        root: folder the ``./Sony/...`` paths are relative to; by default the list's own folder,
            or its parent when the paths exist only from there.

    Raises:
        DarkrawError: the file cannot be read or a line is malformed (naming the line).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DarkrawError(path, f"cannot read the list ({err})") from None
    base = Path(root) if root is not None else _guess_root(path, lines)
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) < 2:
                raise ValueError("expected 'short long [ISO] [F]'")
            short, long = parse_name(fields[0]), parse_name(fields[1])
            if short.scene != long.scene:
                raise ValueError(f"scene ids differ ({short.scene} and {long.scene})")
            iso = _field(fields[2:], "ISO", int)
            f_number = _field(fields[2:], "F", float)
        except ValueError as err:
            raise DarkrawError(path, f"line {number}: {err}") from None
        pairs.append(
            SIDPair(
                short=base / fields[0],
                long=base / fields[1],
                scene=short.scene,
                burst=short.burst,
                short_s=short.exposure_s,
                long_s=long.exposure_s,
                iso=None if iso is None else int(iso),
                f_number=f_number,
            )
        )
    return pairs


def _field(fields: Sequence[str], prefix: str, kind: type) -> float | None:
    for text in fields:
        if text.startswith(prefix) and text[len(prefix) :]:
            try:
                return float(kind(text[len(prefix) :]))
            except ValueError:
                raise ValueError(f"bad {prefix} field {text!r}") from None
    return None


def _guess_root(path: Path, lines: Sequence[str]) -> Path:
    first = next((line.split()[0] for line in lines if line.strip()), None)
    if first is None:
        return path.parent
    for candidate in (path.parent, path.parent.parent):
        if (candidate / first).exists():
            return candidate
    return path.parent


def select(
    pairs: Iterable[SIDPair],
    *,
    protocol: Protocol | str = Protocol.ALL,
    exclude_misaligned: bool = True,
    ratios: Sequence[float] | None = None,
) -> list[SIDPair]:
    """Pairs kept under a test protocol, without misaligned scenes by default."""
    protocol = Protocol.parse(protocol)
    kept = []
    for pair in pairs:
        if exclude_misaligned and pair.misaligned:
            continue
        if protocol is Protocol.FIRST_BURST and pair.burst != 0:
            continue
        if ratios is not None and not any(abs(pair.ratio - r) < 0.5 for r in ratios):
            continue
        kept.append(pair)
    return kept


def subset(
    pairs: Sequence[SIDPair],
    *,
    fraction: float | None = None,
    per_ratio: int | None = None,
    seed: int = 0,
) -> list[SIDPair]:
    """A deterministic subset: a ``fraction`` of the pairs, or ``per_ratio`` pairs per ratio.

    The choice depends only on the pairs' names and ``seed``, not on their order, and a smaller
    fraction is always contained in a larger one (same seed), so results at 1 %, 10 % and 100 %
    are nested. Per-ratio subsets prefer distinct scenes (LED fine-tunes on 2 pairs per ratio).
    """
    if (fraction is None) == (per_ratio is None):
        raise ValueError("give exactly one of fraction and per_ratio")
    ranked = sorted(pairs, key=lambda p: _rank(p, seed))
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        count = max(1, math.ceil(fraction * len(ranked))) if ranked else 0
        chosen = ranked[:count]
    else:
        if per_ratio is None or per_ratio < 1:
            raise ValueError(f"per_ratio must be >= 1, got {per_ratio}")
        chosen = []
        for ratio in sorted({p.ratio_class for p in ranked}):
            group = [p for p in ranked if p.ratio_class == ratio]
            scenes: set[int] = set()
            picks: list[SIDPair] = []
            for pair in group:  # first pass: one pair per scene
                if len(picks) < per_ratio and pair.scene not in scenes:
                    picks.append(pair)
                    scenes.add(pair.scene)
            for pair in group:  # then fill up if there are fewer scenes than asked
                if len(picks) < per_ratio and pair not in picks:
                    picks.append(pair)
            chosen.extend(picks)
    return sorted(chosen, key=lambda p: (p.scene, p.burst, p.ratio))


def _rank(pair: SIDPair, seed: int) -> bytes:
    key = f"{seed}/{pair.short.name}".encode()
    return hashlib.sha256(key).digest()


def ground_truth(long_path: str | Path, cache_dir: str | Path | None = None) -> np.ndarray:
    """The long exposure rendered as SID does (LibRaw, camera white balance, no auto-brightness,
    16 bits), as ``(3, H, W)`` float32 in [0, 1].

    With ``cache_dir``, the 16-bit rendering is stored there once (``.npy``, written atomically)
    and later calls read it back, memory-mapped, so a training crop reads only its own rows.
    """
    from darkraw.raw.rawio import render_with_libraw

    long_path = Path(long_path)
    if not long_path.is_file():
        raise DarkrawError(long_path, "no such long-exposure file")
    if cache_dir is None:
        return render_with_libraw(long_path)
    cached = _cache_path(long_path, Path(cache_dir))
    if not cached.exists():
        rendered = render_with_libraw(long_path)
        cached.parent.mkdir(parents=True, exist_ok=True)
        dn = np.clip(np.rint(rendered * 65535), 0, 65535).astype(np.uint16)
        with atomic_output(cached) as tmp, open(tmp, "wb") as out:
            np.save(out, dn)
    return load_ground_truth(cached)


def load_ground_truth(cached: Path) -> np.ndarray:
    """A cached ground truth as float32 ``(3, H, W)`` in [0, 1]."""
    try:
        dn = np.load(cached, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DarkrawError(cached, f"corrupt ground-truth cache ({err}); delete it") from None
    return np.asarray(dn, dtype=np.float32) / np.float32(65535)


def cached_ground_truth(long_path: Path, cache_dir: Path) -> np.ndarray:
    """The cached 16-bit rendering, memory-mapped ``(3, H, W)`` uint16 (made if missing)."""
    cached = _cache_path(long_path, cache_dir)
    if not cached.exists():
        ground_truth(long_path, cache_dir)
    return np.asarray(np.load(cached, mmap_mode="r"))


def _cache_path(long_path: Path, cache_dir: Path) -> Path:
    stat = long_path.stat()
    key = hashlib.sha256(f"{long_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return cache_dir / f"{long_path.stem}-{key.hexdigest()[:12]}.npy"
