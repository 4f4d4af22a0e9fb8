"""Writing simulated training pairs to disk: dark raw frames as DNG with their clean references.

Each clean source (a photo, unprocessed into raw, or a raw file; :mod:`darkraw.synth.sources`)
gives one clean raw frame and, for every exposure ratio and burst, one dark frame made by
:func:`darkraw.synth.simulate.simulate_dark`. Two layouts:

- ``flat``: ``<stem>_clean.dng``, ``<stem>_reference.png`` and ``<stem>_x<ratio>.dng`` side by
  side, for people and raw tools.
- ``sid``: the layout of See-in-the-Dark (Chen et al., CVPR 2018): ``short/`` and ``long/`` raw
  frames named ``<scene>_<burst>_<seconds>s`` and list files ``Sony_{train,val,test}_list.txt``,
  so that code that reads SID reads simulated data too.

Both write ``pairs.tsv`` (every dark frame, its clean frame and the noise parameters drawn) and
``simulate.json`` (the settings, checked when a later run adds to the folder).

:func:`seed_figure` draws the seed's Figure 3 (Gupta, Botica & Brown, "CS 7180 Milestone 1"):
a clean frame and each stage of the seed's reverse pipeline, rendered for viewing.

Randomness is keyed, not sequential: the generator of a frame is seeded by the run's seed, the
SHA-256 of the source file's bytes, the ratio and the burst. The same seed therefore gives the same
files whatever the order or subset of the inputs, and adding inputs, ratios or bursts changes
nothing already written.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import io
import json
import math
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from darkraw._version import __version__
from darkraw.choices import parse_choice
from darkraw.classic.filters import resize_area
from darkraw.classic.pipeline import (
    GammaCurve,
    color_correct,
    demosaic,
    gamma_encode,
    orient,
    pack,
    unpack,
    white_balance,
)
from darkraw.errors import DarkrawError, OutputError
from darkraw.raw.dng import write_dng
from darkraw.raw.figures import side_by_side
from darkraw.raw.fileio import BatchReport, atomic_output, check_distinct_outputs, write_image
from darkraw.raw.metadata import RawMetadata
from darkraw.synth.noise import CalibratedNoiseParams, NoiseProfile
from darkraw.synth.simulate import (
    NoiseModel,
    SeedNoiseConfig,
    SeedNoiseParams,
    SimulationConfig,
    clean_frame_dn,
    sample_seed_params,
    seed_reverse_pipeline,
    simulate_dark,
)
from darkraw.synth.sources import (
    CleanRaw,
    SourceConfig,
    SourceKind,
    collect_sources,
    load_clean,
    source_kind,
)

#: Exposure time of every clean frame, seconds: SID's long exposures are 10 s (and some 30 s).
LONG_EXPOSURE_S = 10.0
#: SID's amplification ratio is ``min(t_long / t_short, SID_MAX_RATIO)``.
SID_MAX_RATIO = 300.0
#: How close SID's ratio rule, applied to the file names, must come to the ratio simulated.
SID_RATIO_TOLERANCE = 0.01
#: LibRaw refuses raw frames narrower or lower than this (pixels).
MIN_SIDE = 22
#: The three lists of a SID dataset, by split.
SID_LIST_NAMES = {
    "train": "Sony_train_list.txt",
    "val": "Sony_val_list.txt",
    "test": "Sony_test_list.txt",
}
PAIRS_TABLE = "pairs.tsv"
SETTINGS_FILE = "simulate.json"
SOURCES_TABLE = "sources.tsv"
#: Titles of the panels of the seed's Figure 3, in the order of its reverse pipeline.
FIGURE_TITLES = ("original", "gamma distortion", "white imbalance", "Poisson noise", "black level")

# Streams of the keyed generators: one for the clean source (a photo's virtual camera), one for
# dark frames; separate so that a new ratio never shifts the draws of the clean frame.
_CLEAN_STREAM = 0
_DARK_STREAM = 1


class Layout(enum.Enum):
    """How simulated pairs are laid out on disk."""

    #: ``<stem>_clean.dng``, ``<stem>_reference.png``, ``<stem>_x100.dng``, ... in one folder.
    FLAT = "flat"
    #: See-in-the-Dark's ``short/``, ``long/`` and list files.
    SID = "sid"

    @classmethod
    def parse(cls, value: Layout | str) -> Layout:
        return parse_choice(cls, value, "layout")


class Split(enum.Enum):
    """Which part of a dataset a scene belongs to (SID: first digit of the scene id)."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"
    #: 8 of every 10 inputs train, then one validation, one test (by input position).
    AUTO = "auto"

    @classmethod
    def parse(cls, value: Split | str) -> Split:
        return parse_choice(cls, value, "split")


#: SID's scene-id digit of each split.
SID_SPLIT_DIGIT = {Split.TRAIN: 0, Split.TEST: 1, Split.VAL: 2}
_AUTO_CYCLE = (Split.TRAIN,) * 8 + (Split.VAL, Split.TEST)


@dataclass(frozen=True)
class SimulateOptions:
    """What ``darkraw simulate`` writes.

    Attributes:
        ratios: exposure ratios of the dark frames to the clean one, each >= 1.
        simulation: noise model and its settings.
        sources: how photos and raw files become clean raw.
        seed: seed of every random draw (>= 0).
        layout: ``flat`` or ``sid``.
        bursts: independent dark frames per ratio (SID's ``_00``, ``_01``, ...), 1 to 99.
        split: the split of every input, or ``auto`` (80/10/10 by input position).
        iso: ISO speed recorded in every DNG and SID list line (nominal: the noise comes from
            the model's own parameters).
        f_number: aperture written in SID list lines (nominal; DNGs do not record it).
        overwrite: replace existing outputs; otherwise they are kept and skipped.
    """

    ratios: tuple[float, ...] = (100.0, 250.0, 300.0)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    sources: SourceConfig = field(default_factory=SourceConfig)
    seed: int = 0
    layout: Layout = Layout.FLAT
    bursts: int = 1
    split: Split = Split.AUTO
    iso: int = 200
    f_number: float = 8.0
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", Layout.parse(self.layout))
        object.__setattr__(self, "split", Split.parse(self.split))
        ratios = tuple(float(r) for r in self.ratios)
        object.__setattr__(self, "ratios", ratios)
        if not ratios:
            raise ValueError("expected at least one exposure ratio")
        for ratio in ratios:
            if not math.isfinite(ratio) or ratio < 1:
                raise ValueError(f"exposure ratios must be numbers >= 1, got {ratio:g}")
        tags = [ratio_tag(r) for r in ratios]
        if len(set(tags)) != len(tags):
            raise ValueError(f"exposure ratios must differ, got {', '.join(tags)}")
        if self.layout is Layout.SID:
            names = [sid_short_exposure(r) for r in ratios]
            if len(set(names)) != len(names):
                raise ValueError(
                    f"ratios {', '.join(tags)} give the same SID exposure names "
                    f"({', '.join(n + 's' for n in names)}); choose ratios further apart"
                )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not 1 <= self.bursts <= 99:
            raise ValueError(f"bursts must be 1 to 99, got {self.bursts}")
        if not 0 < self.iso <= 65535:
            raise ValueError(f"iso must be 1 to 65535, got {self.iso}")
        if not self.f_number > 0 or not math.isfinite(self.f_number):
            raise ValueError(f"f_number must be a positive number, got {self.f_number}")


def ratio_tag(ratio: float) -> str:
    """``x100``, ``x2.5``: how a ratio appears in flat-layout file names."""
    return f"x{int(ratio)}" if float(ratio).is_integer() else f"x{ratio:g}"


def sid_ratio(long_s: float, short_s: float) -> float:
    """SID's amplification ratio from two exposure times: ``min(long / short, 300)``."""
    return min(long_s / short_s, SID_MAX_RATIO)


def sid_short_exposure(ratio: float, long_s: float = LONG_EXPOSURE_S) -> str:
    """The exposure time of a dark frame as SID writes it in file names, without the ``s``.

    SID writes 3 decimals with trailing zeros dropped (``0.1``, ``0.04``, ``0.033`` for x100,
    x250, x300 of 10 s); more decimals are used where 3 would put SID's ratio rule more than 1 %
    off the ratio simulated.

    Raises:
        ValueError: no name recovers the ratio: SID's rule caps ratios at 300.
    """
    seconds = long_s / ratio
    for decimals in range(3, 8):
        text = _trim_decimals(f"{seconds:.{decimals}f}")
        if float(text) > 0 and abs(sid_ratio(long_s, float(text)) / ratio - 1) <= (
            SID_RATIO_TOLERANCE
        ):
            return text
    raise ValueError(
        f"ratio {ratio:g} cannot be stored in SID's layout: its ratio rule "
        f"min(t_long / t_short, {SID_MAX_RATIO:g}) caps ratios at {SID_MAX_RATIO:g} "
        "(use the flat layout)"
    )


def _trim_decimals(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def sid_scene(index: int, split: Split | str) -> tuple[str, Split]:
    """SID's 5-digit scene id of the ``index``-th input (0-based) and its split.

    The first digit encodes the split (0 train, 1 test, 2 validation), the other four are
    ``index + 1``; ``auto`` takes 8 of every 10 inputs for training, then one of each other.
    """
    split = Split.parse(split)
    if not 0 <= index < 9999:
        raise ValueError(f"SID scene ids hold 4 digits: at most 9999 inputs, got index {index}")
    if split is Split.AUTO:
        split = _AUTO_CYCLE[index % len(_AUTO_CYCLE)]
    return f"{SID_SPLIT_DIGIT[split]}{index + 1:04d}", split


def source_key(path: str | Path) -> int:
    """The first 128 bits of the SHA-256 of a file's bytes: the key of its random draws."""
    return int(source_digest(path)[:32], 16)


def source_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def clean_rng(seed: int, key: int) -> np.random.Generator:
    """The generator of a source's clean frame (a photo's virtual camera)."""
    return np.random.default_rng([seed, key, _CLEAN_STREAM])


def dark_rng(seed: int, key: int, ratio: float, burst: int) -> np.random.Generator:
    """The generator of one dark frame: its own stream per source, ratio and burst."""
    (ratio_bits,) = struct.unpack("<Q", struct.pack("<d", float(ratio)))
    return np.random.default_rng([seed, key, _DARK_STREAM, ratio_bits, burst])


@dataclass(frozen=True)
class PairRecord:
    """One row of ``pairs.tsv``: a dark frame, its clean frame and how it was made.

    Paths are relative to the output folder, with ``/``. Levels are the dark frame's, in DN;
    ``params`` is the JSON of the noise parameters drawn (model-specific keys).
    """

    dark: str
    clean: str
    reference: str
    source: str
    source_sha256: str
    scene: str
    split: str
    ratio: float
    burst: int
    dark_exposure_s: float
    clean_exposure_s: float
    iso: int
    black_level_dn: float
    white_level_dn: float
    model: str
    params: str

    @property
    def noise_params(self) -> dict[str, Any]:
        """``params`` decoded."""
        value: dict[str, Any] = json.loads(self.params)
        return value


_RECORD_FIELDS = [f.name for f in dataclasses.fields(PairRecord)]
_RECORD_TYPES: dict[str, Callable[[str], Any]] = {
    "ratio": float,
    "burst": int,
    "dark_exposure_s": float,
    "clean_exposure_s": float,
    "iso": int,
    "black_level_dn": float,
    "white_level_dn": float,
}


def read_pairs(path: str | Path) -> list[PairRecord]:
    """Read a ``pairs.tsv`` written by :func:`simulate_batch`.

    Raises:
        DarkrawError: the file cannot be read or is not such a table.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DarkrawError(path, f"cannot read ({err.strerror or err})") from None
    reader = csv.DictReader(io.StringIO(text), dialect=_Tsv)
    if reader.fieldnames != _RECORD_FIELDS:
        raise DarkrawError(path, f"not a darkraw pairs table (columns {reader.fieldnames})")
    records = []
    for row in reader:
        try:
            values = {k: _RECORD_TYPES.get(k, str)(row[k]) for k in _RECORD_FIELDS}
        except (TypeError, ValueError) as err:
            raise DarkrawError(path, f"malformed row {reader.line_num} ({err})") from None
        records.append(PairRecord(**values))
    return records


class _Tsv(csv.Dialect):
    """Tab-separated, never quoted (JSON cells stay readable); tabs and backslashes escaped."""

    delimiter = "\t"
    quoting = csv.QUOTE_NONE
    quotechar = None
    escapechar = "\\"
    doublequote = False
    lineterminator = "\n"
    skipinitialspace = False


def _table_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, dialect=_Tsv)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _write_text(path: Path, text: str) -> None:
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(path, f"cannot write ({err.strerror or err})") from None


@dataclass(frozen=True)
class _Plan:
    """Where one input's files go (paths relative to the output folder)."""

    source: Path
    scene: str
    split: Split
    clean: Path
    reference: Path
    darks: tuple[tuple[float, int, Path], ...]

    @property
    def outputs(self) -> list[Path]:
        return [self.clean, self.reference, *(path for _, _, path in self.darks)]


def _plan(index: int, source: Path, options: SimulateOptions) -> _Plan:
    if options.layout is Layout.SID:
        scene, split = sid_scene(index, options.split)
        long_name = f"{scene}_00_{_trim_decimals(f'{LONG_EXPOSURE_S:.3f}')}s"
        darks = tuple(
            (r, b, Path("short") / f"{scene}_{b:02d}_{sid_short_exposure(r)}s.dng")
            for r in options.ratios
            for b in range(options.bursts)
        )
        return _Plan(
            source,
            scene,
            split,
            Path("long") / f"{long_name}.dng",
            Path("reference") / f"{long_name}.png",
            darks,
        )
    split = options.split
    if split is Split.AUTO:
        split = _AUTO_CYCLE[index % len(_AUTO_CYCLE)]
    stem = source.stem
    darks = tuple(
        (r, b, Path(f"{stem}_{ratio_tag(r)}{f'_b{b:02d}' if b else ''}.dng"))
        for r in options.ratios
        for b in range(options.bursts)
    )
    return _Plan(
        source, stem, split, Path(f"{stem}_clean.dng"), Path(f"{stem}_reference.png"), darks
    )


@dataclass
class SimulateReport(BatchReport):
    """What a batch did: output files written or kept, inputs that failed and why."""

    inputs: int = 0

    def summary(self) -> str:
        """``3 inputs, 1 failed: 6 files written, 0 skipped``."""
        inputs = f"{self.inputs} input{'' if self.inputs == 1 else 's'}"
        files = f"{len(self.written)} file{'' if len(self.written) == 1 else 's'}"
        return f"{inputs}, {len(self.failed)} failed: {files} written, {len(self.skipped)} skipped"


def _settings(options: SimulateOptions) -> dict[str, Any]:
    """Everything that decides the content of a file, as JSON-ready values.

    Ratios, bursts and ``overwrite`` are left out: more of them only add files.
    """

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, enum.Enum):
            return obj.value
        if isinstance(obj, tuple | list):
            return [plain(v) for v in obj]
        return obj

    return {
        "layout": options.layout.value,
        "seed": options.seed,
        "split": options.split.value,
        "iso": options.iso,
        "f_number": options.f_number,
        "long_exposure_s": LONG_EXPOSURE_S,
        "simulation": plain(options.simulation),
        "sources": plain(options.sources),
    }


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        return out
    return [] if old == new else [f"{where} {old!r} -> {new!r}"]


def _check_settings(folder: Path, options: SimulateOptions) -> bool:
    """Write the settings file; True if the folder held data made with other settings.

    Raises:
        DarkrawError: it did, and ``options.overwrite`` is off.
    """
    path = folder / SETTINGS_FILE
    settings = json.loads(json.dumps(_settings(options)))
    changed = False
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("settings")
        except (OSError, ValueError, AttributeError) as err:
            raise DarkrawError(path, f"cannot read the settings of this folder ({err})") from None
        diffs = _differences(old, settings)
        if diffs and not options.overwrite:
            raise DarkrawError(
                folder,
                f"holds data made with other settings ({'; '.join(diffs[:3])}); "
                "use another folder, or --overwrite to replace it",
            )
        changed = bool(diffs)
    body = {"darkraw": __version__, "settings": settings}
    _write_text(path, json.dumps(body, indent=2) + "\n")
    return changed


def _clean_levels(config: SimulationConfig, profile: NoiseProfile | None) -> tuple[float, float]:
    """Black and white level (DN) of the clean frame: those of the dark frames of the model."""
    if config.model is NoiseModel.CALIBRATED and profile is not None:
        return config.black_level, min(config.black_level + profile.white_level, 65535.0)
    return config.black_level, config.white_level


def _whole_dn(meta: RawMetadata) -> RawMetadata:
    """Black levels rounded to whole DN: LibRaw reads a DNG's black level as an integer."""
    black = tuple(tuple(float(round(v)) for v in row) for row in meta.black_tile)
    return meta.replace(black_tile=black)


def _noise_json(
    params: SeedNoiseParams | CalibratedNoiseParams | None, config: SimulationConfig
) -> str:
    if params is None:
        # The simple model draws no parameters: its fixed ones are what describes the noise.
        return json.dumps({"gain": config.gain, "read_noise_dn": config.read_noise_dn})
    return json.dumps(dataclasses.asdict(params), default=_enum_value)


def _enum_value(obj: object) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def _load_clean(source: Path, key: int, options: SimulateOptions) -> CleanRaw:
    clean = load_clean(source, clean_rng(options.seed, key), options.sources)
    h, w = clean.raw_lin.shape
    if min(h, w) < MIN_SIDE:
        raise ValueError(
            f"image of {h}x{w} pixels is too small: LibRaw reads raw frames of at least "
            f"{MIN_SIDE}x{MIN_SIDE}"
        )
    return clean


def _camera_name(config: SimulationConfig, profile: NoiseProfile | None) -> str:
    if config.model is NoiseModel.CALIBRATED and profile is not None:
        return f"simulated {profile.name}"
    return f"simulated {config.model.value}"


def _simulate_source(
    plan: _Plan,
    digest: str,
    folder: Path,
    options: SimulateOptions,
    profile: NoiseProfile | None,
) -> tuple[list[PairRecord], list[Path], list[Path]]:
    """Make and write one input's frames; returns its records, files written and kept."""
    config = options.simulation
    key = int(digest[:32], 16)
    clean = _load_clean(plan.source, key, options)
    meta = clean.meta.replace(
        exposure_time=LONG_EXPOSURE_S,
        iso=float(options.iso),
        make="darkraw",
        model=_camera_name(config, profile),
    )
    black, white = _clean_levels(config, profile)
    written: list[Path] = []
    kept: list[Path] = []

    def needed(rel: Path) -> bool:
        if (folder / rel).exists() and not options.overwrite:
            kept.append(folder / rel)
            return False
        written.append(folder / rel)
        return True

    if needed(plan.clean):
        clean_dn, clean_meta = clean_frame_dn(clean.raw_lin, meta, black, white)
        write_dng(folder / plan.clean, clean_dn, _whole_dn(clean_meta))
    if needed(plan.reference):
        write_image(folder / plan.reference, clean.reference)
    records = []
    for ratio, burst, rel in plan.darks:
        rng = dark_rng(options.seed, key, ratio, burst)
        # Simulated even when the file is kept: its noise parameters go into the table.
        dark = simulate_dark(clean.raw_lin, meta, ratio, config, rng, profile=profile)
        dark_meta = _whole_dn(dark.meta)
        if needed(rel):
            write_dng(folder / rel, dark.mosaic_dn, dark_meta)
        records.append(
            PairRecord(
                dark=rel.as_posix(),
                clean=plan.clean.as_posix(),
                reference=plan.reference.as_posix(),
                source=str(plan.source),
                source_sha256=digest,
                scene=plan.scene,
                split=plan.split.value,
                ratio=ratio,
                burst=burst,
                dark_exposure_s=float(dark_meta.exposure_time or LONG_EXPOSURE_S / ratio),
                clean_exposure_s=LONG_EXPOSURE_S,
                iso=options.iso,
                black_level_dn=float(np.mean(dark_meta.black_tile)),
                white_level_dn=dark_meta.white_level,
                model=config.model.value,
                params=_noise_json(dark.params, config),
            )
        )
    return records, written, kept


def _write_tables(folder: Path, records: Sequence[PairRecord], options: SimulateOptions) -> None:
    """``pairs.tsv``, and for the SID layout its list files and ``sources.tsv``."""
    records = sorted(records, key=lambda r: (r.scene, r.ratio, r.burst))
    rows = [[getattr(r, name) for name in _RECORD_FIELDS] for r in records]
    _write_text(folder / PAIRS_TABLE, _table_text(_RECORD_FIELDS, rows))
    if options.layout is not Layout.SID:
        return
    for split, name in SID_LIST_NAMES.items():
        lines = [
            f"./{r.dark} ./{r.clean} ISO{r.iso} F{options.f_number:g}\n"
            for r in records
            if r.split == split
        ]
        _write_text(folder / name, "".join(lines))
    scenes = {r.scene: (r.split, r.source, r.source_sha256) for r in records}
    source_rows = [[scene, *scenes[scene]] for scene in sorted(scenes)]
    header = ["scene", "split", "source", "source_sha256"]
    _write_text(folder / SOURCES_TABLE, _table_text(header, source_rows))


def _expand_inputs(inputs: Iterable[str | Path], report: SimulateReport) -> list[Path]:
    """Files given and found in folders; an input that does not exist is a failure, not fatal."""
    files: list[Path] = []
    for item in inputs:
        try:
            files.extend(collect_sources([item]))
        except DarkrawError as err:
            report.failed.append((Path(item), err.problem))
            tqdm.write(f"darkraw: error: {item}: {err.problem}", file=sys.stderr)
    return files


def _check_unique_names(folder: Path, plans: Sequence[_Plan]) -> None:
    seen: dict[Path, Path] = {}
    for plan in plans:
        for out in plan.outputs:
            if out in seen and seen[out] != plan.source:
                problem = f"both {seen[out]} and {plan.source} would be written here"
                raise OutputError(folder / out, problem)
            seen[out] = plan.source


@dataclass
class _Progress:
    """A tqdm bar over inputs and the way to print beside it without tearing it."""

    bar: tqdm[Any]
    emit: Callable[[str], None]

    @classmethod
    def over(
        cls, items: list[Any], desc: str, log: Callable[[str], None], progress: bool | None
    ) -> _Progress:
        bar = tqdm(
            items, desc=desc, unit="input", disable=(not progress) if progress is not None else None
        )
        return cls(bar, log if bar.disable else bar.write)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.bar)

    def fail(self, report: SimulateReport, source: Path, problem: str) -> None:
        report.failed.append((source, problem))
        tqdm.write(f"darkraw: error: {source}: {problem}", file=sys.stderr)


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(path, f"cannot create output folder ({err.strerror or err})") from None


def simulate_batch(
    inputs: Iterable[str | Path],
    output: str | Path,
    options: SimulateOptions | None = None,
    *,
    figure: bool = False,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> SimulateReport:
    """Write simulated pairs (or, with ``figure``, the seed's Figure 3) for many inputs.

    A bad input is reported and the batch goes on. Outputs are written atomically; existing
    ones are kept unless ``options.overwrite`` (and, the draws being keyed, a kept file equals
    the one that would have been written). The tables are rewritten at the end, also when the
    batch is interrupted, and include what earlier runs in the same folder wrote.

    Args:
        inputs: photos, raw files, and folders of them (searched recursively).
        output: the output folder (created if missing).
        options: ratios, noise model, layout, seed.
        figure: write only ``<stem>_figure3.png`` per input (see :func:`seed_figure`).
        log: where per-input messages go.
        progress: show a progress bar (``None``: only on a terminal).

    Raises:
        DarkrawError: the output folder cannot be used (other settings, clashing names).
        ValueError: the camera profile of the calibrated model cannot be loaded.
    """
    options = SimulateOptions() if options is None else options
    folder = Path(output)
    report = SimulateReport()
    files = _expand_inputs(inputs, report)
    report.inputs = len(files) + len(report.failed)
    if figure:
        _figure_batch(files, folder, options, report, log, progress)
        return report
    profile = (
        options.simulation.profile() if options.simulation.model is NoiseModel.CALIBRATED else None
    )
    plans = [_plan(i, src, options) for i, src in enumerate(files)]
    _check_unique_names(folder, plans)
    _make_folder(folder)
    if options.layout is Layout.SID:
        for sub in ("short", "long", "reference"):
            _make_folder(folder / sub)
    changed = _check_settings(folder, options)
    table_path = folder / PAIRS_TABLE
    old = [] if changed or not table_path.exists() else read_pairs(table_path)
    old_by_scene: dict[str, list[PairRecord]] = {}
    for record in old:
        old_by_scene.setdefault(record.scene, []).append(record)
    new: dict[str, list[PairRecord]] = {}
    bar = _Progress.over(plans, "simulate", log, progress)
    try:
        for plan in bar:
            try:
                digest = source_digest(plan.source)
            except OSError as err:
                bar.fail(report, plan.source, f"cannot read ({err.strerror or err})")
                continue
            before = old_by_scene.get(plan.scene, [])
            if before and before[0].source_sha256 != digest and not options.overwrite:
                problem = (
                    f"{plan.scene} in {folder} was made from {before[0].source}, another file; "
                    "use another folder, or --overwrite"
                )
                bar.fail(report, plan.source, problem)
                continue
            done = {r.dark for r in before if r.source_sha256 == digest}
            if (
                not options.overwrite
                and all((folder / p).exists() for p in plan.outputs)
                and all(p.as_posix() in done for _, _, p in plan.darks)
            ):
                wanted = {p.as_posix() for _, _, p in plan.darks}
                new[plan.scene] = [r for r in before if r.dark in wanted]
                report.skipped.extend(folder / p for p in plan.outputs)
                bar.emit(f"{plan.source}: {plan.scene} exists, skipped (--overwrite replaces it)")
                continue
            try:
                records, written, kept = _simulate_source(plan, digest, folder, options, profile)
            except DarkrawError as err:
                bar.fail(report, plan.source, err.problem)
                continue
            except (ValueError, MemoryError) as err:
                bar.fail(report, plan.source, str(err) or type(err).__name__)
                continue
            new[plan.scene] = records
            report.written.extend(written)
            report.skipped.extend(kept)
            bar.emit(f"{plan.source} -> {plan.scene}: {len(written)} written, {len(kept)} kept")
    finally:
        bar.bar.close()
        # Rows of earlier runs stay, except those of scenes this run made again.
        merged = [r for scene, rs in old_by_scene.items() if scene not in new for r in rs]
        merged += [r for rs in new.values() for r in rs]
        _write_tables(folder, merged, options)
    return report


def _render(planes: np.ndarray, meta: RawMetadata, gamma: GammaCurve) -> np.ndarray:
    """The forward pipeline without denoising: packed ``raw_lin`` planes to ``(3, H, W)`` display
    values, oriented for viewing. Whatever the planes hold (bias, imbalance) is left in."""
    gains = meta.wb_gains if meta.wb_gains is not None else (1.0, 1.0, 1.0)
    rgb_cam = demosaic(unpack(white_balance(planes, gains), meta), meta)
    matrix = None if meta.rgb_cam is None else np.asarray(meta.rgb_cam)
    rgb = gamma_encode(color_correct(rgb_cam, matrix), gamma)
    return orient(rgb.astype(np.float32), meta.flip)


def _shrink(planes: np.ndarray, meta: RawMetadata, width: int) -> tuple[np.ndarray, RawMetadata]:
    """Packed planes resized (area average) so that their mosaic is at most ``width`` pixels
    wide (portrait frames: high), with the metadata of that smaller mosaic."""
    _, h, w = planes.shape
    px = -(-meta.width // w)  # mosaic pixels per plane pixel: 2 Bayer, 3 X-Trans
    step = meta.period // px  # plane pixels per CFA tile
    long_side = max(meta.height, meta.width)
    if long_side <= width:
        return planes, meta
    scale = width / long_side
    new_h = max(step, round(h * scale) // step * step)
    new_w = max(step, round(w * scale) // step * step)
    small = np.stack([resize_area(p, (new_w, new_h)) for p in planes])
    return small, meta.replace(height=new_h * px, width=new_w * px)


def seed_figure_image(
    clean: CleanRaw,
    config: SeedNoiseConfig,
    rng: np.random.Generator,
    ratio: float,
    *,
    gamma: GammaCurve | str = GammaCurve.SRGB,
    max_width: int = 2400,
) -> np.ndarray:
    """The seed's Figure 3 for one clean frame, as one ``(3, H, W)`` image in [0, 1].

    Five panels: the clean frame, then gamma distortion, white imbalance, Poisson noise and
    black level, each stage of the seed's reverse pipeline rendered by the forward pipeline
    (the virtual camera's white balance, demosaicing, colour matrix, gamma), so each shows its
    own distortion. The frame is first shrunk to the panel size: noise is drawn per panel pixel.
    Stages are in the clean exposure's units; the Poisson stage has the photon count of a dark
    frame at ``ratio``, and the black-level stage keeps the bias (blacks look lifted).

    Args:
        rng: draws the parameters first, then the noise, as :func:`simulate_dark` does, so the
            generator of a seed-model dark frame gives that frame's parameters.
    """
    planes = pack(clean.raw_lin, clean.meta)
    # Leave room for the gaps between panels, so that side_by_side need not resample the noise.
    panel = max(2 * MIN_SIDE, (max_width - 10 * (len(FIGURE_TITLES) - 1)) // len(FIGURE_TITLES))
    small, meta = _shrink(planes, clean.meta, panel)
    params = sample_seed_params(config, rng)
    stages = seed_reverse_pipeline(small, params, rng, ratio)
    curve = GammaCurve.parse(gamma)
    images = [
        stages.original,
        stages.gamma,
        stages.white_imbalance,
        stages.poisson,
        stages.black_level,
    ]
    r, g, b = params.wb_gains
    captions = [
        "clean raw, rendered",
        f"gamma {params.gamma:.2f}",
        f"gains R {r:.2f}  G {g:.2f}  B {b:.2f}",
        f"x{ratio:g}: {params.photons / ratio:,.0f} photons at white",
        f"+{params.black_level:.3f} of white",
    ]
    panels = [
        (title, _render(img, meta, curve)) for title, img in zip(FIGURE_TITLES, images, strict=True)
    ]
    return side_by_side(panels, max_width=max_width, captions=captions)


def _figure_gamma(source: Path, options: SimulateOptions) -> GammaCurve:
    if source_kind(source) is SourceKind.PHOTO:
        return options.sources.unprocess.gamma
    return options.sources.gamma


def seed_figure(
    path_in: str | Path,
    path_out: str | Path,
    options: SimulateOptions | None = None,
    *,
    ratio: float | None = None,
    max_width: int = 2400,
) -> Path:
    """Write the seed's Figure 3 for one photo or raw file (see :func:`seed_figure_image`).

    The clean frame and the parameters are those of the input's ``burst 0`` dark frame at
    ``ratio`` (default: the first of ``options.ratios``) under the seed model, for
    ``options.seed``; the seed model's ranges are ``options.simulation.seed``, whatever
    model ``options`` names.

    Returns:
        ``path_out``; written atomically.
    """
    options = SimulateOptions() if options is None else options
    source = Path(path_in)
    ratio = options.ratios[0] if ratio is None else float(ratio)
    try:
        key = source_key(source)
    except OSError as err:
        raise DarkrawError(source, f"cannot read ({err.strerror or err})") from None
    clean = _load_clean(source, key, options)
    image = seed_figure_image(
        clean,
        options.simulation.seed,
        dark_rng(options.seed, key, ratio, 0),
        ratio,
        gamma=_figure_gamma(source, options),
        max_width=max_width,
    )
    return write_image(path_out, image)


def _figure_batch(
    files: Sequence[Path],
    folder: Path,
    options: SimulateOptions,
    report: SimulateReport,
    log: Callable[[str], None],
    progress: bool | None,
) -> None:
    targets = [folder / f"{src.stem}_figure3.png" for src in files]
    check_distinct_outputs(files, targets)
    _make_folder(folder)
    bar = _Progress.over(list(zip(files, targets, strict=True)), "figure", log, progress)
    try:
        for src, dst in bar:
            if dst.exists() and not options.overwrite:
                report.skipped.append(dst)
                bar.emit(f"{dst}: exists, skipped (--overwrite replaces it)")
                continue
            try:
                seed_figure(src, dst, options)
            except DarkrawError as err:
                bar.fail(report, src, err.problem)
                continue
            except (ValueError, MemoryError) as err:
                bar.fail(report, src, str(err) or type(err).__name__)
                continue
            report.written.append(dst)
            bar.emit(f"{src} -> {dst}")
    finally:
        bar.bar.close()
