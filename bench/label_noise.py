"""Finding label errors: 6,000 Fashion-MNIST training images written as class folders, 5% of
them moved into a wrong class's folder at random, then `imclass labels` over them; precision
and recall of the issues found against the planted ones, and the test accuracy (on 2,000
clean Fashion-MNIST test images) of training on the noisy labels against training after
applying the suggested corrections.

    .venv/bin/python bench/label_noise.py [--images 6000] [--noise 0.05] [--epochs 8]

Prints the matmul speed first (the machine's speed varies by up to 2x from day to day).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.own_images import matmul_gflops  # noqa: E402
from imclass.data import fashion_mnist  # noqa: E402

TEST_IMAGES = 2000


def write_dataset(root: Path, n: int, noise: float, seed: int) -> set[str]:
    """train/<class>/i.png with a `noise` share in a wrong class; test/ clean. Returns the
    planted names as the listing names them (class/file)."""
    train, test = fashion_mnist.load()
    rng = np.random.default_rng(seed)
    names = [c.replace("/", "-") for c in train.class_names]
    chosen = rng.choice(len(train), n, replace=False)
    flipped = set(rng.choice(n, int(round(noise * n)), replace=False).tolist())
    planted = set()
    for k, i in enumerate(chosen):
        label = int(train.labels[i])
        if k in flipped:
            label = int(rng.choice([c for c in range(len(names)) if c != label]))
            planted.add(f"{names[label]}/{k}.png")
        folder = root / "train" / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(train.images[i, 0].numpy()).save(folder / f"{k}.png")
    for j in rng.choice(len(test), TEST_IMAGES, replace=False):
        folder = root / "test" / names[int(test.labels[j])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[j, 0].numpy()).save(folder / f"t{j}.png")
    return planted


def imclass(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "imclass", *args], check=True, capture_output=True)


def test_accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test"]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{date.today()}: matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32)")
    work = Path(tempfile.mkdtemp())
    data = work / "fashion-noisy"
    planted = write_dataset(data, args.images, args.noise, args.seed)
    recipe = ["--model", "cnn", "--epochs", str(args.epochs), "--cache-dir",
              str(work / "cache"), "--quiet"]
    start = time.perf_counter()
    imclass("labels", str(data), "--folds", "5", "--out", str(work / "review"), *recipe)
    seconds = time.perf_counter() - start
    with (work / "review" / "label_issues.csv").open() as fh:
        issues = list(csv.DictReader(fh))
    found = {i["image"] for i in issues}
    hits = len(found & planted)
    print(f"imclass labels --folds 5 (cnn, {args.epochs} epochs a fold) over {args.images} "
          f"images with {len(planted)} planted errors: {len(found)} issues in {seconds:.0f} s")
    print(f"precision {hits / max(len(found), 1):.3f}, recall {hits / len(planted):.3f}")
    print(f"(out-of-fold probabilities kept in {work / 'review' / 'out_of_fold.npz'}; "
          f"planted: {work / 'planted.txt'})")
    (work / "planted.txt").write_text("\n".join(sorted(planted)))
    corrections = str(work / "review" / "corrections.csv")
    imclass("train", "--data", str(data), "--out", str(work / "noisy"), *recipe)
    imclass("train", "--data", str(data), "--out", str(work / "fixed"), "--relabel",
            corrections, *recipe)
    print(f"test accuracy on {TEST_IMAGES} clean test images: noisy labels "
          f"{test_accuracy(work / 'noisy'):.4f}, after the suggested relabelling "
          f"{test_accuracy(work / 'fixed'):.4f}")


if __name__ == "__main__":
    main()
