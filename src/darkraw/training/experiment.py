"""The seed's experiment in one command: does synthetic pretraining plus a few real pairs beat
training on the real pairs alone?

Rows of the result (columns: ratios x100, x250, x300 and all):

- the classic pipeline;
- the SID baseline: the same network trained only on target-domain pairs (at each fraction);
- synthetic only (zero-shot): pretrained on simulated pairs, no real pair seen;
- synthetic + transfer: the pretrained network fine-tuned on a fraction of the real pairs, with
  each transfer strategy (the seed's: re-initialise the two FC layers and retrain).

Every trained model gets its own run folder under ``out_dir`` and is reused when the experiment
runs again; a run stopped midway is resumed. Training on target pairs uses the same number of
steps for the baseline and for every transfer, so the comparison is at equal training effort.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from darkraw.classic.denoise import Denoiser
from darkraw.config import dump_yaml, to_dict
from darkraw.errors import DarkrawError
from darkraw.nn.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.model import ModelConfig, SIDUNet, build_model
from darkraw.nn.precision import Precision
from darkraw.raw.fileio import atomic_output
from darkraw.raw.metadata import RawMetadata
from darkraw.training.evaluate import (
    EvaluationResult,
    Method,
    RawMethod,
    RawOutput,
    classic_method,
    evaluate,
    raw_planes,
)
from darkraw.training.sid import Protocol, read_list, select
from darkraw.training.train import (
    DataConfig,
    DataKind,
    OptimConfig,
    TrainConfig,
    Transfer,
    load_train_config,
    train,
)

if TYPE_CHECKING:
    from darkraw.nn.rawdenoise import DenoiseOptions


@dataclass(frozen=True)
class ExperimentConfig:
    """The experiment (``darkraw experiment CONFIG.yaml`` overrides these defaults).

    Attributes:
        out_dir: folder of every run and of the report.
        synthetic: pretraining data (``kind: synthetic``: photos or raw files and a noise model).
        sid_train_list, sid_val_list, sid_test_list: the target domain's SID lists.
        sid_root: folder the lists' paths are relative to ("" guesses).
        sid_cache: where long exposures rendered by LibRaw are cached.
        protocol: ``all`` bursts or SID's own ``first-burst`` for the test set.
        model, optim: network and optimiser of every run.
        pretrain_steps: steps of synthetic pretraining.
        steps: steps of every training on target pairs (baseline and transfers alike).
        fractions: shares of the target training pairs.
        strategies: transfer strategies tried at each fraction.
        baseline: also train the SID baseline (from scratch) at each fraction.
        patch: packed crop side of target training.
        classic_denoiser: denoiser of the classic-pipeline row.
        test_items: evaluate on this many test pairs (0: all).
        seed, precision, threads, workers, val_every, checkpoint_every: as in ``TrainConfig``.
    """

    out_dir: str = "runs/experiment"
    synthetic: DataConfig = field(default_factory=DataConfig)
    sid_train_list: str = ""
    sid_val_list: str = ""
    sid_test_list: str = ""
    sid_root: str = ""
    sid_cache: str = "runs/sid_ground_truth"
    protocol: Protocol = Protocol.ALL
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pretrain_steps: int = 2000
    steps: int = 1000
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    strategies: tuple[Transfer, ...] = (Transfer.SEED,)
    baseline: bool = True
    patch: int = 256
    classic_denoiser: Denoiser = Denoiser.NLM
    test_items: int = 0
    seed: int = 0
    precision: Precision = Precision.AUTO
    threads: int = 0
    workers: int = 2
    val_every: int = 250
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", Protocol.parse(self.protocol))
        object.__setattr__(self, "classic_denoiser", Denoiser.parse(self.classic_denoiser))
        object.__setattr__(self, "strategies", tuple(Transfer(s) for s in self.strategies))
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions must be in (0, 1], got {self.fractions}")
        if min(self.pretrain_steps, self.steps) < 1 or self.test_items < 0:
            raise ValueError("pretrain_steps and steps must be >= 1 and test_items >= 0")


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the experiment and the table row it gives."""

    name: str
    row: str
    config: TrainConfig


def plan(config: ExperimentConfig) -> list[PlannedRun]:
    """Every training run, pretraining first (the transfers start from it)."""
    out = Path(config.out_dir)
    base = TrainConfig(
        model=config.model,
        optim=config.optim,
        seed=config.seed,
        precision=config.precision,
        threads=config.threads,
        val_every=config.val_every,
        checkpoint_every=config.checkpoint_every,
        channels_last=False,
    )
    synthetic = replace(config.synthetic, kind=DataKind.SYNTHETIC, workers=config.workers)
    pretrain = replace(
        base, data=synthetic, out_dir=str(out / "pretrain"), steps=config.pretrain_steps
    )
    target = DataConfig(
        kind=DataKind.SID,
        sid_train_list=config.sid_train_list,
        sid_val_list=config.sid_val_list,
        sid_root=config.sid_root,
        sid_cache=config.sid_cache,
        pairs=replace(config.synthetic.pairs, patch=config.patch),
        val_patch=config.synthetic.val_patch,
        val_items=config.synthetic.val_items,
        workers=config.workers,
    )
    runs = [PlannedRun("pretrain", "synthetic only (zero-shot)", pretrain)]
    pretrained = str(out / "pretrain" / "model.safetensors")
    for fraction in config.fractions:
        data = replace(target, sid_fraction=fraction)
        label = f"{fraction * 100:g}%"
        if config.baseline:
            runs.append(
                PlannedRun(
                    f"baseline_{label}",
                    f"SID baseline, {label} of real pairs",
                    replace(
                        base,
                        data=data,
                        out_dir=str(out / f"baseline_{label}"),
                        steps=config.steps,
                    ),
                )
            )
        for strategy in config.strategies:
            name = f"transfer_{strategy.value}_{label}"
            runs.append(
                PlannedRun(
                    name,
                    f"synthetic + {strategy.value} transfer, {label} of real pairs",
                    replace(
                        base,
                        data=data,
                        out_dir=str(out / name),
                        steps=config.steps,
                        init_from=pretrained,
                        transfer=strategy,
                    ),
                )
            )
    return runs


def _trained(run: PlannedRun, progress: bool) -> SIDUNet:
    """The run's final network: reused if complete, resumed if started, trained otherwise."""
    folder = Path(run.config.out_dir)
    final = folder / "model.safetensors"
    newest = latest_checkpoint(folder / "checkpoints") if folder.is_dir() else None
    if newest is None or load_checkpoint(newest).step < run.config.steps:
        summary = train(run.config, resume=newest is not None, progress=progress)
        model = summary.model
    else:
        ckpt = load_checkpoint(newest)
        model = build_model(load_train_config(ckpt.config).model)
        model.load_state_dict(ckpt.model_state)
    # A stable name for the final weights, so transfers can point at it before it exists.
    if not final.exists():
        save_checkpoint(
            final,
            model_state=model.state_dict(),
            optimizer_state=None,
            step=run.config.steps,
            config=to_dict(run.config),
        )
    return model


def tiled_network_method(model: SIDUNet) -> Method:
    """A network as an evaluation method: SID's input, tiled inference, oriented output."""
    from darkraw.nn.infer import InferenceOptions, enhance_raw_network

    # One pass, as SID scores its network: the scores compare models, not ensembles.
    options = InferenceOptions(ensemble=1)

    def run(mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float) -> np.ndarray:
        return enhance_raw_network(mosaic_dn, meta, model, ratio, options).image

    return run


def denoiser_method(model: RawDenoiser, options: DenoiseOptions | None = None) -> RawMethod:
    """The raw denoiser as an evaluation method: its rendered picture, and its clean planes for
    the raw-domain scores.

    It runs as ``darkraw enhance`` runs it (:func:`~darkraw.nn.rawdenoise.enhance_with_denoiser`;
    by default strength 1 and LibRaw's rendering with its BT.709 curve, as the ground truth has
    it, the noise level measured from the frame) at the pair's ratio, in one pass
    (``ensemble=1``) where ``options`` are not given: ELD, PMN and LED score their networks so,
    and the scores compare models, not ensembles.
    """
    from darkraw.nn.rawdenoise import DenoiseOptions, enhance_with_denoiser

    chosen = DenoiseOptions(ensemble=1) if options is None else options

    def run(mosaic_dn: np.ndarray, meta: RawMetadata, ratio: float) -> RawOutput:
        result = enhance_with_denoiser(mosaic_dn, meta, model, ratio, chosen)
        return RawOutput(result.image, raw_planes(result.mosaic_dn, meta))

    return run


def network_method(network: SIDUNet | RawDenoiser) -> Method | RawMethod:
    """Either network as an evaluation method: :func:`tiled_network_method` for the SID U-Net,
    :func:`denoiser_method` for the raw denoiser."""
    if isinstance(network, RawDenoiser):
        return denoiser_method(network)
    return tiled_network_method(network)


def run_experiment(
    config: ExperimentConfig,
    *,
    progress: bool = True,
    network_method: Callable[[SIDUNet], Method] | None = None,
) -> EvaluationResult:
    """Train every model of :func:`plan` (reusing finished ones) and evaluate them all.

    Returns:
        The evaluation, whose ``table`` has one row per method; the report is in
        ``out_dir/report``.
    """
    if not config.sid_test_list:
        raise DarkrawError(Path(config.out_dir), "the experiment needs sid_test_list")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "experiment.yaml") as tmp:
        tmp.write_text(dump_yaml(config))
    if network_method is None:
        network_method = tiled_network_method
    methods: dict[str, Method] = {
        f"classic ({config.classic_denoiser.value})": classic_method(config.classic_denoiser)
    }
    for run in plan(config):
        methods[run.row] = network_method(_trained(run, progress))
    root = config.sid_root or None
    pairs = select(read_list(config.sid_test_list, root), protocol=config.protocol)
    if config.test_items:
        pairs = pairs[: config.test_items]
    return evaluate(pairs, methods, out / "report", cache_dir=config.sid_cache, progress=progress)
