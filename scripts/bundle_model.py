"""Turn a training checkpoint into a bundled model (fp16 weights and a model card).

The card records the checkpoint's config, its step, the validation PSNR of the network and of
the classic pipeline at that step (from the run's log.jsonl), and free notes on how the weights
came to be (a warm start, for instance).

Several checkpoints of one run are averaged, weight by weight: SGD at batch 1 leaves the weights
wandering from checkpoint to checkpoint, and their mean scores about as well as the best of them
without choosing one on the benchmark frames (phase 13, ``docs/training.md``). The card then
lists the averaged steps, and its validation figures are the last checkpoint's.

Usage:
    python scripts/bundle_model.py runs/default_balanced/checkpoints/step_0004000.safetensors \\
        [--note TEXT]... [-o src/darkraw/data/denoiser_model.safetensors] [--name default]
    python scripts/bundle_model.py runs/x/checkpoints/step_000{1,2,3,4}000.safetensors ...
    python scripts/bundle_model.py runs/small/checkpoints/step_0006000.safetensors \\
        --name small -o src/darkraw/data/small_model.safetensors
    python scripts/bundle_model.py \\
        runs/denoiser_default/checkpoints/step_00{16,18,20}000.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from darkraw.nn.checkpoint import load_checkpoint
from darkraw.nn.denoiser import RawDenoiser
from darkraw.nn.infer import average_weights, load_model, save_model_file
from darkraw.nn.modelfiles import model_card

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "darkraw" / "data"


def validation_at(log: Path, step: int) -> dict[str, object]:
    """The validation record of ``step`` in a run's log, or ``{}``."""
    if not log.exists():
        return {}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record.get("step") == step and "val_psnr" in record:
            return {
                "val_psnr": round(record["val_psnr"], 2),
                "val_psnr_by_ratio": {
                    k: round(v, 2) for k, v in record.get("val_psnr_by_ratio", {}).items()
                },
                "classic_psnr": round(record["classic_psnr"], 2),
                **{
                    key: round(record[key], 4)
                    for key in ("val_ssim", "classic_ssim")
                    if key in record
                },
            }
    return {}


def denoiser_validation_at(log: Path, step: int) -> dict[str, object]:
    """The raw denoiser's validation record of ``step`` in a run's log, or ``{}``."""
    if not log.exists():
        return {}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record.get("step") == step and "val_raw_psnr" in record:
            return {k: round(v, 2) for k, v in record.items() if k.startswith("val_")}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="one, or several to average")
    parser.add_argument("--note", action="append", default=[], help="history line (repeatable)")
    parser.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUT / "denoiser_model.safetensors"
    )
    parser.add_argument("--name", default="default", help="the model's name in its card")
    args = parser.parse_args()
    ckpts = [load_checkpoint(path) for path in args.checkpoints]
    ckpt = ckpts[-1]
    try:
        model = average_weights([load_model(path) for path in args.checkpoints])
    except ValueError as err:
        raise SystemExit(f"bundle_model: {err}") from None
    run = args.checkpoints[-1].parent.parent
    if isinstance(model, RawDenoiser):
        config = model.config
        name = f"darkraw {args.name} (raw denoiser, width {config.width}, {config.levels} levels)"
        task = "noisy raw planes and their noise map to clean raw planes, exposure ratios 1-300"
        given = "denoiser_planes and noise_map: black level, x ratio, camera raw, noise std"
        validation = denoiser_validation_at(run / "log.jsonl", ckpt.step)
    else:
        what = (
            "dark raw (Bayer) to denoised raw planes, rendered by the file's own pipeline"
            if model.config.output == "raw"
            else "dark raw (Bayer) to sRGB"
        )
        name = f"darkraw {args.name} (SID U-Net + 2 FC, width {model.config.width})"
        task = f"{what}, exposure ratios 100-300"
        given = "network_input: black level, x ratio, as-shot white balance, colour matrix"
        validation = validation_at(run / "log.jsonl", ckpt.step)
    card = {
        "name": name,
        "task": task,
        "input": given,
        "step": ckpt.step,
        **({"averaged_steps": [c.step for c in ckpts]} if len(ckpts) > 1 else {}),
        "validation": validation,
        "train_config": ckpt.config,
        "history": args.note,
        "data_licence": "research use: trained on ../shared/data/clean (see its MANIFEST.tsv)",
    }
    save_model_file(args.output, model, dtype=torch.float16, card=card)
    size = args.output.stat().st_size / 2**20
    print(f"wrote {args.output} ({size:.1f} MiB), step {ckpt.step}, {len(ckpts)} checkpoint(s)")
    print(json.dumps(model_card(args.output)["validation"]))


if __name__ == "__main__":
    main()
