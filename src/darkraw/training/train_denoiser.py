"""Training the raw denoiser (:mod:`darkraw.nn.denoiser`) on simulated pairs of many cameras.

The loss is measured where the picture is judged: both the network's planes and the clean ones
are rendered with the clean frame's white balance and colour matrix through the sRGB curve
(:func:`darkraw.nn.model.raw_tone`) and compared by L1, plus a smaller L1 in linear raw that
keeps highlights and the G1/G2 balance anchored. In linear light an L1 loss spends itself on
highlights while the picture's errors show in the shadows (the reasoning of SID's sRGB loss).
Two optional terms keep the correction from carrying low-frequency content, which the rendered
term misses in deep shadows (it clips below black, where a frame at 1-2 electrons a sample
lies): ``mean_weight`` times the L1 size of the local mean that the network's mean window
removes from its correction (:meth:`RawDenoiser.raw_correction`; ideally about zero, as the
noise is zero-mean), and ``coarse_weight`` times L1 of the ``coarse_pool`` x ``coarse_pool``
block means of (output - clean) in linear raw.
Adam with a short warm-up and a cosine decay; batches of ``batch_size`` crops.

A smaller network can learn from a trained one (``teacher``, knowledge distillation): the same
rendered and raw L1, against the teacher's output for the same noisy input, is added with
``teacher_weight``. The teacher's output is a dense, noise-free target that a network of another
shape (a narrower first level, ``model.first_width``) can approach far sooner than the clean
frame alone shows it the way.

A run lives in one folder: ``config.yaml``, ``log.jsonl`` (training loss per ``log_every``
steps, validation per ``val_every``) and ``checkpoints/step_NNNNNNN.safetensors``. The folder
must be new, empty, or an earlier run of the same config; a stopped run continues with
``resume=True`` from its newest checkpoint and ends with the weights an uninterrupted run would
have had (every pair is a function of its index, the learning rate of its step).

Fine-tuning on one's own camera (``darkraw finetune``): with ``data.kind: sid`` the pairs are
real, a dark short exposure and a bright long exposure of each scene named by SID's list files
(:class:`~darkraw.training.denoise_real.RealDenoisePairs`, whose input is exactly what inference
gives the network), and ``init_from`` names the network to start from; ``transfer`` says which of
its weights train: ``full`` (all), ``head`` (only the output convolution ``out``) or ``decoder``
(the encoder frozen).
"""

from __future__ import annotations

import enum
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from darkraw.config import dump_yaml, from_dict, to_dict
from darkraw.errors import DarkrawError, OutputError
from darkraw.nn.checkpoint import (
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from darkraw.nn.denoiser import DenoiserConfig, RawDenoiser, box_mean, build_denoiser
from darkraw.nn.model import raw_tone
from darkraw.nn.precision import Precision, autocast_dtype
from darkraw.raw.fileio import atomic_output
from darkraw.synth.sources import collect_sources
from darkraw.training.denoise_pairs import DenoisePairConfig, DenoisePairs
from darkraw.training.denoise_real import RealDenoisePairs, sid_pair_split
from darkraw.training.train import MAX_THREADS, DataKind, peak_rss_mib, psnr, split_sources

#: The ``task`` entry of a denoiser's training config (``darkraw train`` dispatches on it).
TASK = "denoise"


class DenoiserTransfer(enum.Enum):
    """Which of the ``init_from`` weights train (the rest stay as loaded)."""

    #: Every weight.
    FULL = "full"
    #: Only the output convolution ``out``.
    HEAD = "head"
    #: The decoder, its upsampling and the output convolution; the encoder is frozen.
    DECODER = "decoder"


#: Parameter-name prefixes that train under each strategy ("" is every parameter).
_TRAINED = {
    DenoiserTransfer.FULL: ("",),
    DenoiserTransfer.HEAD: ("out.",),
    DenoiserTransfer.DECODER: ("upsample.", "decoder.", "out."),
}


@dataclass(frozen=True)
class DenoiserDataConfig:
    """Where a denoiser's pairs come from.

    Attributes:
        kind: ``synthetic`` (simulated from the photos of ``train``, the default) or ``sid``
            (real pairs from SID list files).
        sid_train_list: SID list file of the training pairs (``kind: sid``).
        sid_val_list: SID list file of validation pairs; "" holds out a ``val_fraction`` of
            the training list's scenes instead.
        sid_root: folder the lists' ``./Sony/...`` paths are relative to ("" guesses).
        sid_fraction: deterministic share of the training pairs used; subsets are nested.
        sid_per_ratio: instead, this many pairs per ratio (LED uses 2); 0 uses the fraction.
        sid_cache: folder where each file's prepared planes are kept ("" keeps none).
        augment: mirror and transpose training crops (as whole RGGB mosaics).
    """

    kind: DataKind = DataKind.SYNTHETIC
    sid_train_list: str = ""
    sid_val_list: str = ""
    sid_root: str = ""
    sid_fraction: float = 1.0
    sid_per_ratio: int = 0
    sid_cache: str = "runs/denoiser_sid_cache"
    augment: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", DataKind(self.kind))
        if not 0 < self.sid_fraction <= 1 or self.sid_per_ratio < 0:
            raise ValueError("sid_fraction must be in (0, 1] and sid_per_ratio >= 0")
        if self.kind is DataKind.SID and not self.sid_train_list:
            raise ValueError("data.kind sid needs data.sid_train_list")


@dataclass(frozen=True)
class DenoiserTrainConfig:
    """A denoiser training run (``darkraw train CONFIG.yaml`` with ``task: denoise``).

    Attributes:
        task: always ``denoise``.
        train: folders or files of clean photos (or raw files).
        val_fraction: share of ``train`` held out for validation (by a hash of each name).
        val_items: validation crops (centre crops, ratios in turn).
        pairs: how pairs are made.
        model: the network.
        steps: optimizer steps in all.
        batch_size: crops per step.
        lr, lr_final: Adam's rate after warm-up, and at the end of the cosine decay.
        warmup: steps of linear warm-up.
        raw_weight: weight of the linear-raw L1 term beside the rendered one.
        mean_weight: weight of an L1 penalty on the local mean that the network's mean window
            removes from its correction (linear raw; needs ``model.mean_window``); 0 is off.
        coarse_weight: weight of L1 on the ``coarse_pool`` x ``coarse_pool`` block means of
            (output - clean) in linear raw: the low-frequency error, blotches; 0 is off.
        coarse_pool: side of those blocks, packed pixels.
        render_clip_black: the rendered term clips below black as the picture does (phases
            1-5); ``False`` continues the tone curve below black as a line, so that a dark
            frame's errors there (half its samples at 1-2 electrons a sample) count too.
        rendered_l2_weight: weight of the mean squared error after rendering, beside its L1
            (0 is off): L1 lets a few large errors (bright blobs) cost little.
        seed: seeds the weights and every pair.
        precision: ``auto`` (bf16 where fast), ``bf16`` or ``fp32``.
        threads: CPU threads for torch (0 keeps torch's choice).
        workers: data-loading processes.
        out_dir: the run's folder.
        log_every, val_every, checkpoint_every: intervals in steps.
        keep_checkpoints: newest checkpoints kept, besides every ``keep_every``-th step's.
        keep_every: checkpoints at multiples of this are never deleted (for weight averaging);
            0 keeps only the newest.
        init_from: start from these weights (a checkpoint or model file of a denoiser of the
            same shape, or a bundled model's name); "" starts afresh.
        data: where pairs come from: simulated from ``train`` (the default) or real SID pairs
            (``data.kind: sid``; then ``train`` and ``pairs`` except ``pairs.crop.patch`` are
            not used, and ``val_fraction`` holds out scenes when there is no validation list).
        transfer: which weights train: ``full``, ``head`` (the output convolution) or
            ``decoder`` (the encoder frozen); other than ``full`` needs ``init_from``.
        teacher: a trained denoiser (checkpoint, model file or bundled name) whose output the
            network learns to give too; "" for none.
        teacher_weight: weight of the rendered and raw L1 against the teacher's output, beside
            the loss against the clean frame; needs ``teacher``.
    """

    task: str = TASK
    train: tuple[str, ...] = ()
    val_fraction: float = 0.08
    val_items: int = 32
    pairs: DenoisePairConfig = field(default_factory=DenoisePairConfig)
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    steps: int = 20000
    batch_size: int = 8
    lr: float = 1e-3
    lr_final: float = 1e-5
    warmup: int = 200
    raw_weight: float = 0.25
    mean_weight: float = 0.0
    coarse_weight: float = 0.0
    coarse_pool: int = 4
    render_clip_black: bool = True
    rendered_l2_weight: float = 0.0
    seed: int = 0
    precision: Precision = Precision.AUTO
    threads: int = 0
    workers: int = 1
    out_dir: str = "runs/denoiser"
    log_every: int = 50
    val_every: int = 1000
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    keep_every: int = 0
    init_from: str = ""
    data: DenoiserDataConfig = field(default_factory=DenoiserDataConfig)
    transfer: DenoiserTransfer = DenoiserTransfer.FULL
    teacher: str = ""
    teacher_weight: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision(self.precision))
        object.__setattr__(self, "transfer", DenoiserTransfer(self.transfer))
        if self.transfer is not DenoiserTransfer.FULL and not self.init_from:
            raise ValueError(f"transfer {self.transfer.value} needs init_from (weights to keep)")
        if self.task != TASK:
            raise ValueError(f"task must be {TASK!r}, got {self.task!r}")
        if min(self.steps, self.batch_size, self.log_every, self.val_every) < 1:
            raise ValueError("steps, batch_size and the intervals must be >= 1")
        if min(self.checkpoint_every, self.keep_checkpoints, self.val_items) < 1:
            raise ValueError("checkpoint_every, keep_checkpoints and val_items must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.lr > 0 or not self.lr_final > 0 or self.warmup < 0 or self.raw_weight < 0:
            raise ValueError("lr and lr_final must be > 0, warmup and raw_weight >= 0")
        if bool(self.teacher) != (self.teacher_weight > 0):
            raise ValueError("teacher and teacher_weight > 0 go together")
        for name in ("mean_weight", "coarse_weight", "rendered_l2_weight", "teacher_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value}")
        if self.coarse_pool < 1:
            raise ValueError(f"coarse_pool must be >= 1, got {self.coarse_pool}")
        want = 9 if self.pairs.cfa == "xtrans" else 4
        if self.data.kind is DataKind.SYNTHETIC and self.model.planes != want:
            raise ValueError(
                f"pairs.cfa {self.pairs.cfa} makes {want} packed planes; model.planes is "
                f"{self.model.planes}"
            )
        if self.mean_weight > 0 and not self.model.mean_window:
            raise ValueError("mean_weight needs a network with a mean window (model.mean_window)")
        if self.workers < 0 or self.keep_every < 0:
            raise ValueError("workers and keep_every must be >= 0")
        if not 0 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads must be from 0 to {MAX_THREADS}, got {self.threads}")


def is_denoiser_task(data: object) -> bool:
    """Whether a loaded YAML config (or a checkpoint's config) is a denoiser run's."""
    return isinstance(data, dict) and data.get("task") == TASK


def learning_rate(config: DenoiserTrainConfig, step: int) -> float:
    """Rate of 1-based ``step``: linear warm-up, then cosine from ``lr`` to ``lr_final``."""
    if step <= config.warmup:
        return config.lr * step / max(config.warmup, 1)
    span = max(config.steps - config.warmup, 1)
    t = min(1.0, (step - config.warmup) / span)
    return config.lr_final + 0.5 * (config.lr - config.lr_final) * (1 + math.cos(math.pi * t))


def render_planes_torch(
    planes: torch.Tensor, gains: torch.Tensor, matrix: torch.Tensor, *, clip_black: bool = True
) -> torch.Tensor:
    """Packed planes as the picture shows them: white balance, colour matrix, sRGB curve.

    Bayer ``(N, 4, h, w)`` RGGB planes: each green with the red and blue of its tile. X-Trans
    ``(N, 9, h, w)`` planes (R, R, G, G, G, G, G, B, B): each green with a red and a blue of its
    3x3 block, so that every sample is judged in colour.

    Args:
        clip_black: clip below black as the picture does; ``False`` continues the curve below
            black as a line of its slope at black (:func:`~darkraw.nn.model.raw_tone`), so that
            errors there count as much as just above it.

    Returns:
        ``(N, 6, h, w)``: the (R, G1, B) and (R, G2, B) triplets rendered; for X-Trans
        ``(N, 15, h, w)``, five triplets.
    """
    channels = planes.float().unbind(1)
    if len(channels) == 4:
        r, g1, b, g2 = channels
        triplets = [(r, g1, b), (r, g2, b)]
    elif len(channels) == 9:
        reds, greens, blues = channels[:2], channels[2:7], channels[7:]
        triplets = [(reds[k % 2], g, blues[k % 2]) for k, g in enumerate(greens)]
    else:
        raise ValueError(f"expected 4 (Bayer) or 9 (X-Trans) planes, got {len(channels)}")
    out = []
    for triplet in triplets:
        rgb = torch.stack(triplet, 1) * gains[:, :, None, None]
        rgb = torch.einsum("nij,njhw->nihw", matrix, rgb)
        # Clipped as the picture clips (below black only if asked); the linear-raw term keeps
        # what lies outside anchored.
        out.append(raw_tone(rgb.clamp(0.0, 1.0) if clip_black else rgb.clamp_max(1.0)))
    return torch.cat(out, 1)


def denoiser_loss(
    output: torch.Tensor,
    batch: dict[str, torch.Tensor],
    raw_weight: float,
    *,
    removed: torch.Tensor | None = None,
    mean_weight: float = 0.0,
    coarse_weight: float = 0.0,
    coarse_pool: int = 4,
    clip_black: bool = True,
    l2_weight: float = 0.0,
) -> torch.Tensor:
    """L1 after rendering, plus ``raw_weight`` times L1 in linear raw, plus the optional
    low-frequency terms: ``mean_weight`` times :func:`removed_mean_penalty` of ``removed`` (the
    local mean the mean window took out of the correction) and ``coarse_weight`` times
    :func:`coarse_penalty`. ``clip_black``: as :func:`render_planes_torch`'s; ``l2_weight``
    times the mean squared error after rendering, which weighs a few large errors (bright
    blobs) more than L1 does."""
    target = batch["target"]
    gains, matrix = batch["gains"], batch["matrix"]
    shown = render_planes_torch(output, gains, matrix, clip_black=clip_black)
    wanted = render_planes_torch(target, gains, matrix, clip_black=clip_black)
    rendered = F.l1_loss(shown, wanted)
    if l2_weight > 0:
        rendered = rendered + l2_weight * F.mse_loss(shown, wanted)
    loss = rendered + raw_weight * F.l1_loss(output.float(), target)
    if mean_weight > 0:
        if removed is None:
            raise ValueError("mean_weight needs the removed mean of the correction")
        loss = loss + mean_weight * removed_mean_penalty(removed)
    if coarse_weight > 0:
        loss = loss + coarse_weight * coarse_penalty(output, target, coarse_pool)
    return loss


def recipe_loss(
    output: torch.Tensor,
    batch: dict[str, torch.Tensor],
    config: DenoiserTrainConfig,
    removed: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`denoiser_loss` with the weights ``config`` sets (training and QAT share it)."""
    return denoiser_loss(
        output,
        batch,
        config.raw_weight,
        removed=removed,
        mean_weight=config.mean_weight,
        coarse_weight=config.coarse_weight,
        coarse_pool=config.coarse_pool,
        clip_black=config.render_clip_black,
        l2_weight=config.rendered_l2_weight,
    )


def removed_mean_penalty(removed: torch.Tensor) -> torch.Tensor:
    """Mean absolute value of the local mean removed from the correction (linear raw).

    The mean window makes this part of the correction invisible to every other term, so without
    a penalty it wanders (phase 3's later steps: 0.05 of white, three times the noise of a frame
    at 1-2 electrons a sample) and its unevenness within the window leaks into the output as
    blotches. An ideal correction's local mean is that of the noise, about zero."""
    return removed.float().abs().mean()


def coarse_penalty(output: torch.Tensor, target: torch.Tensor, pool: int) -> torch.Tensor:
    """L1 of the ``pool`` x ``pool`` block means of ``output - target`` (linear raw; a partial
    block at the edge is left out): the error at low frequencies, which a per-sample L1 weighs
    little beside the fine grain and the rendered term does not see below black."""
    error = output.float() - target.float()
    if min(error.shape[-2:]) < pool:
        return error.mean(dim=(-2, -1)).abs().mean()
    return F.avg_pool2d(error, pool).abs().mean()


def forward_parts(model: RawDenoiser, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model(x)`` and the local mean its mean window removed from the correction (``None``
    for a network without a window), in one pass: the output is exactly ``model(x)``'s."""
    if not model.config.mean_window:
        return model(x), None
    raw = model.raw_correction(x)
    removed = box_mean(raw, model.config.mean_window)
    return x[:, : model.config.planes].float() + (raw - removed), removed


@dataclass(frozen=True)
class DenoiserSummary:
    """How a run ended."""

    out_dir: Path
    step: int
    last_loss: float
    val: dict[str, float]
    steps_per_s: float
    peak_rss_mib: float


class _StepBatches(Sampler[list[int]]):
    """Batches of item indices for steps ``start+1 .. steps``: step ``s`` reads items
    ``(s-1)*batch .. s*batch - 1``, so a resumed run reads what an uninterrupted one would."""

    def __init__(self, start: int, steps: int, batch: int) -> None:
        self.start, self.steps, self.batch = start, steps, batch

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield list(range(step * self.batch, (step + 1) * self.batch))

    def __len__(self) -> int:
        return self.steps - self.start


def _prepare_folder(out: Path, config: DenoiserTrainConfig, resume: bool) -> None:
    """Check the run folder and write its config.

    Raises:
        OutputError: the folder holds other files, or a run of another config.
    """
    text = dump_yaml(config)
    cfg_file = out / "config.yaml"
    if out.exists() and not out.is_dir():
        raise OutputError(out, "the run folder is a file")
    if out.is_dir() and any(out.iterdir()):
        if not cfg_file.is_file():
            raise OutputError(out, "not empty and not a darkraw run; give a new or empty folder")
        if cfg_file.read_text() != text and not _same_config(cfg_file, config):
            raise OutputError(out, "holds a run of another config; give a new or empty folder")
        if not resume:
            raise OutputError(out, "holds this run already; add --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    if not cfg_file.is_file():
        with atomic_output(cfg_file) as tmp:
            tmp.write_text(text)


def _same_config(cfg_file: Path, config: DenoiserTrainConfig) -> bool:
    """Whether a run folder's config file, written before later options existed (their keys
    missing, so the text differs), resolves to ``config``."""
    import yaml

    try:
        return load_denoiser_config(yaml.safe_load(cfg_file.read_text())) == config
    except (ValueError, TypeError, yaml.YAMLError):
        return False


def train_denoiser(
    config: DenoiserTrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> DenoiserSummary:
    """Train (or continue) a denoiser run; see the module docstring.

    Args:
        resume: continue from the newest checkpoint in the run folder.
        stop_after: stop (with a checkpoint) after this step, as a kill would, for tests.
    """
    out = Path(config.out_dir)
    _prepare_folder(out, config, resume)
    ckpt_dir = out / "checkpoints"
    with_map = config.model.noise_input == "map"
    data: DenoisePairs | RealDenoisePairs
    val_data: DenoisePairs | RealDenoisePairs
    if config.data.kind is DataKind.SID:
        data, val_data = real_datasets(config, with_map=with_map)
    else:
        data, val_data = _synthetic_datasets(config, with_map=with_map)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device("cpu")
    amp = autocast_dtype(config.precision, device)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_denoiser(config.model, generator)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = 0
    newest = latest_checkpoint(ckpt_dir) if resume else None
    if newest is None and config.init_from:
        _start_from(model, config.init_from)
    if newest is not None:
        ckpt = load_checkpoint(newest)
        model.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
        start = ckpt.step
    freeze(model, config.transfer)
    teacher = _teacher(config.teacher) if config.teacher else None
    loader = DataLoader(
        data,
        batch_sampler=_StepBatches(start, config.steps, config.batch_size),
        num_workers=config.workers,
        persistent_workers=False,
    )
    log_path = out / "log.jsonl"
    t0, last_loss, val = time.perf_counter(), float("nan"), {}
    losses: list[float] = []
    step = start
    bar = tqdm(total=config.steps, initial=start, disable=not progress, unit="step")
    model.train()
    for batch in loader:
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        x = batch["input"].contiguous(memory_format=torch.channels_last)
        removed = None
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            if config.mean_weight > 0:
                output, removed = forward_parts(model, x)
            else:
                output = model(x)
            if teacher is not None:
                with torch.no_grad():
                    taught = teacher(x)
        loss = recipe_loss(output, batch, config, removed)
        if teacher is not None:
            loss = loss + config.teacher_weight * teacher_loss(output, taught, batch, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(loss.item())
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            last_loss = float(np.mean(losses))
            losses.clear()
            entry = {"step": step, "loss": last_loss, "lr": learning_rate(config, step)}
            entry["steps_per_s"] = (step - start) / (time.perf_counter() - t0)
            _log(log_path, entry, on_log)
            bar.set_postfix(loss=f"{last_loss:.4f}")
        if step % config.val_every == 0 or step == config.steps:
            val = validate(model, val_data, amp)
            model.train()
            _log(log_path, {"step": step, **val}, on_log)
        stopping = stop_after is not None and step >= stop_after
        if step % config.checkpoint_every == 0 or step == config.steps or stopping:
            _save(ckpt_dir, model, optimizer, step, config)
        if stopping:
            break
    bar.close()
    elapsed = time.perf_counter() - t0
    return DenoiserSummary(
        out_dir=out,
        step=step,
        last_loss=last_loss,
        val=val,
        steps_per_s=(step - start) / elapsed if elapsed > 0 else 0.0,
        peak_rss_mib=peak_rss_mib(),
    )


def _synthetic_datasets(
    config: DenoiserTrainConfig, *, with_map: bool
) -> tuple[DenoisePairs, DenoisePairs]:
    """Pairs simulated from ``config.train``, a ``val_fraction`` of its files held out."""
    sources = collect_sources([Path(p) for p in config.train])
    if not sources:
        raise DarkrawError(None, f"no training sources found in {list(config.train)}")
    train_files, val_files = split_sources(sources, config.val_fraction)
    if not train_files or not val_files:
        raise DarkrawError(None, f"{len(sources)} sources are too few to hold some out")
    data = DenoisePairs(
        train_files,
        config.pairs,
        seed=config.seed,
        length=config.steps * config.batch_size,
        with_map=with_map,
    )
    val_data = DenoisePairs(
        val_files,
        replace(config.pairs, told_error=0.0),
        seed=config.seed,
        length=config.val_items,
        train=False,
        with_map=with_map,
    )
    return data, val_data


def real_datasets(
    config: DenoiserTrainConfig, *, with_map: bool = True
) -> tuple[RealDenoisePairs, RealDenoisePairs]:
    """Real training and validation pairs of a ``data.kind: sid`` config
    (:func:`~darkraw.training.denoise_real.sid_pair_split`), crops of ``pairs.crop.patch``."""
    data = config.data
    train_pairs, val_pairs = sid_pair_split(
        data.sid_train_list,
        data.sid_val_list or None,
        root=data.sid_root or None,
        fraction=data.sid_fraction,
        per_ratio=data.sid_per_ratio,
        val_fraction=config.val_fraction,
        val_items=config.val_items,
        seed=config.seed,
    )
    patch = config.pairs.crop.patch
    train = RealDenoisePairs(
        train_pairs,
        data.sid_cache or None,
        patch=patch,
        seed=config.seed,
        length=config.steps * config.batch_size,
        augment=data.augment,
        with_map=with_map,
    )
    val = RealDenoisePairs(
        val_pairs,
        data.sid_cache or None,
        patch=patch,
        seed=config.seed,
        train=False,
        with_map=with_map,
    )
    return train, val


def freeze(model: RawDenoiser, transfer: DenoiserTransfer) -> None:
    """Let only the weights ``transfer`` trains take gradients (in place)."""
    trained = _TRAINED[DenoiserTransfer(transfer)]
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(trained)


def start_network(spec: str) -> RawDenoiser:
    """The denoiser named by ``spec`` (a checkpoint, a model file or a bundled model's name).

    Raises:
        DarkrawError: it holds another network.
    """
    from darkraw.nn.infer import load_model
    from darkraw.nn.modelfiles import model_source

    start = load_model(model_source(spec))
    if not isinstance(start, RawDenoiser):
        raise DarkrawError(spec, "holds another network; the raw denoiser's training needs one")
    return start


def finetune_config(
    config: DenoiserTrainConfig,
    *,
    init_from: str = "default",
    transfer: DenoiserTransfer | str = DenoiserTransfer.FULL,
    fraction: float | None = None,
    per_ratio: int | None = None,
    model_from_start: bool = True,
) -> DenoiserTrainConfig:
    """``config`` as ``darkraw finetune`` runs it: real pairs, starting from ``init_from``.

    Args:
        config: a config with ``data.kind: sid``.
        init_from: the network to start from (the bundled ``default`` unless given).
        transfer: ``full``, ``head`` or ``decoder``.
        fraction, per_ratio: override ``data.sid_fraction`` / ``data.sid_per_ratio``.
        model_from_start: take the network's shape (its mean window included) from
            ``init_from``, so that a config need not repeat it.

    Raises:
        ValueError: not SID data, or a strategy that does not apply to this network.
    """
    if config.data.kind is not DataKind.SID:
        raise ValueError("finetune needs data.kind: sid and SID list files")
    try:
        strategy = DenoiserTransfer(transfer)
    except ValueError:
        shown = getattr(transfer, "value", transfer)
        choices = ", ".join(t.value for t in DenoiserTransfer)
        raise ValueError(
            f"strategy {shown} does not apply to the raw denoiser; use one of {choices}"
        ) from None
    data = config.data
    if fraction is not None:
        data = replace(data, sid_fraction=fraction)
    if per_ratio is not None:
        data = replace(data, sid_per_ratio=per_ratio)
    model = start_network(init_from).config if model_from_start else config.model
    return replace(config, data=data, init_from=init_from, transfer=strategy, model=model)


def teacher_loss(
    output: torch.Tensor,
    taught: torch.Tensor,
    batch: dict[str, torch.Tensor],
    config: DenoiserTrainConfig,
) -> torch.Tensor:
    """The rendered and raw L1 of ``output`` against ``taught``, the teacher's output for the
    same input, with the clean frame's white balance and colour matrix."""
    target = {**batch, "target": taught.detach().float()}
    return denoiser_loss(output, target, config.raw_weight, clip_black=config.render_clip_black)


def _teacher(spec: str) -> RawDenoiser:
    """The teacher network (:func:`~darkraw.nn.infer.load_model` gives it in eval mode and
    without gradients), channels-last as the trained network runs."""
    from darkraw.nn.infer import load_model
    from darkraw.nn.modelfiles import model_source

    teacher = load_model(model_source(spec))
    if not isinstance(teacher, RawDenoiser):
        raise DarkrawError(spec, "the teacher must be a raw denoiser")
    teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return teacher


def _start_from(model: RawDenoiser, spec: str) -> None:
    """Load a denoiser's weights of the same shape into ``model``."""
    from darkraw.nn.infer import load_model
    from darkraw.nn.modelfiles import model_source

    start = load_model(model_source(spec))
    # The mean window has no weights: a network trained without it starts one with it.
    if (
        not isinstance(start, RawDenoiser)
        or replace(start.config, mean_window=model.config.mean_window) != model.config
    ):
        raise DarkrawError(spec, f"holds another network; init_from needs a {model.config}")
    model.load_state_dict(start.state_dict())


def validate(
    model: RawDenoiser, data: DenoisePairs | RealDenoisePairs, amp: torch.dtype | None
) -> dict[str, float]:
    """Mean PSNR on the validation items: raw (linear planes) and rendered, for the network's
    output and for the noisy input as it is."""
    model.eval()
    sums = {"val_raw_psnr": 0.0, "val_raw_psnr_input": 0.0, "val_psnr": 0.0, "val_psnr_input": 0}
    planes = model.config.planes
    with torch.inference_mode():
        for i in range(len(data)):
            item = data[i]
            batch = {k: v[None] for k, v in item.items()}
            x = batch["input"]
            with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                out = model(x).float()
            noisy = x[:, :planes]
            target, gains, matrix = batch["target"], batch["gains"], batch["matrix"]
            sums["val_raw_psnr"] += float(psnr(out, target))
            sums["val_raw_psnr_input"] += float(psnr(noisy, target))
            ref = render_planes_torch(target, gains, matrix)
            sums["val_psnr"] += float(psnr(render_planes_torch(out, gains, matrix), ref))
            sums["val_psnr_input"] += float(psnr(render_planes_torch(noisy, gains, matrix), ref))
    return {k: v / len(data) for k, v in sums.items()}


def _log(
    path: Path, entry: dict[str, Any], on_log: Callable[[dict[str, Any]], None] | None
) -> None:
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    if on_log is not None:
        on_log(entry)


def _save(
    ckpt_dir: Path,
    model: RawDenoiser,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: DenoiserTrainConfig,
) -> None:
    save_checkpoint(
        ckpt_dir / checkpoint_name(step),
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        step=step,
        config=to_dict(config),
    )
    found = sorted(ckpt_dir.glob("step_*.safetensors"))
    kept_every = {p for p in found if config.keep_every and _step_of(p) % config.keep_every == 0}
    rolling = [p for p in found if p not in kept_every]
    for old in rolling[: -config.keep_checkpoints]:
        old.unlink(missing_ok=True)


def _step_of(path: Path) -> int:
    return int(path.stem.split("_")[1])


def load_denoiser_config(data: dict[str, Any]) -> DenoiserTrainConfig:
    """A :class:`DenoiserTrainConfig` from a YAML file's content or a checkpoint's config."""
    return from_dict(DenoiserTrainConfig, data)


__all__: Sequence[str] = [
    "TASK",
    "DenoiserDataConfig",
    "DenoiserSummary",
    "DenoiserTrainConfig",
    "DenoiserTransfer",
    "coarse_penalty",
    "denoiser_loss",
    "finetune_config",
    "forward_parts",
    "freeze",
    "is_denoiser_task",
    "learning_rate",
    "load_denoiser_config",
    "real_datasets",
    "removed_mean_penalty",
    "render_planes_torch",
    "start_network",
    "train_denoiser",
]
