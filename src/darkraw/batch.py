"""Enhancing dark raw files on disk: one file, or a batch that goes on past bad files.

Two methods render a file: the traditional pipeline (:mod:`darkraw.classic.pipeline`) and the
See-in-the-Dark network (Chen et al., CVPR 2018; :mod:`darkraw.nn.infer`). The network and torch
are imported only when a network is asked for, so the classic method starts fast.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from tqdm import tqdm

from darkraw.classic.pipeline import (
    ClassicOptions,
    ClassicResult,
    GammaCurve,
    gamma_decode,
    run_classic,
)
from darkraw.errors import DarkrawError, OutputError
from darkraw.progress import listening, part, step
from darkraw.raw.dng import write_dng, write_linear_dng
from darkraw.raw.exif import SourceMetadata, output_tags, read_source_metadata
from darkraw.raw.fileio import (
    DEFAULT_JPEG_QUALITY,
    DNG_EXTENSION,
    DNG_OUTPUT_SUFFIX,
    IMAGE_FORMATS,
    OTHER_IMAGE_EXTENSIONS,
    BatchReport,
    InputScan,
    check_distinct_outputs,
    check_outputs_are_not_inputs,
    image_formats_text,
    prepare_output_folder,
    scan_inputs,
    write_image,
)
from darkraw.raw.rawio import BARE_EXTENSIONS, RAW_EXTENSIONS, BareMosaicSpec, RawImage, read_raw

if TYPE_CHECKING:
    from darkraw.nn.enhance import AnyNetwork as Network
    from darkraw.nn.infer import InferenceOptions, NetworkResult
    from darkraw.nn.rawdenoise import DenoisedFrame, DenoisedResult, DenoiseOptions
    from darkraw.synth.noiselevel import NoiseDatabase


def input_extensions(include_bare: bool = False) -> frozenset[str]:
    """The extensions a folder given as input is searched for."""
    return RAW_EXTENSIONS | (frozenset(BARE_EXTENSIONS) if include_bare else frozenset())


def collect_inputs(
    inputs: Sequence[str | Path], include_bare: bool = False, output: str | Path | None = None
) -> list[Path]:
    """Expand folders into the raw files they hold (recursively, sorted); keep files as given.

    Hidden files in folders are left out, and so is ``output`` where it lies inside a folder
    (see :func:`darkraw.raw.fileio.scan_inputs`, which also says what was left out).
    """
    return scan_inputs(inputs, input_extensions(include_bare), output).files


#: Output extensions that name a file darkraw cannot write, rather than a folder.
_NOT_WRITTEN = (OTHER_IMAGE_EXTENSIONS | RAW_EXTENSIONS) - {DNG_EXTENSION}

#: What darkraw writes: its pictures and DNG.
OUTPUT_EXTENSIONS = frozenset(IMAGE_FORMATS) | {DNG_EXTENSION}


def names_a_file(output: str | Path) -> bool:
    """Whether ``output`` is the output itself (named as an image or DNG, and not a folder)
    rather than the folder the outputs go to."""
    output = Path(output)
    return not output.is_dir() and output.suffix.lower() in OUTPUT_EXTENSIONS


def output_suffix(output: str | Path, fmt: str = "png") -> str:
    """The extension the outputs get: ``output``'s own where it names the file
    (:func:`names_a_file`), else ``fmt``'s, for the files of a folder (``.png``, ``.dng``)."""
    return Path(output).suffix.lower() if names_a_file(output) else "." + fmt.lower().lstrip(".")


def plan_outputs(
    inputs: Sequence[Path],
    output: str | Path,
    fmt: str = "png",
    subfolders: Mapping[Path, Path] | None = None,
) -> list[Path]:
    """Where each input's output goes.

    One input and an ``output`` with an image or ``.dng`` extension: that file. Otherwise
    ``output`` is a folder and each input becomes ``<folder>/<stem>.<fmt>``, or
    ``<folder>/<stem>-darkraw.dng`` for DNG: a DNG is a raw file too, and the suffix tells it
    from its original wherever both end up (the same folder, one catalogue). An input found
    below a scanned folder (``subfolders``, from :func:`darkraw.raw.fileio.scan_inputs`) goes
    to the same subfolder of ``<folder>``: cameras number their files again from 1, so a
    shoot's days often hold the same names.

    Raises:
        OutputError: two inputs would write the same file, an output is an input, an unknown
            format, an output named like an image darkraw does not write (``.heic``, ``.nef``),
            or an existing file where a folder is needed.
    """
    output = Path(output)
    suffix = "." + fmt.lower().lstrip(".")
    if suffix not in OUTPUT_EXTENSIONS:
        raise OutputError(output, f"unknown output format {fmt!r}; use png, jpg, tiff or dng")
    out_suffix = output.suffix.lower()
    if names_a_file(output):
        if len(inputs) != 1:
            problem = f"{len(inputs)} inputs need an output folder, not an image file"
            raise OutputError(output, problem)
        check_outputs_are_not_inputs(inputs, [output])
        return [output]
    if not output.is_dir():
        if out_suffix in _NOT_WRITTEN:
            problem = f"darkraw does not write {out_suffix} images"
            raise OutputError(output, f"{problem}; name a {image_formats_text()} file, or a folder")
        if output.exists():
            problem = (
                "several inputs need a folder"
                if len(inputs) > 1
                else f"name a {image_formats_text()} image, or a folder"
            )
            raise OutputError(output, f"is a file; {problem}")
    tail = DNG_OUTPUT_SUFFIX + suffix if suffix == DNG_EXTENSION else suffix
    below = subfolders or {}
    targets = [output / below.get(p, Path()) / f"{p.stem}{tail}" for p in inputs]
    check_distinct_outputs(inputs, targets)
    check_outputs_are_not_inputs(inputs, targets)
    return targets


def prepare_outputs(targets: Sequence[Path], output: str | Path, overwrite: bool = False) -> None:
    """Check every output location before any frame is computed: create the folder (a single
    output's too, and the subfolders where outputs will be written), and refuse a folder that
    cannot be written or a target that is a folder.

    Raises:
        OutputError: the first location that cannot be written.
    """
    for dst in targets:
        if dst.is_dir():
            raise OutputError(dst, "is a folder, not an image file")
    output = Path(output)
    if list(targets) == [output]:
        # An output named as a file: its folder, named by the messages through the file.
        write = overwrite or not targets[0].exists()
        prepare_output_folder(targets[0].parent, targets[0], write=write)
        return
    # The output folder first (named as given), then the subfolders mirrored from the inputs',
    # each made only where something will be written in it.
    folders: dict[Path, bool] = {output: False}
    for dst in targets:
        folders[dst.parent] = folders.get(dst.parent, False) or overwrite or not dst.exists()
    folders[output] = folders[output] or any(folders.values())
    for folder, write in folders.items():
        if folder == output or write:
            prepare_output_folder(folder, write=write)


#: What enhancing a file gives: the classic pipeline's result, the SID network's, the raw
#: denoiser's picture, or (for a DNG output) its clean frame, unrendered.
Result: TypeAlias = "ClassicResult | NetworkResult | DenoisedResult | DenoisedFrame"


def enhance_file(
    path: str | Path,
    output: str | Path,
    options: ClassicOptions = ClassicOptions(),
    bare: BareMosaicSpec | None = None,
    *,
    model: Network | None = None,
    inference: InferenceOptions | None = None,
    denoise: DenoiseOptions | None = None,
    database: NoiseDatabase | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    raw: RawImage | None = None,
) -> Result:
    """Render one raw file and write the output atomically, with the source's metadata.

    Args:
        path: the raw file (or bare mosaic, described by ``bare``).
        output: the file to write: ``.png``/``.jpg`` 8-bit, ``.tif`` 16-bit (each with the
            source's EXIF and an sRGB ICC profile), or ``.dng``: the raw denoiser's clean
            mosaic as a CFA DNG with the source's metadata, or, for a picture with no mosaic to
            give back (the classic pipeline, the SID network), a linear DNG of it.
        options: the classic pipeline's settings; with a ``model`` only ``options.ratio`` is
            used (``None``: chosen automatically).
        model: render with this network instead of the classic pipeline.
        inference: how a SID network runs (tiles, precision, device); defaults if ``None``.
        denoise: how the raw denoiser runs (strength, renderer); defaults if ``None``.
        database: camera noise profiles for the raw denoiser (else it estimates the noise).
        jpeg_quality: 1 to 100, for JPEG outputs.
        raw: ``path`` already read (:func:`~darkraw.raw.rawio.read_raw`; a batch reads the next
            file while this one is processed); ``None`` reads it.

    Returns:
        The result; for a DNG written from the raw denoiser's clean mosaic, its
        :class:`~darkraw.nn.rawdenoise.DenoisedFrame` (no picture is rendered for a DNG).

    Raises:
        DarkrawError: the file cannot be read or the image cannot be written.
        ValueError: the file does not fit the model (X-Trans file, Bayer model, or the reverse).
    """
    started = start_file(
        path,
        output,
        options,
        bare,
        model=model,
        inference=inference,
        denoise=denoise,
        database=database,
        jpeg_quality=jpeg_quality,
        raw=raw,
    )
    result = started.render()
    started.write(result)
    return result


@dataclass(frozen=True)
class StartedFile:
    """A file :func:`start_file` has taken through the network.

    Attributes:
        render: the rest of the work on the picture (the raw denoiser's rendering by LibRaw,
            the checks); it writes nothing, so a batch runs it in a second thread.
        write: writes the output of what ``render`` returned (atomically; in the thread that
            Ctrl-C and SIGTERM interrupt, so that a stopped write leaves nothing behind).
    """

    render: Callable[[], Result]
    write: Callable[[Result], None]


def start_file(
    path: str | Path,
    output: str | Path,
    options: ClassicOptions = ClassicOptions(),
    bare: BareMosaicSpec | None = None,
    *,
    model: Network | None = None,
    inference: InferenceOptions | None = None,
    denoise: DenoiseOptions | None = None,
    database: NoiseDatabase | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    raw: RawImage | None = None,
) -> StartedFile:
    """:func:`enhance_file` in steps (its arguments and errors, raised by any step): the
    network's work now, then the picture's rendering and the output's writing
    (:class:`StartedFile`), which a batch overlaps with the next file's network."""
    raw = read_raw(path, bare, keep_decoded=model is not None) if raw is None else raw
    started: ClassicResult | NetworkResult | DenoisedFrame
    source = raw.path if raw.meta.source == "LibRaw" else None
    if model is None:
        started = run_classic(raw.mosaic, raw.meta, options)
    else:
        from darkraw.nn.enhance import start_enhancement

        started = start_enhancement(
            raw.mosaic,
            raw.meta,
            model,
            options.ratio,
            inference=inference,
            denoise=denoise,
            source=source,
            database=database,
        )
    dng = Path(output).suffix.lower() == DNG_EXTENSION

    def render() -> Result:
        if model is None:
            return started
        from darkraw.nn.enhance import finish_enhancement

        assert not isinstance(started, ClassicResult)
        # A DNG stores the clean mosaic: no picture is rendered for it.
        return finish_enhancement(started, model, source, picture=not dng)

    def write(result: Result) -> None:
        from_file = raw.meta.source == "LibRaw" and raw.path is not None
        capture = read_source_metadata(raw.path) if from_file and raw.path else None
        if dng:
            _write_dng_output(Path(output), raw, result, options.gamma, capture)
        else:
            tags = output_tags(capture, raw.meta)
            write_image(output, _picture(result), tags, jpeg_quality=jpeg_quality)

    return StartedFile(render, write)


def _picture(result: Result) -> np.ndarray:
    """What :func:`~darkraw.raw.fileio.write_image` takes of a result: LibRaw's 16-bit pixels
    where it rendered them (the same file, without making float planes), else the planes."""
    from darkraw.nn.rawdenoise import DenoisedFrame, DenoisedResult

    if isinstance(result, DenoisedFrame):
        raise TypeError("a denoised frame has no picture before it is rendered")

    if isinstance(result, DenoisedResult) and result.rgb16 is not None:
        return result.rgb16
    return result.image


def _write_dng_output(
    output: Path,
    raw: RawImage,
    result: Result,
    gamma: GammaCurve,
    source: SourceMetadata | None,
) -> None:
    """The raw denoiser's clean mosaic as a CFA DNG of the source's size and layout; for the
    others, which give only a rendered picture, that picture as a linear DNG (its tone curve
    undone), so an editor can still take it further."""
    from darkraw.nn.rawdenoise import DenoisedFrame, DenoisedResult

    if isinstance(result, DenoisedResult | DenoisedFrame):
        write_dng(output, result.mosaic_dn, raw.meta, source)
        return
    # The SID network learned LibRaw's BT.709 curve; the classic pipeline uses the one asked for.
    curve = gamma if isinstance(result, ClassicResult) else GammaCurve.BT709
    write_linear_dng(output, gamma_decode(result.image, curve), raw.meta, source)


def enhance_batch(
    inputs: Iterable[str | Path],
    output: str | Path,
    options: ClassicOptions = ClassicOptions(),
    *,
    fmt: str = "png",
    bare: BareMosaicSpec | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    model: Network | str | Path | None = None,
    inference: InferenceOptions | None = None,
    denoise: DenoiseOptions | None = None,
    noise_profiles: str | Path | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    device: str = "auto",
    keep: list[object] | None = None,
) -> BatchReport:
    """Enhance many files; a bad file is reported and the batch goes on.

    Args:
        inputs: raw files and folders of raw files (hidden files and ``output``, where it lies
            inside a folder, are left out of a folder and counted in the report).
        output: an image file (single input) or a folder; a missing folder (a single image's
            too) is created. Files found below a folder given as input are written in the same
            subfolders of it. Every output location is checked before the first frame.
        options: the classic pipeline's settings; with a ``model`` only ``options.ratio``.
        fmt: format of outputs in a folder: ``png`` (8-bit), ``jpg``, ``tiff`` (16-bit) or
            ``dng`` (``<stem>-darkraw.dng``; see :func:`enhance_file`).
        overwrite: replace existing outputs; otherwise they are skipped, so an interrupted batch
            can simply be run again.
        log: where per-file messages go.
        progress: show a progress bar (``None``: only on a terminal).
        model: render with a network instead of the classic pipeline: the network itself, a
            model file or training checkpoint, or a bundled model's name (``"default"``,
            ``"sid"``, ``"small"``). A file is loaded once, before any output is written.
        inference: how a SID network runs; defaults if ``None``.
        denoise: how the raw denoiser runs; defaults if ``None``.
        noise_profiles: camera noise profiles for the raw denoiser: a file in darktable's
            ``noiseprofiles.json`` format, or ``"darktable"`` for darktable's own; cameras and
            ISOs it does not know (and every file when ``None``) get the noise estimated from
            the frame itself.
        jpeg_quality: 1 to 100, for JPEG outputs.
        device: where the raw denoiser runs in ONNX Runtime: ``auto`` (a GPU where
            onnxruntime-gpu sees one), ``cpu`` or ``cuda``.
        keep: a list the loaded network is put in, so that it outlives the batch: a caller
            that ends the process without Python's finalisation (the command line) spares its
            teardown (0.03 s for the default network in OpenVINO).

    Raises:
        ValueError: a JPEG quality outside 1..100.
        CheckpointError: the model cannot be loaded (nothing has been written then).
        OutputError: the outputs cannot be planned (an output would be an input, or two inputs
            would share one), or an output location cannot be made or written.
    """
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"JPEG quality must be 1 to 100, got {jpeg_quality}")
    given = list(inputs)
    scan: InputScan = scan_inputs(given, input_extensions(bare is not None), output)
    files = scan.files
    report = BatchReport(hidden=scan.hidden, in_output=scan.in_output, ours=scan.ours)
    targets = plan_outputs(files, output, fmt, scan.subfolders) if files else []
    pairs = list(zip(files, targets, strict=True))
    todo = [i for i, (_, dst) in enumerate(pairs) if overwrite or not dst.exists()]
    # The next file is read (LibRaw's decoding runs on one core) in a second thread while this
    # one is processed, filling part of the time LibRaw's rendering leaves a core idle; the
    # first one while the network loads. Only the mosaic is held ahead (24 MB for 12 Mpixels);
    # the thread writes nothing and is waited for, never abandoned, however this ends, Ctrl-C
    # included.
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="darkraw-read")
    reads: dict[int, Future[RawImage]] = {}
    # A network's picture may be rendered by LibRaw from the decoded file (the raw denoiser's).
    read = functools.partial(read_raw, bare=bare, keep_decoded=model is not None)

    def read_ahead(path: Path) -> Future[RawImage]:
        return reader.submit(read, path)

    try:
        if todo:
            reads[todo[0]] = read_ahead(pairs[todo[0]][0])
        network, database, name = _load_network(model, denoise, device, noise_profiles)
        if keep is not None and network is not None:
            keep.append(network)
        if not files:
            for item in given:
                _report_failure(report, Path(item), DarkrawError(item, "no raw files found here"))
            return report
        prepare_outputs(targets, output, overwrite)
        _enhance_pairs(
            pairs,
            todo,
            read_ahead,
            reads,
            report,
            options=options,
            bare=bare,
            log=log,
            progress=progress,
            overwrite=overwrite,
            network=network,
            name=name,
            inference=inference,
            denoise=denoise,
            database=database,
            jpeg_quality=jpeg_quality,
            # Beside the bar, a file found in a subfolder is named with it (day2/DSC1.ARW):
            # a shoot's days repeat the camera's names.
            labels={src: (below / src.name).as_posix() for src, below in scan.subfolders.items()},
        )
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
    return report


def _load_network(
    model: Network | str | Path | None,
    denoise: DenoiseOptions | None,
    device: str,
    noise_profiles: str | Path | None,
) -> tuple[Network | None, NoiseDatabase | None, str]:
    """The batch's network, the noise profiles it uses, and how each file's line names it."""
    if model is None:
        return None, None, ""
    from darkraw.nn.enhance import is_denoiser, load_network
    from darkraw.synth.noiselevel import load_noise_profiles

    precision = "auto" if denoise is None else denoise.precision.value
    network = load_network(model, device=device, precision=precision)
    name = (
        model
        if isinstance(model, str)
        else Path(model).name
        if isinstance(model, Path)
        else type(network).__name__
    )
    chosen = getattr(network, "precision", "fp32")
    if chosen in ("int8", "bf16"):
        name = f"{name} ({chosen})"  # chosen by the CPU, so each file's line says which ran
    database = None
    if is_denoiser(network) and noise_profiles is not None:
        database = load_noise_profiles(noise_profiles)
    return network, database, name


def _enhance_pairs(
    pairs: list[tuple[Path, Path]],
    todo: list[int],
    read_ahead: Callable[[Path], Future[RawImage]],
    reads: dict[int, Future[RawImage]],
    report: BatchReport,
    *,
    options: ClassicOptions,
    bare: BareMosaicSpec | None,
    log: Callable[[str], None],
    progress: bool | None,
    overwrite: bool,
    network: Network | None,
    name: str,
    inference: InferenceOptions | None,
    denoise: DenoiseOptions | None,
    database: NoiseDatabase | None,
    jpeg_quality: int,
    labels: Mapping[Path, str],
) -> None:
    """The batch's loop: each pair in turn, the next file read ahead, and each file's picture
    but the last rendered in a second thread while the next goes through the network.

    The network's stage and LibRaw's rendering each leave part of the cores idle (LibRaw's
    serial steps, the network's synchronisation); together they keep both busy: batches of 8
    12-Mpixel frames took a median 14.62 s against 15.00 s one stage after the other (11
    alternating pairs), the cores 92-93 % busy against 88 % (``docs/speed-log.md``); the
    network runs slower beside LibRaw, so the gain is less than the idle time filled. One file
    at a time is rendered, so memory stays bounded; outputs are written in this thread, which
    Ctrl-C and SIGTERM interrupt, and lines and errors come in the files' order.
    """
    # The bar counts files finished (written, skipped or failed), not files begun.
    bar = tqdm(
        total=len(pairs),
        desc="enhance",
        unit="file",
        disable=(not progress) if progress is not None else None,
    )
    # Messages go through the bar while it is drawn, so they do not tear it.
    emit = log if bar.disable else bar.write
    # Beside the bar, where the file being worked on has got to: a file can take tens of
    # seconds (a large X-Trans frame, many passes, BM3D), too long for a bar that does not move.
    steps_shown = (
        contextlib.nullcontext() if bar.disable else listening(lambda t: bar.set_postfix_str(t))
    )
    written_now, following = set(todo), dict(itertools.pairwise(todo))
    # Like the reader, the rendering is waited for, never abandoned, however this ends; it
    # writes no file, so a stop loses at most the picture it was rendering.
    renderer = _renderer()
    pending: tuple[Path, Path, StartedFile, Future[Result]] | None = None

    def settle() -> None:
        """Write the file being rendered, once it is, and report it."""
        nonlocal pending
        if pending is None:
            return
        src, dst, started, rendering = pending
        pending = None
        try:
            result = rendering.result()
            with part(labels.get(src, src.name)):
                step("writing")
            started.write(result)
        except Exception as err:  # a file's failure is reported; anything else raised again
            _report_failure(report, src, err)
            bar.update()
            return
        report.written.append(dst)
        chosen = "auto " if options.ratio is None else ""
        emit(f"{src} -> {dst}  (ratio {chosen}{result.ratio:.1f}, {_describe(result, name)})")
        bar.update()

    try:
        with steps_shown:
            for i, (src, dst) in enumerate(pairs):
                if i not in written_now:
                    settle()
                    report.skipped.append(dst)
                    emit(f"{dst}: exists, skipped (use --overwrite to replace it)")
                    bar.update()
                    continue
                reading = reads.pop(i, None) or read_ahead(src)
                if i in following:
                    ahead = following[i]
                    reads[ahead] = read_ahead(pairs[ahead][0])
                try:
                    with part(labels.get(src, src.name)):
                        if not reading.done():
                            step("reading")
                        started = start_file(
                            src,
                            dst,
                            options,
                            bare,
                            model=network,
                            inference=inference,
                            denoise=denoise,
                            database=database,
                            jpeg_quality=jpeg_quality,
                            raw=reading.result(),
                        )
                except Exception as err:  # as in settle
                    settle()
                    _report_failure(report, src, err)
                    bar.update()
                    continue
                settle()
                # The last file's picture has no network work to overlap: it is rendered here,
                # where LibRaw's input and the checks spread over the cores (thread_map runs in
                # order in darkraw's own threads).
                if i in following:
                    rendering = renderer.submit(started.render)
                else:
                    with part(labels.get(src, src.name)):
                        step("rendering")
                    rendering = _run_now(started.render)
                pending = (src, dst, started, rendering)
            settle()
            bar.set_postfix_str("", refresh=False)  # the last line without a stale step
    finally:
        if pending is not None:
            wait([pending[3]])
        bar.close()


def _run_now(function: Callable[[], Result]) -> Future[Result]:
    """``function()`` run in this thread, as a finished future (its result or its error)."""
    future: Future[Result] = Future()
    try:
        future.set_result(function())
    except Exception as err:  # given to whoever takes the result, as a pool's future does
        future.set_exception(err)
    return future


_RENDERER: ThreadPoolExecutor | None = None
_RENDERER_LOCK = threading.Lock()


def _renderer() -> ThreadPoolExecutor:
    """The one thread of the process that renders batches' pictures (LibRaw's, in OpenMP).

    OpenMP keeps a team of threads for each thread that starts parallel work and tears it down
    when that thread ends; one long-lived rendering thread makes its team once, as the main
    thread did when it rendered, instead of once per batch from a thread that then ends.
    """
    global _RENDERER
    with _RENDERER_LOCK:
        if _RENDERER is None:
            _RENDERER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="darkraw-render")
        return _RENDERER


def _report_failure(report: BatchReport, src: Path, err: Exception) -> None:
    """Count a file that failed and say why on stderr; an error that is no file's fault (a bug,
    Ctrl-C) is raised again."""
    if isinstance(err, DarkrawError):
        report.failed.append((src, err.problem))
        tqdm.write(f"darkraw: error: {err}", file=sys.stderr)
    elif isinstance(err, ValueError | MemoryError):
        report.failed.append((src, str(err) or type(err).__name__))
        tqdm.write(f"darkraw: error: {src}: {err}", file=sys.stderr)
    else:
        raise err


def _describe(result: Result, model: str) -> str:
    """What rendered a file, for its line in the log."""
    if isinstance(result, ClassicResult):
        return f"classic, denoise {result.denoiser.value}, wb {_fmt_gains(result.wb_gains)}"
    from darkraw.nn.rawdenoise import DenoisedFrame, DenoisedResult

    if isinstance(result, DenoisedResult | DenoisedFrame):
        text = f"model {model}, strength {result.strength:g}, noise {result.noise.describe()}"
        if result.passes > 1:
            text += f", {result.passes} passes ({result.passes_note})"
        if any(result.black_offset):
            offsets = "/".join(f"{v:.1f}" for v in result.black_offset)
            text += f", black offset {offsets} DN (R/G1/B/G2)"
        return text
    return f"model {model}"


def _fmt_gains(gains: tuple[float, float, float]) -> str:
    return "/".join(f"{g:.2f}" for g in gains)
