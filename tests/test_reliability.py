"""Bad files, killed runs, interrupted batches and untrusted files (issue 7).

Each bad input listed in docs/reliability.md is made here (or there names the test that covers
it). What every one must give: a one-line error naming the file and the problem, a non-zero exit
code, no traceback unless ``--debug``, and no output file, whole or partial.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from darkraw.cli import main
from darkraw.config import dump_yaml, from_dict, to_dict
from darkraw.errors import CheckpointError, RawReadError
from darkraw.nn.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from darkraw.nn.model import ModelConfig, build_model
from darkraw.raw.dng import write_dng
from darkraw.raw.fileio import read_image
from darkraw.raw.metadata import RawMetadata
from darkraw.raw.rawio import read_raw
from darkraw.training.train import TrainConfig, train

from conftest import ENHANCE_CLASSIC, XTRANS, mosaic_from_rgb, smooth_scene, tiny_settings

SRC = Path(__file__).resolve().parents[1] / "src" / "darkraw"


class Payload:
    """Unpickling this creates ``marker``: what a hostile file could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def parts_left(folder: Path) -> list[str]:
    """Temporary files of interrupted writes anywhere under ``folder``."""
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name)


#: A tqdm progress bar's text ("train:  50%|#####     | 2/4 [00:00<00:00, ...]").
PROGRESS = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")


def error_lines(err: str) -> list[str]:
    """stderr lines but progress bars, checked free of tracebacks and of anything but darkraw's
    own one-line errors and summaries (LibRaw's or tifffile's messages, warnings)."""
    assert "Traceback" not in err, err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    lines = [line for line in lines if not PROGRESS.search(line)]
    for line in lines:
        assert re.match(r"(darkraw: )?error: |  failed: |\d+ written, ", line), line
    return lines


# --- the corpus of bad raw inputs -------------------------------------------------------------


def good_dng(path: Path, height: int = 24, width: int = 32, **changes) -> Path:
    mosaic, meta = mosaic_from_rgb(smooth_scene(height, width), "RGGB")
    return write_dng(path, mosaic, meta.replace(**changes))


def monochrome_dng(path: Path) -> Path:
    """A DNG of one LinearRaw channel: what a monochrome camera (no colour filters) writes."""
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50717, "I", 1, 4095, True)]
    tifffile.imwrite(path, np.full((32, 32), 1000, np.uint16), extratags=tags, metadata=None)
    with tifffile.TiffFile(path) as tif:
        at = tif.pages.first.tags["PhotometricInterpretation"].valueoffset
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(struct.pack("<H", 34892))
    return path


def absurd_size_dng(path: Path, width: int, height: int) -> Path:
    """A valid small DNG whose header then claims ``width`` x ``height`` pixels."""
    data = bytearray(good_dng(path).read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            struct.pack_into("<I", data, tags[name].valueoffset, value)
    path.write_bytes(bytes(data))
    return path


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Bad files by name: (path, the problem the error must state)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    cases: dict[str, tuple[Path, str]] = {}

    (folder / "empty.ARW").write_bytes(b"")
    cases["empty file"] = (folder / "empty.ARW", "empty file")
    for ext in ("ARW", "DNG", "NEF", "CR2", "RAF"):
        path = folder / f"random_{ext.lower()}.{ext}"
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        cases[f"random bytes .{ext}"] = (path, "not a raw photo LibRaw can read")
    Image.new("RGB", (64, 48), (200, 10, 10)).save(folder / "jpeg.ARW", format="JPEG")
    cases["JPEG renamed .ARW"] = (folder / "jpeg.ARW", "not a raw photo LibRaw can read")
    Image.new("RGB", (64, 48), (10, 200, 10)).save(folder / "png.DNG", format="PNG")
    cases["PNG renamed .DNG"] = (folder / "png.DNG", "not a raw photo LibRaw can read")
    whole = good_dng(folder / "whole.dng", iso=800, exposure_time=0.01).read_bytes()
    for keep in (0.02, 0.3, 0.99):
        path = folder / f"cut_{keep}.dng"
        path.write_bytes(whole[: int(len(whole) * keep)])
        cases[f"DNG cut to {keep:.0%}"] = (path, "corrupt or truncated raw data")
    (folder / "whole.dng").unlink()
    absurd = absurd_size_dng(folder / "huge.dng", 30000, 30000)
    cases["DNG claiming 30000x30000"] = (absurd, "corrupt or truncated raw data")
    absurd = absurd_size_dng(folder / "huger.dng", 2**32 - 1, 2**32 - 1)
    cases["DNG claiming 4294967295x4294967295"] = (absurd, "not a raw photo LibRaw can read")
    cases["monochrome DNG"] = (monochrome_dng(folder / "mono.dng"), "monochrome sensor")
    for h, w in ((1, 1), (3, 5)):
        meta = RawMetadata.for_bayer("RGGB", h, w, white_level=1023)
        path = write_dng(folder / f"tiny_{h}x{w}.dng", np.full((h, w), 64, np.uint16), meta)
        cases[f"{h}x{w} DNG"] = (path, f"image of {h}x{w} pixels is too small")
    np.save(folder / "one_pixel.npy", np.full((1, 1), 64, np.uint16))
    cases["1x1 bare mosaic"] = (folder / "one_pixel.npy", "mosaic of 1x1 is too small")
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        arr = np.full((8, 8), 0.5, np.float32)
        arr[3, 4] = value
        np.save(folder / f"{name}.npy", arr)
        cases[f"{name.upper()} in a bare mosaic"] = (
            folder / f"{name}.npy",
            "mosaic contains NaN or infinite values",
        )
    return cases


BARE = ["--pattern", "RGGB", "--white-level", "1023"]


def _case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return list(bad_inputs(Path(tmp)))


CASES = _case_names()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return bad_inputs(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_no_output(corpus, case, tmp_path, capfd):
    path, problem = corpus[case]
    out = tmp_path / "out"
    out.mkdir()
    code = main(
        [*ENHANCE_CLASSIC, str(path), "-o", str(out / "result.png"), "--denoise", "none", *BARE]
    )
    err = capfd.readouterr().err  # file-descriptor level: LibRaw's own messages would show here
    assert code == 1
    errors = [line for line in error_lines(err) if line.startswith("darkraw: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"darkraw: error: {path}: {problem}"), errors
    assert sorted(out.iterdir()) == []


def test_every_cut_of_a_dng_is_refused(tmp_path):
    """A DNG cut short anywhere (header, IFDs, EXIF, pixels) is refused, never half-read."""
    path = good_dng(tmp_path / "whole.dng", 22, 22, iso=1600, exposure_time=0.01, make="Acme")
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tif:
        pixels_at = tif.pages.first.dataoffsets[0]
    assert pixels_at + 22 * 22 * 2 == len(data)  # the pixels come last, after the EXIF
    assert read_raw(path).meta.iso == 1600
    cuts = [
        *range(pixels_at + 8),
        *range(pixels_at + 8, len(data), 7),
        *range(len(data) - 8, len(data)),
    ]
    cut = tmp_path / "cut.dng"
    for keep in cuts:
        cut.write_bytes(data[:keep])
        with pytest.raises(RawReadError, match=r"cut\.dng: (empty file|corrupt or truncated)"):
            read_raw(cut)
    assert len(cuts) > 600


def test_a_3x5_bare_mosaic_is_enhanced(tmp_path, capsys):
    np.save(tmp_path / "small.npy", np.full((3, 5), 300, np.uint16))
    out = tmp_path / "small.png"
    assert main(["enhance", str(tmp_path / "small.npy"), "-o", str(out), *BARE]) == 0
    assert read_image(out).shape == (3, 3, 5)


def test_a_batch_goes_on_past_every_bad_file(corpus, tmp_path, capfd):
    folder = tmp_path / "batch"
    folder.mkdir()
    for path, _ in corpus.values():
        (folder / path.name).write_bytes(path.read_bytes())
    good_dng(folder / "good_a.dng")
    good_dng(folder / "good_b.dng", 30, 40)
    out = tmp_path / "out"
    code = main([*ENHANCE_CLASSIC, str(folder), "-o", str(out), "--denoise", "none", *BARE])
    err = capfd.readouterr().err
    assert code == 1
    lines = error_lines(err)
    assert f"2 written, 0 skipped, {len(corpus)} failed" in lines
    for path, problem in corpus.values():
        assert any(
            line.startswith(f"darkraw: error: {folder / path.name}: {problem}") for line in lines
        )
    assert sorted(p.name for p in out.iterdir()) == ["good_a.png", "good_b.png"]


def test_pickled_bare_mosaic_is_refused_without_running_it(tmp_path, capfd):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.npy"
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    assert main(["enhance", str(path), "-o", str(tmp_path / "evil.png"), *BARE]) == 1
    assert "cannot be loaded when allow_pickle=False" in error_lines(capfd.readouterr().err)[0]
    assert not marker.exists() and not (tmp_path / "evil.png").exists()


# --- output that cannot be written ------------------------------------------------------------


@pytest.fixture
def dng_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        good_dng(folder / f"{name}.dng")
    return folder


def test_output_folder_under_a_file(tmp_path, dng_folder, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = blocker / "out"
    assert main([*ENHANCE_CLASSIC, str(dng_folder), "-o", str(out), "--denoise", "none"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert lines == [f"darkraw: error: {out}: cannot create output folder (Not a directory)"]


def test_permission_denied_output_folder(tmp_path, dng_folder, monkeypatch, capsys):
    """As root the real chmod test (test_cli.py::test_read_only_folder) skips; fake EACCES."""
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    out = tmp_path / "out"
    assert main([*ENHANCE_CLASSIC, str(dng_folder), "-o", str(out), "--denoise", "none"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert "0 written, 0 skipped, 3 failed" in lines
    assert f"darkraw: error: {out / 'a.png'}: cannot write here (Permission denied)" in lines
    assert sorted(out.iterdir()) == []


@pytest.fixture
def file_size_limit():
    """Set RLIMIT_FSIZE for this process: the kernel then fails writes past it (EFBIG), as a
    full disk fails them (ENOSPC). Python ignores SIGXFSZ, so the write raises OSError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(size: int | None) -> None:
        """Limit files to ``size`` bytes; ``None`` lifts the limit again."""
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if size is None else size, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_full_disk_during_a_batch(tmp_path, dng_folder, file_size_limit, capsys):
    out = tmp_path / "out"
    out.mkdir()
    file_size_limit(600)
    code = main([*ENHANCE_CLASSIC, str(dng_folder), "-o", str(out), "--denoise", "none"])
    file_size_limit(None)
    assert code == 1
    lines = error_lines(capsys.readouterr().err)
    assert "0 written, 0 skipped, 3 failed" in lines
    assert f"darkraw: error: {out / 'b.png'}: cannot write image (File too large)" in lines
    assert sorted(out.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path, dng_folder, capsys):
    out = tmp_path / "single.png"
    args = ["enhance", str(dng_folder), "-o", str(out)]
    assert main(args) == 1
    assert error_lines(capsys.readouterr().err) == [
        f"darkraw: error: {out}: 3 inputs need an output folder, not an image file"
    ]
    assert main(["--debug", *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().endswith("3 inputs need an output folder, not an image file")


# --- configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("stepz: 3\n", "unknown key(s) stepz; known: "),
        ("steps: many\n", "steps: expected an integer, got 'many'"),
        ("optim:\n  lr: fast\n", "optim.lr: expected a number, got 'fast'"),
        ("optim:\n  lr: .inf\n", "optim.lr: expected a finite number, got inf"),
        ("optim:\n  lr: " + "9" * 400 + "\n", "optim.lr: expected a number, got an integer"),
        ("optim:\n  lr: " + "9" * 5000 + "\n", "not a config: Exceeds the limit (4300 digits)"),
        ("data: [1, 2]\n", "data.: expected a mapping, got list"),
        ("- steps\n- 3\n", "config: expected a mapping, got list"),
        ("? |\n  two\n  lines\n: 1\n", "unknown key(s) 'two\\nlines\\n'; known: "),
        ("steps: [unclosed\n", "not valid YAML at line 2"),
        ("[" * 1000 + "]" * 1000 + "\n", "not a config: its YAML is nested too deeply"),
        (b"\xff\xfe\x00garbage", "cannot read it ('utf-8' codec can't decode"),
    ],
    ids=[
        "unknown key",
        "wrong type",
        "string for a number",
        "infinity",
        "400-digit number",
        "5000-digit number",
        "list for a section",
        "list for the config",
        "key with newlines",
        "broken YAML",
        "deep nesting",
        "binary file",
    ],
)
def test_bad_config_gives_one_line(tmp_path, capsys, text, problem):
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    assert main(["train", str(path)]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"darkraw: error: {path}: {problem}"), lines
    assert len(lines[0]) < 400


def test_config_cannot_run_code(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.yaml"
    path.write_text(f"!!python/object/apply:os.mkdir ['{marker}']\n")
    assert main(["train", str(path)]) == 1
    assert error_lines(capsys.readouterr().err) == [
        f"darkraw: error: {path}: not valid YAML at line 1"
    ]
    assert not marker.exists()
    assert main(["train", str(tmp_path / "absent.yaml")]) == 1
    assert f"{tmp_path / 'absent.yaml'}: no such file" in capsys.readouterr().err


# --- training: bad checkpoints, unwritable run folders ----------------------------------------


def write_config(path: Path, settings: dict) -> Path:
    path.write_text(dump_yaml(from_dict(TrainConfig, settings)))
    return path


def saved_checkpoint(folder: Path, step: int, config: dict, model_state=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if model_state is None:
        model_state = build_model(ModelConfig(width=4, fc_hidden=8)).state_dict()
    path = folder / f"step_{step:07d}.safetensors"
    save_checkpoint(path, model_state=model_state, optimizer_state=None, step=step, config=config)
    return path


def test_resume_with_no_readable_checkpoint_is_an_error(photo_folder, tmp_path, capsys):
    settings = tiny_settings(photo_folder, tmp_path / "run")
    config = write_config(tmp_path / "run.yaml", settings)
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    marker = tmp_path / "marker"
    torch.save({"model": {}, "evil": Payload(marker)}, ckpts / "step_0000004.safetensors")
    (ckpts / "step_0000002.safetensors").write_bytes(b"\0" * 100)
    assert main(["train", str(config), "--resume"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"darkraw: error: {ckpts / 'step_0000004.safetensors'}: not a complete")
    assert line.endswith(
        "no checkpoint of this run verifies, so it cannot resume "
        "(move the checkpoints away to start afresh)"
    )
    assert not marker.exists()
    # Nothing was overwritten: the broken files are still there for a closer look.
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "step_0000002.safetensors",
        "step_0000004.safetensors",
    ]


def test_checkpoint_of_another_darkraw_gives_one_line(photo_folder, tmp_path, capsys):
    settings = tiny_settings(photo_folder, tmp_path / "run")
    config = write_config(tmp_path / "run.yaml", settings)
    resolved = to_dict(from_dict(TrainConfig, settings))
    ckpts = tmp_path / "run" / "checkpoints"
    newer = saved_checkpoint(ckpts, 2, {**resolved, "added_later": 1})
    assert main(["train", str(config), "--resume"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"darkraw: error: {newer}: its config does not load here: unknown key")

    state = build_model(ModelConfig(width=4, fc_hidden=8)).state_dict()
    state.pop("encoder.0.0.weight")
    misfit = saved_checkpoint(ckpts, 4, resolved, state)
    assert main(["train", str(config), "--resume"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"darkraw: error: {misfit}: weights do not fit the model: ")
    assert '"encoder.0.0.weight"' in line

    # The same files given as the starting point of another run (transfer learning).
    for start, problem in ((newer, "its config does not load here"), (misfit, "weights do not")):
        other = tiny_settings(photo_folder, tmp_path / "other", init_from=str(start))
        assert main(["train", str(write_config(tmp_path / "other.yaml", other))]) == 1
        (line,) = error_lines(capsys.readouterr().err)
        assert line.startswith(f"darkraw: error: {start}: {problem}")


def test_run_folder_under_a_file(photo_folder, tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file")
    out = tmp_path / "blocker" / "run"
    config = write_config(tmp_path / "run.yaml", tiny_settings(photo_folder, out))
    assert main(["train", str(config)]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert lines == [f"darkraw: error: {out}: cannot write the run folder (Not a directory)"]


@pytest.mark.parametrize(
    ("limit", "changes", "failing", "problem"),
    [
        (1500, {}, "", "cannot write the run folder (File too large)"),
        (
            3000,
            {"checkpoint_every": 100, "val_every": 100, "steps": 100},
            "log.jsonl",
            "cannot write the log (File too large)",
        ),
        (
            300_000,
            {},
            "checkpoints/step_0000002.safetensors",
            "cannot write checkpoint (File too large)",
        ),
    ],
    ids=["at the start", "in the log", "in a checkpoint"],
)
def test_full_disk_during_training(
    photo_folder, tmp_path, file_size_limit, capsys, limit, changes, failing, problem
):
    out = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", tiny_settings(photo_folder, out, **changes))
    file_size_limit(limit)
    code = main(["train", str(config)])
    file_size_limit(None)
    assert code == 1
    lines = error_lines(capsys.readouterr().err)
    where = out / failing if failing else out
    assert lines[-1] == f"darkraw: error: {where}: {problem}"
    assert parts_left(tmp_path) == []
    assert latest_checkpoint(out / "checkpoints") is None


def test_a_leftover_checkpoint_of_a_later_step_never_evicts_the_new_ones(photo_folder, tmp_path):
    """keep_checkpoints counts by step; a cut-short file of a higher step is not 'newest'."""
    out = tmp_path / "run"
    config = from_dict(TrainConfig, tiny_settings(photo_folder, out, steps=4, keep_checkpoints=1))
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "step_0000099.safetensors").write_bytes(b"cut short")
    train(config, progress=False)
    assert latest_checkpoint(ckpts) == ckpts / "step_0000004.safetensors"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "step_0000004.safetensors",
        "step_0000099.safetensors",
    ]


# --- a training process killed at a random step -----------------------------------------------


def logged_steps(log: Path) -> list[int]:
    """Steps with a loss in log.jsonl; a last line cut short by a kill is ignored."""
    steps = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in record:
            steps.append(record["step"])
    return steps


def test_sigkill_at_a_random_step_loses_at_most_one_interval(photo_folder, tmp_path, capsys):
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    every, steps = 5, 60
    settings = tiny_settings(
        photo_folder, tmp_path / "run", steps=steps, checkpoint_every=every, val_every=steps
    )
    config = write_config(tmp_path / "run.yaml", settings)
    log, ckpts = tmp_path / "run" / "log.jsonl", tmp_path / "run" / "checkpoints"
    kill_after = every + rng.randrange(1, 2 * every)
    proc = subprocess.Popen(
        [sys.executable, "-m", "darkraw", "train", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while max(logged_steps(log), default=0) < kill_after:
            assert proc.poll() is None, f"the run ended before the kill (seed {seed})"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.002)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last = max(logged_steps(log))
    newest = latest_checkpoint(ckpts)
    assert newest is not None, f"no complete checkpoint after step {last} (seed {seed})"
    kept = load_checkpoint(newest).step
    assert last - every <= kept <= last, f"killed after step {last}, kept {kept} (seed {seed})"

    # A write killed half-way: a newer checkpoint cut in half, and a temporary file.
    data = newest.read_bytes()
    (ckpts / f"step_{kept + 2 * every:07d}.safetensors").write_bytes(data[: len(data) // 2])
    (ckpts / f".step_{kept + every:07d}.x1y2z3.part.safetensors").write_bytes(data[:1000])
    assert latest_checkpoint(ckpts) == newest

    assert main(["train", str(config), "--resume"]) == 0
    assert f"step {steps}: loss" in capsys.readouterr().out
    assert load_checkpoint(latest_checkpoint(ckpts)).step == steps
    assert logged_steps(log) == list(range(1, steps + 1))
    assert parts_left(ckpts) == []
    # Nothing of the kill shows in the weights: they equal an uninterrupted run's.
    whole = train(
        from_dict(TrainConfig, {**settings, "out_dir": str(tmp_path / "whole")}), progress=False
    )
    resumed = load_checkpoint(latest_checkpoint(ckpts)).model_state
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed[name]), name


# --- a batch interrupted by Ctrl-C ------------------------------------------------------------


def test_ctrl_c_leaves_complete_files_and_a_rerun_finishes(tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    # Enough files that the batch is still running when the interrupt arrives, even when this
    # test process is slow to notice the first output on a loaded machine.
    count = 30
    mosaic, meta = mosaic_from_rgb(smooth_scene(512, 768), "RGGB")
    for i in range(count):
        write_dng(folder / f"frame{i}.dng", mosaic, meta)
    args = [*ENHANCE_CLASSIC, str(folder), "-o", str(out), "--denoise", "none"]
    # A shell starting the test runner in the background (`.ci/run &`) sets SIGINT to ignored,
    # and the child would inherit that and never see the interrupt; a user's terminal does not.
    proc = subprocess.Popen(
        [sys.executable, "-m", "darkraw", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        # A finished output, not the hidden temporary file it is written under first.
        while not (out.is_dir() and any(p.name.startswith("frame") for p in out.iterdir())):
            assert proc.poll() is None, "the batch ended before the interrupt"
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; finished outputs are complete, run again to do the rest" in err
    assert "Traceback" not in err
    done = sorted(p.name for p in out.iterdir())
    assert parts_left(out) == [] and 1 <= len(done) < count, done
    stamps = {}
    for name in done:
        assert read_image(out / name).shape == (3, 512, 768)
        stamps[name] = (out / name).stat().st_mtime_ns

    assert main(args) == 0
    assert f"{count - len(done)} written, {len(done)} skipped, 0 failed" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"frame{i}.png" for i in range(count))
    for name, stamp in stamps.items():
        assert (out / name).stat().st_mtime_ns == stamp
    for path in out.iterdir():
        assert read_image(path).shape == (3, 512, 768)


# --- untrusted weights ------------------------------------------------------------------------


def test_no_loader_can_unpickle():
    """No module calls torch.load (without weights_only=True), pickle, unsafe YAML or eval."""
    risky = re.compile(
        r"torch\.load\((?![^)]*weights_only=True)|\bpickle\.loads?\(|allow_pickle=True"
        r"|yaml\.(unsafe_)?load\(|yaml\.Loader|(?<![.\w])(eval|exec)\("
    )
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if risky.search(line):
                found.append(f"{path.name}:{n}: {line.strip()}")
    assert found == []
    assert len(list(SRC.rglob("*.py"))) > 10


def test_model_loader_refuses_a_malicious_pickle(tmp_path):
    from darkraw.nn import infer

    marker = tmp_path / "marker"
    torch_file = tmp_path / "model.safetensors"
    torch.save({"state_dict": {"w": torch.ones(2)}, "evil": Payload(marker)}, torch_file)
    plain_file = tmp_path / "model.pt"
    plain_file.write_bytes(pickle.dumps(Payload(marker)))
    for path in (torch_file, plain_file):
        with pytest.raises(CheckpointError, match="pickles are refused") as info:
            infer.load_model(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="no such model file"):
        infer.load_model(tmp_path / "absent.safetensors")


def test_xtrans_file_given_to_a_bayer_model(tmp_path):
    from darkraw.nn import infer

    meta = RawMetadata(
        cfa_tile=tuple(tuple(int(v) for v in row) for row in XTRANS),
        black_tile=tuple((256.0,) * 6 for _ in range(6)),
        white_level=4095,
        height=36,
        width=48,
    )
    mosaic = np.random.default_rng(0).integers(256, 4096, (36, 48)).astype(np.uint16)
    raw = read_raw(write_dng(tmp_path / "xtrans.dng", mosaic, meta))
    assert raw.meta.is_xtrans
    bayer_model = build_model(ModelConfig(in_channels=4, width=4, fc_hidden=8))
    with pytest.raises(ValueError, match=r"the model takes Bayer raw .* but this file is X-Trans"):
        infer.enhance_raw_network(raw.mosaic, raw.meta, bayer_model)
