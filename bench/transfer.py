"""Few images per class: our CNN from scratch against pretrained EfficientNet-Lite0 fine-tuned
with the freeze-then-unfreeze workflow, side by side on the same Fashion-MNIST subset.

Each recipe trains on a stratified subset of `--per-class` images per class (the minimum our
users are told to collect; a fifth of them is the validation split) and is scored on the full
10,000-image test set. Run i of each recipe uses --seed i, so both see the same images. Each
run is a fresh `imclass train` process, timed end to end. Prints a Markdown table.

    .venv/bin/python bench/transfer.py [--per-class 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

RECIPES = {
    # the default recipe, given the epochs a small set needs (early stopping still applies)
    "cnn from scratch": ["--model", "cnn", "--epochs", "40", "--batch-size", "32",
                         "--lr", "0.05", "--patience", "10"],
    # ImageNet weights (offline package), 5 epochs of the new head alone, then all layers at
    # a third of the rate with discriminative rates down the network, BatchNorm statistics
    # kept as pretrained (--freeze-bn: see docs/models.md)
    "efficientnet_lite0 pretrained, fine-tuned": [
        "--model", "efficientnet_lite0", "--pretrained", "--image-size", "96", "--freeze-bn",
        "--epochs", "20", "--freeze-epochs", "5", "--batch-size", "32", "--optimizer",
        "adamw", "--lr", "0.003", "--fine-tune-lr", "0.001", "--lr-mult", "0.7",
        "--weight-decay", "0.01", "--patience", "8"],
}


def one_run(out: Path, seed: int, subset: int, flags: list[str]) -> dict:
    command = [sys.executable, "-m", "imclass", "train", "--out", str(out), "--overwrite",
               "--quiet", "--seed", str(seed), "--subset", str(subset), *flags]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    test = json.loads((out / "metrics.json").read_text())["test"]
    run = json.loads((out / "run.json").read_text())
    return {"seed": seed, "wall_s": wall, "accuracy": test["accuracy"],
            "f1": test["f1_macro"], "epochs": run["epochs_run"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="runs/bench-transfer")
    args = parser.parse_args()
    subset = args.per_class * 10
    rows = []
    for name, flags in RECIPES.items():
        for seed in range(args.runs):
            r = one_run(Path(args.out) / f"{name.split()[0]}-{seed}", seed, subset, flags)
            rows.append((name, r))
            print(f"{name}, seed {seed}: test accuracy {r['accuracy']:.4f}, macro F1 "
                  f"{r['f1']:.4f}, {r['epochs']} epochs, {r['wall_s']:.0f} s", file=sys.stderr)
    print(f"\n{date.today()}, {subset} training images ({args.per_class} per class), "
          "scored on the 10,000 test images\n")
    print("| recipe | seed | test accuracy | macro F1 | epochs | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['seed']} | {r['accuracy']:.4f} | {r['f1']:.4f} | {r['epochs']} | "
              f"{r['wall_s']:.0f} |")
    for name in RECIPES:
        mine = [r for n, r in rows if n == name]
        print(f"| **{name}, median** | | **{statistics.median(r['accuracy'] for r in mine):.4f}**"
              f" | {statistics.median(r['f1'] for r in mine):.4f} | | "
              f"{statistics.median(r['wall_s'] for r in mine):.0f} |")
    for name, flags in RECIPES.items():
        print(f"\n`{name}`: `imclass train --subset {subset} {' '.join(flags)}`")


if __name__ == "__main__":
    main()
