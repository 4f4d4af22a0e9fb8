"""Train the learnt black-offset estimate (darkraw.nn.blackoffset) and write its bundled file.

Draws training samples from the clean photos' training split and test samples from its
validation split (the accuracy benchmark's photos: none of them is trained on, nor any raw
file), both cached under ``--cache``; trains the MLP; reports the offset's mean absolute error
on the test samples by kind and by ratio, against predicting no offset; writes the model and the
figures.

Usage:
    python scripts/train_black_offset.py [--train 8000] [--test 800] [--steps 6000]
        [--width 128] [--seed 0] [--data-seeds 0 2 3] [--workers 2] [--cache runs/black_offset]
        [-o src/darkraw/data/black_offset_model.safetensors]
        [--report benchmarks/results/black_offset_training.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from darkraw.nn.blackoffset import (
    FEATURE_COUNT,
    TARGET_SCALE,
    BlackOffsetModel,
    save_black_offset_model,
)
from darkraw.synth.sources import collect_sources
from darkraw.training.black_offset import (
    KINDS,
    SampleConfig,
    sample_set,
    train_black_offset_model,
)
from darkraw.training.train import split_sources

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

#: The exposure ratios the test errors are reported by.
RATIO_BANDS = ((1.0, 8.0), (8.0, 50.0), (50.0, 150.0), (150.0, 300.0))


def cached_set(
    cache: Path, name: str, files: list[Path], count: int, seed: int, workers: int
) -> dict[str, np.ndarray]:
    path = cache / f"{name}_{count}_{seed}_{FEATURE_COUNT}.npz"
    if path.exists():
        with np.load(path) as stored:
            return {k: stored[k] for k in stored.files}
    start = time.perf_counter()
    data = sample_set(files, count, SampleConfig(), seed, workers=workers)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    print(f"{name}: {count} samples in {time.perf_counter() - start:.0f} s", flush=True)
    return data


def errors(model: BlackOffsetModel, test: dict[str, np.ndarray]) -> dict[str, object]:
    """Mean absolute offset error, per cent of white after amplification, of no offset and of the
    model: over all samples, by kind and by ratio band."""
    ratio = np.exp(test["x"][:, -1])
    truth = test["y"] / TARGET_SCALE
    guesses = {"zero": np.zeros_like(truth), "model": model.amplified(test["x"])}
    out: dict[str, object] = {}
    for name, guess in guesses.items():
        err = np.abs(guess - truth).mean(axis=1) * 100
        table: dict[str, float] = {"all": round(float(err.mean()), 4)}
        for k, kind in enumerate(KINDS):
            table[kind] = round(float(err[test["kind"] == k].mean()), 4)
        for lo, hi in RATIO_BANDS:
            inside = (ratio >= lo) & (ratio < hi)
            table[f"ratio {lo:g}-{hi:g}"] = round(float(err[inside].mean()), 4)
        out[name] = table
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--test", type=int, default=800)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-seeds",
        type=int,
        nargs="+",
        default=[0, 2, 3],
        help="draw a training set of --train samples with each seed and train on them all "
        "(default: 0 2 3, the bundled model's)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "black_offset")
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=ROOT / "src" / "darkraw" / "data" / "black_offset_model.safetensors",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "black_offset_training.json",
    )
    args = parser.parse_args()
    files = collect_sources([DATA / "clean"])
    train_files, test_files = split_sources(files, 0.08)
    sets = [
        cached_set(args.cache, "train", train_files, args.train, seed, args.workers)
        for seed in args.data_seeds
    ]
    train = {k: np.concatenate([s[k] for s in sets]) for k in sets[0]}
    test = cached_set(args.cache, "test", test_files, args.test, args.seed + 1, args.workers)
    start = time.perf_counter()
    model = train_black_offset_model(train, steps=args.steps, width=args.width, seed=args.seed)
    seconds = time.perf_counter() - start
    report = {
        "train_samples": len(train["x"]),
        "test_samples": args.test,
        "steps": args.steps,
        "width": args.width,
        "seed": args.seed,
        "train_seconds": round(seconds, 1),
        "test_error_percent_of_white": errors(model, test),
    }
    print(json.dumps(report, indent=2), flush=True)
    card = {
        "card": json.dumps(
            {
                "what": "darkraw's learnt black-offset estimate",
                "trained_by": "scripts/train_black_offset.py",
                **{k: v for k, v in report.items() if k != "test_error_percent_of_white"},
            }
        )
    }
    save_black_offset_model(model, args.out, card)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} and {args.report}")


if __name__ == "__main__":
    main()
