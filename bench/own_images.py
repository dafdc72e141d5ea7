"""A user's own images with default flags: the recipe imclass chooses from the data, against
today's plain defaults (`--recipe none`, Fashion-MNIST's recipe), side by side in one sitting.

    .venv/bin/python bench/own_images.py [--runs 1] [--only fmnist-300,photos-300]
                                         [--versus '--ema 0.999' | --trees BEFORE,AFTER]

Datasets (written under --work by this script, class folders with a test/ folder of their own):
- fmnist-N: N Fashion-MNIST training images (N/10 per class, stratified, 28x28 greyscale PNG)
  and 2,000 test images (200 per class) from the official test set;
- photos-300: a photo-like set of three classes (a disc, a square or a triangle cut out of one
  of scikit-image's colour photographs, lit, tinted and laid on a crop of another), 300
  training and 300 test JPEGs of 300 to 500 px a side. No real photo set can be fetched on
  this machine, so this stands in for one: real photographic texture and JPEG statistics, and
  an object at any place, scale and turn that only its outline tells apart;
- photos-3000: the same kind, 3,000 training and 600 test JPEGs (seed 2), and photos-1500 and
  photos-2000, its first 1,500 or 2,000 training images with the same test images (hard
  links): sets that a CPU's budget trains at 128, 192 and 160 px.

Each run is a fresh `imclass train --data DIR` process, timed end to end. Printed per run: test
accuracy, wall time, epochs, and the stability check of issue 9 (training loss after the
first epoch never above its first-epoch value; the kept model is the best validation epoch).
The machine's matmul speed is printed first: it varies by up to 2x from day to day.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FASHION_SIZES = (300, 3000, 12000)
# Training photos of the larger photo sets drawn from photos-3000: a CPU's budget trains 1,200
# (after validation) at 192 px, 1,600 at 160
LARGER_PHOTOS = (1500, 2000)
# The transfer recipe's stages before issue 29, as flags: a quarter of the epochs with the
# backbone frozen (each through the backbone), then the whole network fine-tuned.
BEFORE_29 = {
    "photos-300": "--feature-views 0 --unfreeze all --epochs 25 --freeze-epochs 6 --patience 8",
    "fmnist-300": "--feature-views 0 --unfreeze all --epochs 30 --freeze-epochs 7 "
                  "--patience 10"}
PHOTO_CLASSES = ("disc", "box", "cone")
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
               "hubble_deep_field", "retina")


def machine_line(batch: int) -> str:
    """The header a step benchmark prints: date, CPU, cores, torch and its fp32 matmul."""
    import torch

    from imclass.devices import cpu_name
    return (f"{time.strftime('%Y-%m-%d')} {cpu_name()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__}; matmul {matmul_gflops():.0f} GFLOP/s (fp32); batch {batch}")


def matmul_gflops(n: int = 4096, dtype=None, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matmul, fp32 unless `dtype` says (torch.bfloat16): the median of
    `repeats` timed products after one untimed (a single one moved by 1.6x within a minute
    on the shared machine)."""
    import torch

    a = torch.randn(n, n, dtype=dtype)
    torch.mm(a, a)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, a)
        seconds.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(seconds) / 1e9


def write_fashion(root: Path, n_train: int, n_test: int = 2000, seed: int = 0) -> Path:
    """Class folders of PNGs: a stratified n_train of the official train set, n_test of test."""
    from imclass.data import fashion_mnist

    if (root / "done").is_file():
        return root
    train, test = fashion_mnist.load(None, None)
    rng = np.random.default_rng(seed)
    for split, data, n in (("train", train, n_train), ("test", test, n_test)):
        labels = data.labels.numpy()
        for k, name in enumerate(data.class_names):
            folder = root / split / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            picks = rng.choice(np.flatnonzero(labels == k), n // len(data.class_names),
                               replace=False)
            for i in picks:
                Image.fromarray(data.images[i, 0].numpy()).save(folder / f"{i:05d}.png")
    (root / "done").write_text("")
    return root


def _crop(rng: np.random.Generator, photo: np.ndarray, w: int, h: int) -> Image.Image:
    """A w x h crop of `photo`, scaled up by a random factor first."""
    scale = rng.uniform(max(w / photo.shape[1], h / photo.shape[0]), 2.0)
    img = Image.fromarray(photo).resize((int(photo.shape[1] * scale) + 1,
                                         int(photo.shape[0] * scale) + 1))
    x0, y0 = rng.integers(0, img.width - w + 1), rng.integers(0, img.height - h + 1)
    return img.crop((x0, y0, x0 + w, y0 + h))


def _photo(rng: np.random.Generator, photos: list[np.ndarray], label: str) -> Image.Image:
    """One image: a crop of a photograph with an object cut from another one laid on it, so
    only the object's outline tells the class (its texture, colour and light do not)."""
    w, h = (int(v) for v in rng.integers(300, 501, 2))
    first, second = rng.choice(len(photos), 2, replace=False)
    img = _crop(rng, photos[first], w, h)
    side = rng.uniform(0.2, 0.5) * min(w, h)
    r = side / 2
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    if label == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        corners = 4 if label == "box" else 3
        angle = rng.uniform(0, 2 * np.pi)
        draw.polygon([(cx + r * np.cos(angle + 2 * np.pi * k / corners),
                       cy + r * np.sin(angle + 2 * np.pi * k / corners))
                      for k in range(corners)], fill=255)
    # the object: another photograph's texture, lit from one side and tinted
    yy, xx = np.mgrid[0:h, 0:w]
    light = rng.uniform(-1, 1, 2)
    shade = 1 + 0.3 * ((xx - cx) * light[0] + (yy - cy) * light[1]) / side
    tint = rng.uniform(0.6, 1.4, 3)
    texture = np.asarray(_crop(rng, photos[second], w, h), dtype=np.float64)
    obj = np.clip(texture * shade[..., None] * tint[None, None, :], 0, 255)
    # visible: at least 50 grey levels between the object and what it covers, on average
    inside = np.asarray(mask) > 0
    gap = obj[inside].mean() - np.asarray(img, dtype=np.float64)[inside].mean()
    if abs(gap) < 50:
        up = gap >= 0 if obj[inside].mean() < 180 else False
        obj = np.clip(obj + (50 - abs(gap)) * (1 if up else -1), 0, 255)
    obj = obj.astype(np.uint8)
    # a soft shadow below it, as a real object casts: what makes its outline visible
    shadow = np.asarray(mask.filter(ImageFilter.GaussianBlur(side / 12)), dtype=np.float64)
    shadow = np.roll(shadow, (int(side / 15), int(side / 15)), axis=(0, 1))[..., None] / 255
    img = Image.fromarray((np.asarray(img) * (1 - 0.6 * shadow)).astype(np.uint8))
    soft = mask.filter(ImageFilter.GaussianBlur(1.5))
    return Image.composite(Image.fromarray(obj), img, soft)


def write_photos(root: Path, n_train: int = 300, n_test: int = 300, seed: int = 0) -> Path:
    import skimage.data

    if (root / "done").is_file():
        return root
    photos = [getattr(skimage.data, name)()[..., :3] for name in BACKGROUNDS]
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            label = PHOTO_CLASSES[i % len(PHOTO_CLASSES)]
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            _photo(rng, photos, label).save(folder / f"{i:04d}.jpg",
                                                 quality=int(rng.integers(80, 96)))
    (root / "done").write_text("")
    return root


def first_photos(source: Path, root: Path, n_train: int) -> Path:
    """`source`'s first `n_train` training photos (by number) and all its test photos, as hard
    links: a smaller set drawn from the same photos, tested on the same images."""
    if (root / "done").is_file():
        return root
    for path in source.rglob("*.jpg"):
        relative = path.relative_to(source)
        if relative.parts[0] == "train" and int(path.stem) >= n_train:
            continue
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, root / relative)
    (root / "done").write_text("")
    return root


def stable(history: list[dict], best_epoch: int) -> bool:
    """Issue 9's check: the training loss after epoch 1 never above epoch 1's, and the kept
    epoch the one with the lowest validation loss (the last one without validation)."""
    first = history[0]["train_loss"]
    if all(math.isnan(row["val_loss"]) for row in history):
        kept = len(history)
    else:
        kept = min(range(len(history)), key=lambda i: history[i]["val_loss"]) + 1
    return all(row["train_loss"] <= first for row in history[1:]) and best_epoch == kept


def one_run(data: Path, out: Path, flags: list[str], seed: int, tree: Path | None = None
            ) -> dict:
    """One `imclass train` process, with `tree`'s code where given (a checkout: `python -m`
    imports the package from its working directory first)."""
    command = [sys.executable, "-m", "imclass", "train", "--data", str(data.resolve()),
               "--out", str(out.resolve()), "--overwrite", "--quiet", "--seed", str(seed), *flags]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=tree)
    wall = time.perf_counter() - start
    test = json.loads((out / "metrics.json").read_text())["test"]
    run = json.loads((out / "run.json").read_text())
    with (out / "history.csv").open() as fh:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return {"accuracy": test["accuracy"], "wall_s": wall, "epochs": run["epochs_run"],
            "stable": stable(history, run["best_epoch"]),
            "recipe": (run.get("recipe") or {}).get("line", "")}


def compare_trees(folder: Path, out: Path, name: str, trees: list[Path], runs: int) -> None:
    """Default flags, each seed with every tree's code in turn; rows as main's, a median each."""
    results: dict[Path, list[dict]] = {tree: [] for tree in trees}
    for seed in range(runs):
        for tree in trees:
            r = one_run(folder, out / f"{tree.name}-{seed}", [], seed, tree)
            results[tree].append(r)
            print(f"| {name} | {tree.name} | {seed} | {r['accuracy']:.4f} | {r['wall_s']:.0f} | "
                  f"{r['epochs']} | {'yes' if r['stable'] else 'NO'} |", flush=True)
    for tree, rs in results.items():
        print(f"| **{name}** | **{tree.name}, median** | | "
              f"**{statistics.median(r['accuracy'] for r in rs):.4f}** | "
              f"{statistics.median(r['wall_s'] for r in rs):.0f} | | |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="seeds per dataset and recipe")
    parser.add_argument("--only", default="",
                        help="comma-separated dataset names (default: the fmnist sets and "
                             "photos-300; photos-1500, -2000 and -3000 run when named)")
    parser.add_argument("--work", default="runs/bench-own-images")
    parser.add_argument("--make-only", action="store_true", help="write the datasets, no runs")
    parser.add_argument("--versus", default="",
                        help="flags added to the chosen recipe for the second contender, "
                             "e.g. '--ema 0.999' (default: --recipe none, the plain defaults);"
                             " 'before-29': the transfer recipe as it was before issue 29 "
                             "(every epoch of the frozen stage through the backbone, then the "
                             "whole network fine-tuned)")
    parser.add_argument("--trees", default="",
                        help="two checkouts, comma-separated: each seed runs the default recipe "
                             "with the first tree's code, then the second's (A B A B)")
    args = parser.parse_args()
    work = Path(args.work)
    datasets = {f"fmnist-{n}": (lambda n=n: write_fashion(work / "data" / f"fmnist-{n}", n))
                for n in FASHION_SIZES}
    datasets["photos-300"] = lambda: write_photos(work / "data" / "photos-300")
    datasets["photos-3000"] = lambda: write_photos(work / "data" / "photos-3000", 3000, 600, 2)
    for n in LARGER_PHOTOS:  # the first n of photos-3000's, tested on the same images
        datasets[f"photos-{n}"] = lambda n=n: first_photos(datasets["photos-3000"](),
                                                           work / "data" / f"photos-{n}", n)
    # the larger photo sets (3-5 minutes a run on 2 cores) only when named
    chosen = [d for d in args.only.split(",") if d] or [
        d for d in datasets if d.startswith("fmnist") or d == "photos-300"]
    from imclass.devices import cpu_name
    print(f"{date.today()}: {cpu_name()}, {os.cpu_count()} cores, matmul "
          f"{matmul_gflops():.0f} GFLOP/s (4096x4096 fp32)", flush=True)
    versus = args.versus.split()
    print("| dataset | recipe | seed | test accuracy | wall time (s) | epochs | stable |")
    print("|---|---|---|---|---|---|---|")
    for name in chosen:
        folder = datasets[name]()
        if args.make_only:
            continue
        if args.trees:
            compare_trees(folder, work / "runs" / name, name,
                          [Path(t).resolve() for t in args.trees.split(",")], args.runs)
            continue
        if args.versus == "before-29":
            versus = BEFORE_29[name].split()
        recipes = {"chosen from the data (default)": [],
                   (f"chosen + {' '.join(versus)}" if versus
                    else "today's defaults (--recipe none)"): versus or ["--recipe", "none"]}
        for recipe, flags in recipes.items():
            results = []
            for seed in range(args.runs):
                tag = "-".join(f.lstrip("-") for f in flags) or "auto"
                r = one_run(folder, work / "runs" / name / f"{tag}-{seed}", flags, seed)
                results.append(r)
                print(f"| {name} | {recipe} | {seed} | {r['accuracy']:.4f} | {r['wall_s']:.0f} | "
                      f"{r['epochs']} | {'yes' if r['stable'] else 'NO'} |", flush=True)
            if args.runs > 1:
                print(f"| **{name}** | **{recipe}, median** | | "
                      f"**{statistics.median(r['accuracy'] for r in results):.4f}** | "
                      f"{statistics.median(r['wall_s'] for r in results):.0f} | | |", flush=True)
            if results[0]["recipe"]:
                print(f"|  | {results[0]['recipe']} | | | | | |", flush=True)


if __name__ == "__main__":
    main()
