"""Imbalanced classes: each `--balance` method against none, side by side in one sitting.

    .venv/bin/python bench/imbalance.py [--runs 3] [--only fmnist-10to1,photos-10to1]
                                        [--methods none,weights,sqrt,effective,sampler]
                                        [--first-seed 0]

Datasets (written under --work, class folders with a test/ folder of their own; the test set
has the training set's imbalance, as a user's own held-out images would, with enough rare
images to measure their recall):
- fmnist-10to1: Fashion-MNIST, the even classes (T-shirt/top, Pullover, Coat, Shirt, Bag) cut
  to a tenth: 400 training images of each common class, 40 of each rare one; test 500 and 50;
- fmnist-50to1: the same cut to a fiftieth: 500 and 10; test 1,000 and 20;
- photos-10to1: bench/own_images.py's photo-like set, the triangle ("cone") a tenth of the
  others: 150, 150 and 15 training JPEGs; test 300, 300 and 30.

Each run is a fresh `imclass train --data DIR --balance METHOD` process with the recipe's
defaults otherwise. Printed per run and as medians over the seeds: the rare classes' mean
recall, balanced accuracy, plain accuracy (on the imbalanced test set) and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from own_images import BACKGROUNDS, PHOTO_CLASSES, _photo, matmul_gflops  # noqa: E402

FASHION_RARE = (0, 2, 4, 6, 8)  # class indices cut down: the tops that look alike, and Bag
FASHION = {"fmnist-10to1": {"train": (400, 40), "test": (500, 50)},
           "fmnist-50to1": {"train": (500, 10), "test": (1000, 20)}}
PHOTO_RARE = "cone"
PHOTOS = {"train": (150, 15), "test": (300, 30)}
METHODS = ("none", "weights", "sqrt", "effective", "sampler")


def write_fashion(root: Path, sizes: dict, seed: int = 0) -> tuple[Path, list[str]]:
    """Class folders of PNGs, the FASHION_RARE classes cut down; returns the rare names."""
    from imclass.data import fashion_mnist

    train, test = fashion_mnist.load(None, None)
    names = [n.replace("/", "-") for n in train.class_names]
    rare = [names[k] for k in FASHION_RARE]
    if (root / "done").is_file():
        return root, rare
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, data in (("train", train), ("test", test)):
        common, few = sizes[split]
        labels = data.labels.numpy()
        for k, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            n = few if k in FASHION_RARE else common
            for i in rng.choice(np.flatnonzero(labels == k), n, replace=False):
                Image.fromarray(data.images[i, 0].numpy()).save(folder / f"{i:05d}.png")
    (root / "done").write_text("")
    return root, rare


def write_photos(root: Path, seed: int = 0) -> tuple[Path, list[str]]:
    """The photo-like set with PHOTO_RARE a tenth of the others."""
    if (root / "done").is_file():
        return root, [PHOTO_RARE]
    import skimage.data

    photos = [getattr(skimage.data, name)()[..., :3] for name in BACKGROUNDS]
    rng = np.random.default_rng(seed)
    for split, (common, few) in PHOTOS.items():
        for label in PHOTO_CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(few if label == PHOTO_RARE else common):
                _photo(rng, photos, label).save(folder / f"{i:04d}.jpg",
                                                quality=int(rng.integers(80, 96)))
    (root / "done").write_text("")
    return root, [PHOTO_RARE]


def one_run(data: Path, out: Path, method: str, seed: int, rare: list[str]) -> dict:
    command = [sys.executable, "-m", "imclass", "train", "--data", str(data), "--out", str(out),
               "--overwrite", "--quiet", "--seed", str(seed), "--balance", method]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    test = json.loads((out / "metrics.json").read_text())["test"]
    recall = {name: m["recall"] for name, m in test["per_class"].items()}
    return {"rare_recall": statistics.mean(recall[n] for n in rare),
            "common_recall": statistics.mean(r for n, r in recall.items() if n not in rare),
            "balanced_accuracy": test["balanced_accuracy"], "accuracy": test["accuracy"],
            "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="seeds per dataset and method")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed onwards")
    parser.add_argument("--only", default="", help="comma-separated dataset names")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--work", default="runs/bench-imbalance")
    parser.add_argument("--make-only", action="store_true", help="write the datasets, no runs")
    args = parser.parse_args()
    work = Path(args.work)
    datasets = {name: (lambda name=name: write_fashion(work / "data" / name, FASHION[name]))
                for name in FASHION}
    datasets["photos-10to1"] = lambda: write_photos(work / "data" / "photos-10to1")
    chosen = [d for d in args.only.split(",") if d] or list(datasets)
    from imclass.devices import cpu_name
    print(f"{date.today()}: {cpu_name()}, {os.cpu_count()} cores, matmul "
          f"{matmul_gflops():.0f} GFLOP/s (4096x4096 fp32)", flush=True)
    print("| dataset | --balance | seed | rare recall | common recall | balanced accuracy | "
          "accuracy | wall (s) |\n|---|---|---:|---:|---:|---:|---:|---:|", flush=True)
    results = {}
    for name in chosen:
        data, rare = datasets[name]()
        if args.make_only:
            continue
        for seed in range(args.first_seed, args.first_seed + args.runs):
            for method in args.methods.split(","):  # methods interleaved: drift hits all alike
                r = one_run(data, work / "runs" / f"{name}-{method}-{seed}", method, seed, rare)
                results.setdefault(f"{name} {method}", []).append(r)
                print(f"| {name} | {method} | {seed} | {r['rare_recall']:.3f} | "
                      f"{r['common_recall']:.3f} | {r['balanced_accuracy']:.4f} | "
                      f"{r['accuracy']:.4f} | {r['wall_s']:.0f} |", flush=True)
    print(f"\nmedians of {args.runs} seed(s):\n| dataset | --balance | rare recall | "
          "common recall | balanced accuracy | accuracy | wall (s) |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for key, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {' | '.join(key.split())} | {med['rare_recall']:.3f} | "
              f"{med['common_recall']:.3f} | {med['balanced_accuracy']:.4f} | "
              f"{med['accuracy']:.4f} | {med['wall_s']:.0f} |")
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
