"""Fuzzing (hypothesis) of the raw reader, the DNG write/read round trip and config loading.

Bounded for CI: every test tries a fixed number of inputs (1220 in all), derandomized so that
each CI run tries the same ones; the whole file takes about 15 s on two busy cores. For a longer
run with fresh random inputs, set ``DARKRAW_FUZZ_SCALE`` (a multiplier of the counts)::

    DARKRAW_FUZZ_SCALE=20 python -m pytest tests/test_fuzz.py -q --hypothesis-show-statistics

Each test asserts how many inputs it tried; the counts are also written to
``fuzz_counts.json`` in pytest's base temporary folder (and to ``$DARKRAW_FUZZ_COUNTS`` if set).

The raw reader runs in a separate process: a hang or a crash inside LibRaw then fails one input
with a clear message, instead of stalling or killing the test run.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import select
import string
import subprocess
import sys
import types
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darkraw.config import ConfigError, from_dict, load_config, to_dict
from darkraw.raw.cfa import BayerPattern, check_xtrans_tile
from darkraw.raw.dng import write_dng
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw
from darkraw.training.train import TrainConfig

from conftest import RGB_CAM, XTRANS, mosaic_from_rgb, smooth_scene

SCALE = float(os.environ.get("DARKRAW_FUZZ_SCALE", "1"))

#: Inputs each test tries at scale 1.
EXAMPLES = {
    "read_raw_random_bytes": 300,
    "read_raw_damaged_dng": 300,
    "dng_round_trip": 120,
    "config_from_dict": 300,
    "config_load_file": 200,
}

#: Seconds one read may take before the reader counts as hung.
READ_TIMEOUT_S = 30.0

COUNTS: Counter[str] = Counter()


def fuzz_settings(name: str) -> settings:
    return settings(
        max_examples=max(1, round(EXAMPLES[name] * SCALE)),
        # CI tries the same inputs every run; a scaled-up run explores new ones.
        derandomize=SCALE == 1,
        database=None,
        # Per-input time limits: the reader process has its own timeout; elsewhere a slow input
        # is a finding only when pathological, so the deadline is far above the usual ~5 ms.
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def expected(name: str) -> int:
    return max(1, round(EXAMPLES[name] * SCALE))


@pytest.fixture(scope="module", autouse=True)
def record_counts(tmp_path_factory):
    yield
    text = json.dumps(dict(sorted(COUNTS.items())), indent=2) + "\n"
    (tmp_path_factory.getbasetemp() / "fuzz_counts.json").write_text(text)
    if os.environ.get("DARKRAW_FUZZ_COUNTS"):
        Path(os.environ["DARKRAW_FUZZ_COUNTS"]).write_text(text)


# --- the raw reader, in its own process -----------------------------------------------------

_READER = """
import json, resource, sys, traceback
# LibRaw may allocate up to 2 GiB for one image; more than this means a runaway allocation.
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from darkraw.errors import DarkrawError
from darkraw.raw.rawio import read_raw
print("ready", flush=True)
for line in sys.stdin:
    path = line.rstrip("\\n")
    try:
        raw = read_raw(path)
        reply = {
            "kind": "read",
            "shape": list(raw.mosaic.shape),
            "size": [raw.meta.height, raw.meta.width],
            "dtype": str(raw.mosaic.dtype),
        }
    except DarkrawError as err:
        reply = {"kind": "refused", "type": type(err).__name__, "message": str(err)}
    except BaseException:
        reply = {"kind": "crashed", "message": traceback.format_exc()}
    print(json.dumps(reply), flush=True)
"""


class ReaderProcess:
    """``read_raw`` in a child process, one file at a time, with a timeout per file.

    Anything the reader prints to stderr is a finding too: errors must reach the user as the one
    line darkraw prints, not with LibRaw's or tifffile's messages around it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.stderr_path = folder / "reader_stderr.txt"
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        stderr = open(self.stderr_path, "w")  # noqa: SIM115 - the child holds it open
        proc = subprocess.Popen(
            [sys.executable, "-c", _READER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        stderr.close()
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", self.stderr_path.read_text()
        return proc

    def read(self, path: Path) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        before = self.stderr_path.stat().st_size
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], READ_TIMEOUT_S)
        if not ready:
            proc.kill()
            proc.wait()
            kept = self._keep(path)
            pytest.fail(f"read_raw hung for {READ_TIMEOUT_S} s on {kept}")
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            kept = self._keep(path)
            pytest.fail(f"read_raw crashed the process (exit {code}) on {kept}")
        noise = self.stderr_path.read_text()[before:]
        assert noise == "", f"read_raw printed to stderr on {self._keep(path)}: {noise!r}"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _keep(self, path: Path) -> Path:
        """Copy a failing input where it survives the test, to reproduce the failure."""
        kept = self.folder / f"failing_{path.name}"
        kept.write_bytes(path.read_bytes())
        return kept

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    process = ReaderProcess(tmp_path_factory.mktemp("reader"))
    yield process
    process.close()


def check_reply(reply: dict[str, Any], path: Path) -> None:
    """A read gives a consistent mosaic; a refusal is one DarkrawError line naming the file."""
    assert reply["kind"] in ("read", "refused"), reply["message"]
    if reply["kind"] == "refused":
        message = reply["message"]
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        assert len(message) < len(str(path)) + 300, message
    else:
        assert reply["shape"] == reply["size"] and reply["dtype"] == "uint16", reply
        assert min(reply["shape"]) >= 2, reply


RAW_EXTENSIONS = (".ARW", ".dng", ".DNG", ".NEF", ".CR2", ".CR3", ".RAF", ".ORF", ".RW2", ".PEF")

#: Starts of real formats, so that random bytes get past the first check of LibRaw's parsers.
MAGIC = (
    b"",
    b"II*\x00",
    b"MM\x00*",
    b"II*\x00\x08\x00\x00\x00",
    b"FUJIFILMCCD-RAW ",
    b"II\x1a\x00\x00\x00HEAPCCDR",
    b"\x00\x00\x00\x18ftypcrx ",
    b"IIRO",
    b"\xff\xd8\xff\xe1",
)


def test_read_raw_on_random_bytes(reader, tmp_path):
    name = "read_raw_random_bytes"

    @fuzz_settings(name)
    @given(
        magic=st.sampled_from(MAGIC),
        body=st.binary(max_size=4096),
        suffix=st.sampled_from(RAW_EXTENSIONS),
    )
    def run(magic: bytes, body: bytes, suffix: str) -> None:
        COUNTS[name] += 1
        path = tmp_path / f"random{suffix}"
        path.write_bytes(magic + body)
        check_reply(reader.read(path), path)

    run()
    assert COUNTS[name] >= expected(name)


def _small_dngs(folder: Path) -> list[bytes]:
    """A Bayer DNG with EXIF (ISO, exposure) and an X-Trans DNG, as bytes."""
    mosaic, meta = mosaic_from_rgb(smooth_scene(24, 30), "GBRG")
    meta = meta.replace(iso=1600, exposure_time=0.01, flip=6, make="Acme", model="Fuzz")
    bayer = write_dng(folder / "bayer.dng", mosaic, meta).read_bytes()
    xt_meta = RawMetadata(
        cfa_tile=tuple(tuple(int(v) for v in row) for row in XTRANS),
        black_tile=tuple((256.0,) * 6 for _ in range(6)),
        white_level=4095,
        height=24,
        width=30,
        wb_gains=(1.8, 1.0, 1.4),
    )
    xt_mosaic = np.random.default_rng(0).integers(256, 4096, (24, 30)).astype(np.uint16)
    xtrans = write_dng(folder / "xtrans.dng", xt_mosaic, xt_meta).read_bytes()
    return [bayer, xtrans]


@st.composite
def damaged(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    """A valid DNG with a few byte flips, 32-bit overwrites, insertions, deletions or a cut.

    Positions favour the first 700 bytes, where the header, the IFDs and the tag values live.
    """
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        if n == 0:
            break
        pos = draw(st.one_of(st.integers(0, min(n, 700) - 1), st.integers(0, n - 1)))
        op = draw(st.sampled_from(["flip", "set32", "insert", "delete", "cut"]))
        if op == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "set32":
            value = draw(
                st.one_of(
                    st.sampled_from([0, 1, 2, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, n, n + 1]),
                    st.integers(0, 2**32 - 1),
                )
            )
            data[pos : pos + 4] = value.to_bytes(4, "little")
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    return bytes(data)


def test_read_raw_on_damaged_dngs(reader, tmp_path):
    name = "read_raw_damaged_dng"
    originals = _small_dngs(tmp_path)

    @fuzz_settings(name)
    @given(data=damaged(originals), suffix=st.sampled_from([".dng", ".DNG"]))
    def run(data: bytes, suffix: str) -> None:
        COUNTS[name] += 1
        path = tmp_path / f"damaged{suffix}"
        path.write_bytes(data)
        check_reply(reader.read(path), path)

    run()
    assert COUNTS[name] >= expected(name)


# --- DNG round trip ---------------------------------------------------------------------------

#: Camera names a DNG keeps exactly: printable ASCII without surrounding spaces.
NAMES = st.text(string.ascii_letters + string.digits + " -_.", min_size=1, max_size=24).map(
    str.strip
)


@st.composite
def raw_frames(draw: st.DrawFn) -> tuple[np.ndarray, RawMetadata]:
    """A mosaic and the metadata of a camera that could exist (integer levels, sane gains)."""
    xtrans = draw(st.booleans())
    if xtrans:
        shift = draw(st.tuples(st.integers(0, 5), st.integers(0, 5)))
        tile = np.roll(XTRANS, shift, axis=(0, 1))
        try:
            check_xtrans_tile(tile)
        except ValueError:
            # Some shifts of the tile break the 2 R, 5 G, 2 B rule of its 3x3 blocks.
            tile = XTRANS
        cfa = tuple(tuple(int(v) for v in r) for r in tile)
    else:
        pattern = draw(st.sampled_from(list(BayerPattern)))
        cfa = tuple(tuple(int(v) for v in r) for r in pattern.tile)
    period = len(cfa)
    height = draw(st.integers(22, 40))
    width = draw(st.integers(22, 40))
    white = draw(st.integers(16, 65535))
    if xtrans:
        # rawpy reports X-Trans black levels by colour at best (see docs/reliability.md).
        black = np.full((6, 6), float(draw(st.integers(0, white // 2))))
    else:
        black = np.array(
            draw(st.lists(st.integers(0, white // 2), min_size=4, max_size=4)), dtype=float
        ).reshape(2, 2)
    # Green 1, as cameras record it; LibRaw drops as-shot gains that span more than ~100x.
    gain = st.floats(0.25, 8.0)
    wb = draw(st.none() | st.tuples(gain, st.just(1.0), gain))
    rgb_cam = draw(st.none() | st.just(RGB_CAM) | camera_matrices())
    fill = draw(st.sampled_from(["random", "black", "white", "zero", "max"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mosaic = {
        "random": lambda: rng.integers(0, white + 1, (height, width)),
        "black": lambda: np.tile(black, (-(-height // period), -(-width // period)))[
            :height, :width
        ],
        "white": lambda: np.full((height, width), white),
        "zero": lambda: np.zeros((height, width)),
        "max": lambda: np.full((height, width), 65535),
    }[fill]().astype(np.uint16)
    meta = RawMetadata(
        cfa_tile=cfa,
        black_tile=tuple(tuple(float(v) for v in row) for row in black),
        white_level=float(white),
        height=height,
        width=width,
        wb_gains=wb,
        rgb_cam=rgb_cam,
        exposure_time=draw(st.none() | st.floats(1e-5, 3600.0)),
        iso=draw(st.none() | st.integers(1, 65535).map(float)),
        make=draw(st.none() | NAMES),
        model=draw(st.none() | NAMES),
        flip=draw(st.sampled_from([0, 3, 5, 6, 1, 2, 4, 7])),
    )
    return mosaic, meta


@st.composite
def camera_matrices(draw: st.DrawFn) -> tuple[tuple[float, float, float], ...]:
    """Camera-to-sRGB matrices like real ones: rows sum to 1, diagonal dominant."""
    rows = []
    for i in range(3):
        off = [draw(st.floats(-0.6, 0.2)) for _ in range(2)]
        row = [*off[:i], 1.0 - sum(off), *off[i:]]
        rows.append(tuple(row))
    return tuple(rows)


def test_dng_round_trip(tmp_path):
    name = "dng_round_trip"

    @fuzz_settings(name)
    @given(frame=raw_frames())
    def run(frame: tuple[np.ndarray, RawMetadata]) -> None:
        COUNTS[name] += 1
        mosaic, meta = frame
        back = read_raw(write_dng(tmp_path / "round.dng", mosaic, meta))
        got = back.meta
        np.testing.assert_array_equal(back.mosaic, mosaic)
        assert got.cfa_tile == meta.cfa_tile
        assert got.black_tile == meta.black_tile
        assert (got.white_level, got.flip) == (meta.white_level, meta.flip)
        assert (got.height, got.width) == (meta.height, meta.width)
        assert got.iso == meta.iso
        if meta.exposure_time is None:
            assert got.exposure_time is None
        else:
            assert got.exposure_time == pytest.approx(meta.exposure_time, rel=1e-5)
        if meta.wb_gains is None:
            assert got.wb_gains is None
        else:
            np.testing.assert_allclose(got.wb_gains, meta.wb_gains, rtol=1e-4)
        np.testing.assert_allclose(got.rgb_cam, meta.rgb_cam or np.eye(3), atol=5e-3)
        assert got.make == (meta.make or "darkraw")
        assert got.model == (meta.model or "synthetic")

    run()
    assert COUNTS[name] >= expected(name)


# --- configs ----------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JUNK = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
    ),
    max_leaves=6,
)


def values_for(hint: Any) -> st.SearchStrategy[Any]:
    """Mostly well-typed values for a config field of type ``hint``, sometimes junk."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[values_for(a) for a in args])
    if hint is type(None):
        return st.none()
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return config_dicts(hint) | JUNK
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from([m.value for m in hint]) | JUNK
    if origin is tuple:
        if args[-1] is Ellipsis:
            return st.lists(values_for(args[0]), max_size=4) | JUNK
        return st.tuples(*[values_for(a) for a in args]).map(list) | JUNK
    if hint is bool:
        return st.booleans() | JUNK
    if hint is int:
        return st.integers(-3, 600) | st.integers() | JUNK
    if hint is float:
        return st.floats(-10, 1e5) | st.floats() | st.integers(-5, 5) | JUNK
    if hint is str:
        return st.text(max_size=12) | JUNK
    return JUNK


def config_dicts(cls: type) -> st.SearchStrategy[dict[Any, Any]]:
    """Dicts shaped like dataclass ``cls``: any subset of its fields, now and then a stray key."""
    hints = typing.get_type_hints(cls)
    optional = {
        f.name: st.deferred(lambda h=hints[f.name]: values_for(h)) for f in init_fields(cls)
    }
    known = st.fixed_dictionaries({}, optional=optional)
    stray = st.dictionaries(st.text(max_size=8) | st.integers() | st.none(), JUNK, max_size=2)
    return st.one_of(known, known, known, st.tuples(known, stray).map(lambda t: {**t[1], **t[0]}))


def init_fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def float_values(config: Any) -> list[float]:
    """Every float held anywhere in a config dataclass."""
    out: list[float] = []
    for value in to_dict(config).values():
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, float):
                out.append(item)
    return out


#: Config-shaped data and junk; deferred, so that hypothesis builds (and prints) it only once.
CONFIG_DATA = st.deferred(lambda: config_dicts(TrainConfig) | JUNK)


def check_message(message: str, prefix: str = "") -> None:
    """One line, short enough to read, starting with ``prefix``."""
    assert message.startswith(prefix) and "\n" not in message, repr(message)
    assert len(message) - len(prefix) < 600, repr(message)


def test_config_from_dict_only_raises_value_error():
    name = "config_from_dict"
    outcomes: Counter[str] = Counter()

    @fuzz_settings(name)
    @given(data=CONFIG_DATA)
    def run(data: Any) -> None:
        COUNTS[name] += 1
        try:
            config = from_dict(TrainConfig, data)
        except ValueError as err:
            outcomes["refused"] += 1
            check_message(str(err))
            return
        outcomes["accepted"] += 1
        assert all(math.isfinite(v) for v in float_values(config)), config
        # An accepted config survives the trip through the YAML saved beside checkpoints.
        assert from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(config)))) == config

    run()
    assert COUNTS[name] >= expected(name)
    # Both sides were reached: the strategy is not all junk, nor all valid.
    assert outcomes["accepted"] >= 10 and outcomes["refused"] >= 10, outcomes


def test_load_config_only_raises_config_error(tmp_path):
    name = "config_load_file"
    path = tmp_path / "fuzz.yaml"
    yaml_texts = CONFIG_DATA.map(
        lambda d: yaml.safe_dump(d, allow_unicode=True) if _dumpable(d) else "{}"
    )

    @fuzz_settings(name)
    @given(content=st.binary(max_size=512) | st.text(max_size=512).map(str.encode) | yaml_texts)
    def run(content: bytes | str) -> None:
        COUNTS[name] += 1
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        try:
            load_config(TrainConfig, path)
        except ConfigError as err:
            check_message(str(err), f"{path}: ")

    run()
    assert COUNTS[name] >= expected(name)


def _dumpable(data: Any) -> bool:
    try:
        yaml.safe_dump(data)
    except (yaml.YAMLError, ValueError):
        return False
    return True
