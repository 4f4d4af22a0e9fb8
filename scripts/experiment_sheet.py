"""A compact comparison sheet of a finished ``darkraw experiment`` for the docs.

Picks a few test pairs (one scene per row, the given ratio) and a few of the experiment's
models under short labels, and writes ``sheet.png`` through
:func:`darkraw.training.evaluate.evaluate`.

Usage:
    python scripts/experiment_sheet.py runs/experiment_sid_proxy \\
        runs/sid_proxy/test/Sony_test_list.txt --ratio 300 --rows 3 \\
        -o docs/images/experiment_proxy_sheet.png
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from darkraw.nn.infer import load_model
from darkraw.training.evaluate import Method, classic_method, evaluate
from darkraw.training.experiment import tiled_network_method
from darkraw.training.sid import read_list

#: Short label -> run folder of the experiment.
RUNS = {
    "zero-shot": "pretrain",
    "baseline 10%": "baseline_10%",
    "seed tr. 10%": "transfer_seed_10%",
    "full tr. 10%": "transfer_full_10%",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("test_list", type=Path)
    parser.add_argument("--ratio", type=float, default=300)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    pairs, scenes = [], set()
    for pair in read_list(args.test_list):
        if pair.ratio_class == args.ratio and pair.scene not in scenes:
            pairs.append(pair)
            scenes.add(pair.scene)
    pairs = pairs[: args.rows]
    methods: dict[str, Method] = {"classic (NLM)": classic_method("nlm")}
    for label, run in RUNS.items():
        methods[label] = tiled_network_method(
            load_model(args.experiment / run / "model.safetensors")
        )
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate(pairs, methods, tmp, cache_dir=Path("runs/sid_ground_truth"))
        shutil.copyfile(result.folder / "sheet.png", args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
