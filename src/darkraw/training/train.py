"""Training the SID U-Net on synthetic pairs made on the fly.

The recipe is See-in-the-Dark's (Chen et al., CVPR 2018): L1 loss, Adam, batch 1, random crops
with flips and transposes, learning rate 1e-4 then 1e-5 for the second half; an SSIM term can
be mixed into the loss (``optim.ssim_weight``) as in Zhao et al. (IEEE TCI 2017). The pairs
come from :class:`darkraw.training.dataset.SyntheticPairs`, so memory stays flat whatever the
number of photos.

A run lives in one folder: ``config.yaml`` (the resolved config), ``log.jsonl`` (one line per
logged step and per validation), ``curves.png``, ``samples/`` (input | classic | output |
target for a few validation crops) and ``checkpoints/step_NNNNNNN.safetensors``. A run killed
at any point continues with ``resume=True`` from its newest complete checkpoint and ends with
the weights an uninterrupted run would have had: every pair is a function of its index, the
learning rate of its step, and the checkpoint holds the optimizer state.

Under ``torchrun`` each process trains on its own share of the pairs with
DistributedDataParallel (gloo on CPU, nccl on GPU); rank 0 validates and writes the files.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import math
import os
import re
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from darkraw.classic.pipeline import GammaCurve, gamma_decode
from darkraw.config import ConfigError, dump_yaml, from_dict, to_dict
from darkraw.errors import CheckpointError, DarkrawError, OutputError
from darkraw.nn.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from darkraw.nn.model import (
    FC_PREFIX,
    ModelConfig,
    SIDUNet,
    build_model,
    fc_parameter_names,
    raw_tail_from_srgb,
    raw_tone,
    reset_fc,
    to_channels_last,
)
from darkraw.nn.precision import Precision, autocast_dtype
from darkraw.raw.figures import preview_planes, side_by_side
from darkraw.raw.fileio import atomic_output, write_image
from darkraw.synth.sources import collect_sources
from darkraw.training import sid
from darkraw.training.dataset import PairConfig, SIDPairs, SyntheticPairs
from darkraw.training.evaluate import ssim_tensor

#: Most CPU threads a run may ask for (libgomp runs out of memory long before 1,000,000).
MAX_THREADS = 1024


class DataKind(enum.Enum):
    """Where training pairs come from."""

    #: Simulated on the fly from clean photos or raw files (:class:`SyntheticPairs`).
    SYNTHETIC = "synthetic"
    #: Real (short, long) pairs from SID list files (:class:`SIDPairs`).
    SID = "sid"


class Transfer(enum.Enum):
    """How ``init_from`` weights are used (the seed's strategy and the usual alternatives)."""

    #: Keep every loaded weight and train them all.
    FULL = "full"
    #: The seed's: erase (re-initialise) the two per-pixel FC layers, then train everything.
    SEED = "seed"
    #: Re-initialise the two FC layers and train only them; everything else frozen.
    HEAD = "head"
    #: Keep the loaded weights, freeze the encoder, train the decoder and the head.
    FREEZE_ENCODER = "freeze-encoder"


@dataclass(frozen=True)
class DataConfig:
    """Where pairs come from.

    Attributes:
        kind: ``synthetic`` (pairs simulated from ``train``) or ``sid`` (real pairs from
            ``sid_train_list``, validated on ``sid_val_list``).
        train: folders or files of clean photos / raw files (relative to the working folder).
        val: held-out sources; when empty, a fixed ``val_fraction`` of ``train`` chosen by a hash
            of each file's folder and name (stable when files are added).
        val_fraction: share of ``train`` held out when ``val`` is empty.
        val_items: validation crops (centre crops, ratios in turn).
        val_patch: packed side of validation crops.
        pairs: crop size, ratios, noise model and unprocessing of training pairs (for SID data
            only ``patch`` is used).
        workers: data-loading processes (0 loads in the training process).
        sid_train_list, sid_val_list: SID list files (``kind: sid``).
        sid_root: folder the list's ``./Sony/...`` paths are relative to ("" guesses).
        sid_fraction: deterministic share of the training pairs used (the seed's "small fraction
            of real pairs"); subsets of one seed are nested.
        sid_per_ratio: instead, this many pairs per ratio (LED uses 2); 0 means use the fraction.
        sid_cache: where LibRaw renderings of the long exposures are cached.
    """

    kind: DataKind = DataKind.SYNTHETIC
    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    val_fraction: float = 0.05
    val_items: int = 24
    val_patch: int = 256
    pairs: PairConfig = field(default_factory=PairConfig)
    workers: int = 2
    sid_train_list: str = ""
    sid_val_list: str = ""
    sid_root: str = ""
    sid_fraction: float = 1.0
    sid_per_ratio: int = 0
    sid_cache: str = "runs/sid_ground_truth"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", DataKind(self.kind))
        if not 0 < self.sid_fraction <= 1 or self.sid_per_ratio < 0:
            raise ValueError("sid_fraction must be in (0, 1] and sid_per_ratio >= 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.val_items < 1 or self.workers < 0:
            raise ValueError("val_items must be >= 1 and workers >= 0")
        PairConfig(patch=self.val_patch)


@dataclass(frozen=True)
class OptimConfig:
    """Adam with SID's step schedule.

    Attributes:
        lr: learning rate at the start.
        lr_final: learning rate after ``lr_drop`` of the steps.
        lr_drop: fraction of the run after which the rate drops (SID: epoch 2000 of 4000).
        batch_size: pairs per step and per process.
        ssim_weight: weight ``w`` of the SSIM term; the loss is ``(1 - w) * L1 + w * (1 - SSIM)``.
            0 is SID's pure L1. L1 alone leaves fine grain that SSIM punishes more than the
            slight blur of BM3D; Zhao et al. (IEEE TCI 2017) weight (MS-)SSIM 0.84.
    """

    lr: float = 1e-4
    lr_final: float = 1e-5
    lr_drop: float = 0.5
    batch_size: int = 1
    ssim_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.lr > 0 or not self.lr_final > 0 or not 0 <= self.lr_drop <= 1:
            raise ValueError("lr and lr_final must be > 0 and lr_drop in [0, 1]")
        if not 0 <= self.ssim_weight <= 1:
            raise ValueError(f"ssim_weight must be in [0, 1], got {self.ssim_weight}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class TrainConfig:
    """A training run (``darkraw train CONFIG.yaml`` overrides these defaults).

    Attributes:
        out_dir: the run's folder.
        steps: optimizer steps in all.
        seed: seeds the weights and every pair.
        precision: ``auto`` (bf16 where supported), ``bf16`` or ``fp32``.
        channels_last: NHWC memory format (about 2x faster on CPU with bf16).
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
        threads: CPU threads for torch; 0 keeps torch's choice.
        log_every, val_every, checkpoint_every: intervals in steps.
        keep_checkpoints: newest checkpoints kept (older ones are deleted).
        samples: validation crops saved as images at each validation.
        init_from: start from these weights (transfer learning): a checkpoint, a model file or
            a bundled model's name (``default``, ``small``); "" starts afresh.
        transfer: what to do with them: ``full``, ``seed`` (re-initialise the two FC layers),
            ``head`` (re-initialise and train only them), ``freeze-encoder``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    out_dir: str = "runs/darkraw"
    steps: int = 4000
    seed: int = 0
    precision: Precision = Precision.AUTO
    channels_last: bool = True
    device: str = "auto"
    threads: int = 0
    log_every: int = 10
    val_every: int = 250
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    samples: int = 3
    init_from: str = ""
    transfer: Transfer = Transfer.FULL

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision(self.precision))
        object.__setattr__(self, "transfer", Transfer(self.transfer))
        intervals = (self.log_every, self.val_every, self.checkpoint_every, self.keep_checkpoints)
        if self.steps < 1 or min(intervals) < 1:
            raise ValueError("steps and every interval must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads must be from 0 to {MAX_THREADS}, got {self.threads}")
        if self.samples < 0:
            raise ValueError("samples must be >= 0")


def load_train_config(data: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping (a YAML file's content or a checkpoint's config)."""
    return from_dict(TrainConfig, data)


@dataclass(frozen=True)
class TrainSummary:
    """How a run ended."""

    out_dir: Path
    step: int
    last_loss: float
    val_psnr: float | None
    classic_psnr: float | None
    steps_per_s: float
    peak_rss_mib: float
    model: SIDUNet = field(repr=False)
    #: This process's rank under torchrun (0 otherwise).
    rank: int = 0


def _result_fields(config: TrainConfig) -> dict[str, Any]:
    """The settings that decide a run's weights; the rest (device, threads, workers, memory
    format, precision, intervals) may change when a run is resumed, e.g. on a GPU."""
    data = to_dict(config)
    return {
        "model": data["model"],
        "optim": data["optim"],
        "steps": data["steps"],
        "seed": data["seed"],
        "init_from": data.get("init_from", ""),
        "transfer": data.get("transfer", Transfer.FULL.value),
        "data": {k: v for k, v in data["data"].items() if k not in ("workers", "sid_cache")},
    }


def learning_rate(optim: OptimConfig, step: int, steps: int) -> float:
    """Rate for 1-based ``step`` of ``steps``: ``lr`` up to the drop, ``lr_final`` after it."""
    return optim.lr if step <= optim.lr_drop * steps else optim.lr_final


def split_sources(files: Sequence[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """Split files into (train, validation) by a hash of each file's folder and name."""
    train: list[Path] = []
    val: list[Path] = []
    for path in files:
        key = f"{path.parent.name}/{path.name}".encode()
        share = int.from_bytes(hashlib.sha256(key).digest()[:4], "big") / 2**32
        (val if share < fraction else train).append(path)
    return train, val


class _ItemSampler(Sampler[int]):
    """Item indices of steps ``start+1 .. steps`` for one process.

    Step ``s`` (1-based), process ``r`` of ``world`` and batch slot ``b`` read item
    ``((s - 1) * world + r) * batch + b``: processes never share an item, and a resumed run asks
    for exactly the items an uninterrupted one would have.
    """

    def __init__(self, start: int, steps: int, batch: int, rank: int, world: int) -> None:
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.steps):
            first = (step * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.batch


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(Path(config.out_dir), "device cuda asked for, but no GPU is visible")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local)
    return torch.device("cpu")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of ``(N, 3, H, W)`` images in [0, 1] (output clamped first)."""
    mse = ((output.clamp(0, 1) - target) ** 2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def training_loss(
    output: torch.Tensor, target: torch.Tensor, ssim_weight: float, *, raw: bool = False
) -> torch.Tensor:
    """``(1 - w) * L1 + w * (1 - SSIM)`` of a batch; ``w = 0`` is SID's L1 exactly. With
    ``raw`` (a raw-output network, whose planes come through the sRGB curve) the target's linear
    planes go through the same curve (:func:`~darkraw.nn.model.raw_tone`) first."""
    if raw:
        target = raw_tone(target)
    l1 = torch.nn.functional.l1_loss(output, target)
    if ssim_weight == 0:
        return l1
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim_tensor(output, target))


_PairSet = SyntheticPairs | SIDPairs


class _Run:
    """State of one training run; :func:`train` drives it."""

    def __init__(self, config: TrainConfig, resume: bool, progress: bool) -> None:
        self.config = config
        self.out = Path(config.out_dir)
        self.device = _device(config)
        self.dist = _init_distributed(self.device)
        self.progress = progress and self.dist.main
        if config.threads:
            torch.set_num_threads(config.threads)
        self.amp_dtype = autocast_dtype(config.precision, self.device)
        self.raw = config.model.output == "raw"
        if self.raw and config.data.kind is DataKind.SID:
            raise ConfigError(
                self.out / "config.yaml",
                "a raw-output model (model.output: raw) trains on synthetic pairs only; "
                "SID's ground truth is rendered sRGB",
            )
        self.ckpt_dir = self.out / "checkpoints"
        self.model = build_model(config.model, torch.Generator().manual_seed(config.seed))
        self.model.to(self.device)
        if config.init_from:
            _start_from(self.model, Path(config.init_from), config.transfer, config.seed)
        if config.channels_last:
            to_channels_last(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=config.optim.lr)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._prepare_folder(resume)
        self.net: torch.nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.train_set, self.val_set = self._datasets()
        self.val_items: list[dict[str, torch.Tensor]] | None = None
        self.classic_psnr: float | None = None
        self.classic_ssim: float | None = None

    def _prepare_folder(self, resume: bool) -> None:
        newest = latest_checkpoint(self.ckpt_dir) if self.ckpt_dir.is_dir() else None
        if newest is not None and not resume:
            raise DarkrawError(
                self.out,
                "holds a training run already; resume it with --resume or pick a new out_dir",
            )
        if resume and newest is None:
            _refuse_unreadable_checkpoints(self.ckpt_dir)
        if newest is None and self.dist.main:
            # A verified checkpoint shows the folder is a run's; without one, check before
            # anything in it is replaced.
            check_run_folder(self.out, self.config)
        if resume and newest is not None:
            ckpt = load_checkpoint(newest)
            saved = _result_fields(_config_of(newest, ckpt))
            if saved != _result_fields(self.config):
                changed = sorted(k for k in saved if saved[k] != _result_fields(self.config)[k])
                raise DarkrawError(
                    newest,
                    f"was trained with a different config ({', '.join(changed)}); cannot resume",
                )
            _load_weights(newest, self.model, ckpt.model_state)
            if ckpt.optimizer_state is not None:
                try:
                    self.optimizer.load_state_dict(ckpt.optimizer_state)
                except (ValueError, KeyError, RuntimeError) as err:
                    problem = f"optimizer state does not fit the model ({err})"
                    raise CheckpointError(newest, problem) from None
            self.step = ckpt.step
            self.history = list(ckpt.extra.get("history", []))
        if self.dist.main:
            try:
                (self.out / "samples").mkdir(parents=True, exist_ok=True)
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                _remove_partial_checkpoints(self.ckpt_dir)
                # config.yaml before any other file: a folder this run has written a file in
                # names its config, so that check_run_folder knows it again after a kill.
                with atomic_output(self.out / "config.yaml") as tmp:
                    tmp.write_text(dump_yaml(self.config))
                # The log restarts from the checkpoint, so steps redone after a kill appear once.
                with atomic_output(self.out / "log.jsonl") as tmp:
                    tmp.write_text("".join(json.dumps(h) + "\n" for h in self.history))
            except OSError as err:
                problem = f"cannot write the run folder ({err.strerror or err})"
                raise OutputError(self.out, problem) from None

    def _datasets(
        self,
    ) -> tuple[_PairSet, _PairSet]:
        config, data = self.config, self.config.data
        length = config.steps * config.optim.batch_size * self.dist.world
        if data.kind is DataKind.SID:
            return self._sid_datasets(length)
        train_files, val_files = self._sources()
        pairs = data.pairs
        train_set = SyntheticPairs(
            train_files, pairs, seed=config.seed, length=length, raw_target=self.raw
        )
        val_set = SyntheticPairs(
            val_files,
            replace(pairs, patch=data.val_patch),
            seed=config.seed,
            length=data.val_items,
            train=False,
            classic=True,
            raw_target=self.raw,
        )
        return train_set, val_set

    def _sid_datasets(self, length: int) -> tuple[_PairSet, _PairSet]:
        data = self.config.data
        where = self.out / "config.yaml"
        if not data.sid_train_list or not data.sid_val_list:
            raise ConfigError(where, "kind sid needs data.sid_train_list and data.sid_val_list")
        root = data.sid_root or None
        train_pairs = sid.select(sid.read_list(data.sid_train_list, root))
        if data.sid_per_ratio:
            train_pairs = sid.subset(
                train_pairs, per_ratio=data.sid_per_ratio, seed=self.config.seed
            )
        elif data.sid_fraction < 1:
            train_pairs = sid.subset(train_pairs, fraction=data.sid_fraction, seed=self.config.seed)
        val_pairs = sid.select(sid.read_list(data.sid_val_list, root))[: data.val_items]
        if not train_pairs or not val_pairs:
            raise ConfigError(where, "the SID lists give no training or no validation pairs")
        train_set = SIDPairs(
            train_pairs,
            data.sid_cache,
            patch=data.pairs.patch,
            seed=self.config.seed,
            length=length,
            augment=data.pairs.augment,
        )
        val_set = SIDPairs(
            val_pairs,
            data.sid_cache,
            patch=data.val_patch,
            seed=self.config.seed,
            train=False,
            classic=True,
        )
        return train_set, val_set

    def _sources(self) -> tuple[list[Path], list[Path]]:
        data = self.config.data
        if not data.train:
            raise ConfigError(self.out / "config.yaml", "data.train names no photo or raw folder")
        files = collect_sources(data.train)
        if data.val:
            return files, collect_sources(data.val)
        train, val = split_sources(files, data.val_fraction)
        if not train or not val:
            raise ConfigError(
                self.out / "config.yaml",
                f"{len(files)} source files are too few to hold out a validation share",
            )
        return train, val

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def run(self, stop_after: int | None) -> TrainSummary:
        config = self.config
        batch = config.optim.batch_size
        sampler = _ItemSampler(self.step, config.steps, batch, self.dist.rank, self.dist.world)
        loader = DataLoader(
            self.train_set,
            batch_size=batch,
            sampler=sampler,
            num_workers=config.data.workers,
            persistent_workers=False,
            prefetch_factor=4 if config.data.workers else None,
            # Forked workers inherit whatever locks the parent's threads (OpenMP, tqdm's monitor)
            # hold at that instant: the second run of one process (``darkraw experiment``)
            # deadlocked that way. Workers from a clean server process cannot.
            multiprocessing_context="forkserver" if config.data.workers else None,
        )
        if self.dist.main and self.val_items is None:
            self._prepare_validation()
        bar = tqdm(
            total=config.steps,
            initial=self.step,
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
            desc="train",
        )
        # Rates count data loading and the step, not validation or checkpoint writing.
        last_loss, window_loss, window, window_time = math.nan, 0.0, 0, 0.0
        busy, first_step = 0.0, self.step
        mark = time.perf_counter()
        self.net.train()
        # Closed on an error too, so that the one-line error starts a line of its own.
        try:
            for item in loader:
                self.step += 1
                lr = learning_rate(config.optim, self.step, config.steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                inputs, target = self._to_device(item["input"]), self._to_device(item["target"])
                with self.autocast():
                    output = self.net(inputs)
                loss = training_loss(output.float(), target, config.optim.ssim_weight, raw=self.raw)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                self.optimizer.step()
                last_loss = float(loss.detach())
                spent = time.perf_counter() - mark
                busy += spent
                window, window_loss, window_time = (
                    window + 1,
                    window_loss + last_loss,
                    window_time + spent,
                )
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    bar.set_postfix(
                        loss=f"{window_loss / window:.4f}", lr=f"{lr:.0e}", refresh=False
                    )
                    self._log(
                        {
                            "step": self.step,
                            "loss": window_loss / window,
                            "lr": lr,
                            "steps_per_s": window / window_time,
                            "peak_rss_mib": peak_rss_mib(),
                        }
                    )
                    window, window_loss, window_time = 0, 0.0, 0.0
                if self.step % config.val_every == 0 or self.step == config.steps:
                    self._validate()
                if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                    self._checkpoint()
                if stop_after is not None and self.step >= stop_after:
                    break
                mark = time.perf_counter()
        finally:
            bar.close()
        vals = [h for h in self.history if "val_psnr" in h]
        return TrainSummary(
            out_dir=self.out,
            step=self.step,
            last_loss=last_loss,
            val_psnr=vals[-1]["val_psnr"] if vals else None,
            classic_psnr=self.classic_psnr,
            steps_per_s=(self.step - first_step) / busy if busy > 0 else 0.0,
            peak_rss_mib=peak_rss_mib(),
            model=self.model,
            rank=self.dist.rank,
        )

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        self.history.append(record)
        try:
            with open(self.out / "log.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
        except OSError as err:
            problem = f"cannot write the log ({err.strerror or err})"
            raise OutputError(self.out / "log.jsonl", problem) from None

    def _prepare_validation(self) -> None:
        val_set = self.val_set
        items = [
            val_set[i]
            for i in tqdm(
                range(len(val_set)), desc="validation pairs", disable=not self.progress, leave=False
            )
        ]
        self.val_items = items
        classic = torch.stack([it["classic"] for it in items])
        target = torch.stack([it["target"] for it in items])
        if self.raw:
            classic, target = raw_tone(classic), raw_tone(target)
        self.classic_psnr = float(psnr(classic, target).mean())
        self.classic_ssim = float(
            np.mean(
                [float(ssim_tensor(c[None], t[None])) for c, t in zip(classic, target, strict=True)]
            )
        )

    @torch.no_grad()
    def _validate(self) -> None:
        if not self.dist.main or self.val_items is None:
            return
        self.model.eval()
        scores, similarities, ratios, outputs = [], [], [], []
        for item in self.val_items:
            inputs = self._to_device(item["input"][None])
            with self.autocast():
                output = self.model(inputs).float().cpu()
            target = item["target"][None]
            scored = output
            if self.raw:
                scored, target = output.clamp(0, 1), raw_tone(target)
            scores.append(float(psnr(scored, target)[0]))
            similarities.append(float(ssim_tensor(scored.clamp(0, 1), target)))
            ratios.append(float(item["ratio"]))
            outputs.append(output[0].clamp(0, 1))
        self.model.train()
        by_ratio = {
            f"x{r:g}": float(np.mean([s for s, q in zip(scores, ratios, strict=True) if q == r]))
            for r in sorted(set(ratios))
        }
        self._log(
            {
                "step": self.step,
                "val_psnr": float(np.mean(scores)),
                "val_psnr_by_ratio": by_ratio,
                "classic_psnr": self.classic_psnr,
                "val_ssim": float(np.mean(similarities)),
                "classic_ssim": self.classic_ssim,
            }
        )
        self._write_samples(outputs)
        self._write_curves()

    def _write_samples(self, outputs: list[torch.Tensor]) -> None:
        for k, (item, output) in enumerate(zip(self.val_items or [], outputs, strict=False)):
            if k >= self.config.samples:
                break
            # A raw-output network's planes are shown the way the input is.
            show = preview_planes if self.raw else np.asarray
            shown = gamma_decode(output.numpy(), GammaCurve.SRGB) if self.raw else output.numpy()
            panels = [
                (f"input x{float(item['ratio']):g}", preview_planes(item["input"].float().numpy())),
                ("classic (NLM)", show(item["classic"].numpy())),
                (f"network, step {self.step}", show(shown)),
                ("target", show(item["target"].numpy())),
            ]
            path = self.out / "samples" / f"val{k:02d}_step{self.step:07d}.png"
            write_image(path, side_by_side(panels, max_width=2048))

    def _write_curves(self) -> None:
        plot_curves(self.history, self.out / "curves.png", self.classic_psnr)

    def _checkpoint(self) -> None:
        if not self.dist.main:
            return
        path = self.ckpt_dir / f"step_{self.step:07d}.safetensors"
        save_checkpoint(
            path,
            model_state=self.model.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            step=self.step,
            config=to_dict(self.config),
            extra={"history": self.history, "classic_psnr": self.classic_psnr},
        )
        # By step, not by name, and only older ones: a leftover file of a higher step (from a
        # run killed later than this one's checkpoint, possibly cut short) must not count as
        # one of the newest and push out the checkpoint just written.
        older = sorted(
            (int(match.group(1)), entry)
            for entry in self.ckpt_dir.iterdir()
            if (match := CHECKPOINT_NAME.fullmatch(entry.name)) and int(match.group(1)) < self.step
        )
        for _, old in older[: max(0, len(older) - (self.config.keep_checkpoints - 1))]:
            old.unlink(missing_ok=True)


def plot_curves(history: Sequence[dict[str, Any]], path: Path, classic_psnr: float | None) -> None:
    """Training loss and validation PSNR against step, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    vals = [(h["step"], h["val_psnr"]) for h in history if "val_psnr" in h]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        steps, values = zip(*losses, strict=True)
        ax_loss.plot(steps, values, lw=0.8)
    ax_loss.set(xlabel="step", ylabel="loss (train)", title="training loss")
    ax_loss.grid(alpha=0.3)
    if vals:
        steps, values = zip(*vals, strict=True)
        ax_val.plot(steps, values, marker="o", ms=3, label="network")
    if classic_psnr is not None:
        ax_val.axhline(classic_psnr, color="gray", ls="--", label="classic pipeline (NLM)")
    ax_val.set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR")
    ax_val.grid(alpha=0.3)
    ax_val.legend(loc="lower right")
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    except OSError as err:
        raise OutputError(path, f"cannot write the curves ({err.strerror or err})") from None
    finally:
        plt.close(fig)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainSummary:
    """Train (or with ``resume``, continue training) the network described by ``config``.

    Args:
        stop_after: end after this step as if killed there (after its checkpoint, if one was
            due); for tests and for splitting a long run over sessions.

    Raises:
        DarkrawError: bad sources, an existing run without ``resume``, or a checkpoint made
            with another config.
    """
    run = _Run(config, resume, progress)
    try:
        return run.run(stop_after)
    finally:
        if run.dist.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _start_from(model: SIDUNet, path: Path, transfer: Transfer, seed: int) -> None:
    """Load ``path``'s weights into ``model`` and apply a transfer strategy (in place).

    ``path`` is a training checkpoint, a model file, or a bundled model's name (``default``).
    """
    # Imported here: infer imports this module for the precision settings.
    from darkraw.nn.infer import sid_network
    from darkraw.nn.modelfiles import is_model_file, model_source

    source = model_source(path)
    if is_model_file(source):
        network = sid_network(source)
        saved, state = network.config, network.state_dict()
    else:
        ckpt = load_checkpoint(source)
        saved, state = _config_of(source, ckpt).model, ckpt.model_state
    if replace(saved, output=model.config.output) != model.config:
        raise DarkrawError(source, f"holds a {saved} network, the config asks for {model.config}")
    if saved.output != model.config.output:
        # An sRGB network starts a raw-output one: the encoder and decoder carry over and the
        # output layers are adapted to give the sRGB picture as planes. The reverse keeps the
        # sRGB network's fresh output layers (theirs cannot be recovered from a raw network's).
        if model.config.output == "raw":
            state = dict(state) | raw_tail_from_srgb(state, model.config)
        else:
            fresh = model.state_dict()
            state = fresh | {
                k: v for k, v in state.items() if not k.startswith(("head.", FC_PREFIX))
            }
    _load_weights(source, model, state)
    if transfer in (Transfer.SEED, Transfer.HEAD):
        # Seeded apart from the run's own seed, so the fresh layers differ from the originals.
        reset_fc(model, torch.Generator().manual_seed(seed + 1_000_003))
    if transfer is Transfer.HEAD:
        for name, param in model.named_parameters():
            param.requires_grad = name in fc_parameter_names(model)
    elif transfer is Transfer.FREEZE_ENCODER:
        for param in model.encoder.parameters():
            param.requires_grad = False


def model_from_run(out_dir: str | Path) -> SIDUNet:
    """The network of a run's newest checkpoint."""
    newest = latest_checkpoint(Path(out_dir) / "checkpoints")
    if newest is None:
        raise DarkrawError(Path(out_dir), "holds no checkpoint")
    ckpt = load_checkpoint(newest)
    model = build_model(_config_of(newest, ckpt).model)
    _load_weights(newest, model, ckpt.model_state)
    return model


#: Temporary files of checkpoint writes (:func:`darkraw.raw.fileio.atomic_output`) a kill left.
_PARTIAL_CHECKPOINT = re.compile(r"\.step_\d+\..+\.part\.safetensors")

#: Sample pictures a run writes in ``samples/``, and their temporary files.
_SAMPLE_NAME = re.compile(r"\.?val\d+_step\d+(\..+\.part)?\.png")


def check_run_folder(out: Path, config: TrainConfig) -> None:
    """Refuse an ``out_dir`` that is not new, empty, or an earlier darkraw run of ``config``.

    A run writes ``config.yaml``, ``log.jsonl``, ``curves.png``, ``samples/`` and
    ``checkpoints/`` into its folder, replacing files of those names; in a folder of other files
    (a user's own ``config.yaml``, or ``/``) that would destroy them. An earlier run of the same
    config is known by its ``config.yaml``, which must be exactly the text this run writes
    (:func:`~darkraw.config.dump_yaml`). A folder holding only ``checkpoints/`` and
    ``samples/`` with nothing but darkraw's own files in them (a run killed before it wrote
    anything else) is one too. A folder with a checkpoint that verifies is checked by the
    caller instead (``--resume``, or "holds a training run already").

    Raises:
        OutputError: one line naming the folder, saying what it holds.
    """
    if not out.is_dir():
        return  # New; or not a folder, which creating the run's folders reports in one line.
    try:
        entries = sorted(entry.name for entry in out.iterdir())
    except OSError as err:
        raise OutputError(out, f"cannot read the run folder ({err.strerror or err})") from None
    if not entries:
        return
    if "config.yaml" in entries:
        if _holds_text(out / "config.yaml", dump_yaml(config)):
            return
        raise OutputError(
            out,
            "is not a darkraw run of this config: its config.yaml differs from this run's "
            "config, and would be replaced (pick a new or empty out_dir)",
        )
    if set(entries) <= {"checkpoints", "samples"} and all(
        _holds_only(out / name, pattern)
        for name, pattern in (("checkpoints", CHECKPOINT_NAME), ("samples", _SAMPLE_NAME))
    ):
        return
    shown = ", ".join(repr(name) if not name.isprintable() else name for name in entries[:3])
    more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
    raise OutputError(
        out,
        f"is not a darkraw run of this config and not empty (it holds {shown}{more}); "
        "pick a new or empty out_dir",
    )


def _holds_text(path: Path, text: str) -> bool:
    """Whether ``path`` is a regular file holding exactly ``text`` (read no further than that)."""
    expected = text.encode()
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as file:
            return file.read(len(expected) + 1) == expected
    except OSError:
        return False


def _holds_only(folder: Path, pattern: re.Pattern[str]) -> bool:
    """Whether ``folder`` is absent, or a folder of files named by ``pattern`` or partial
    checkpoint writes only."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    try:
        return all(
            entry.is_file()
            and (pattern.fullmatch(entry.name) or _PARTIAL_CHECKPOINT.fullmatch(entry.name))
            for entry in folder.iterdir()
        )
    except OSError:
        return False


def _remove_partial_checkpoints(folder: Path) -> None:
    """Delete checkpoint writes a kill cut short; they never count, but they fill the disk."""
    for entry in folder.iterdir():
        if _PARTIAL_CHECKPOINT.fullmatch(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)


def _refuse_unreadable_checkpoints(folder: Path) -> None:
    """With ``resume``, checkpoints that exist but none of which verifies are an error.

    Starting afresh instead would silently throw the run away and overwrite its files.
    """
    if not folder.is_dir():
        return
    steps = sorted(
        (int(match.group(1)), entry)
        for entry in folder.iterdir()
        if (match := CHECKPOINT_NAME.fullmatch(entry.name)) and entry.is_file()
    )
    if not steps:
        return
    try:
        load_checkpoint(steps[-1][1])
    except CheckpointError as err:
        raise CheckpointError(
            err.path,
            f"{err.problem}; no checkpoint of this run verifies, so it cannot resume "
            "(move the checkpoints away to start afresh)",
        ) from None


def _config_of(path: Path, ckpt: Checkpoint) -> TrainConfig:
    """The run config a checkpoint carries; a one-line error naming the file if it is unusable."""
    try:
        return load_train_config(ckpt.config)
    except ValueError as err:
        raise CheckpointError(path, f"its config does not load here: {err}") from None


def _load_weights(path: Path, model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state)``; a one-line error naming the file if they do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        # torch lists every missing, unexpected and misshapen weight, over several lines.
        reason = " ".join(str(err).split())
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise CheckpointError(path, f"weights do not fit the model: {reason}") from None
