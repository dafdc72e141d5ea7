"""Ingest speed of a folder of JPEGs: imclass's decode-once cache (first run, and a later run
that reuses it) against a plain PIL + torch DataLoader loop that decodes every epoch.

    .venv/bin/python bench/ingest.py [--images 3000] [--size 128] [--repeats 3]

Writes a class-folder dataset of photo-like JPEGs (640x480, smooth shapes plus noise, about
the byte size of a phone photo scaled down) under --work, then times, per repeat:
- cold: `load_folder` with an empty cache (hash, header, decode + resize in a process pool);
- warm: `load_folder` again (hash every file, then memory-map the cached array);
- dataloader: one epoch of a torch DataLoader whose Dataset opens, converts and resizes each
  file with PIL (what most tutorials do), with the same number of worker processes.
Prints images/s for each, medians over the repeats.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "stripes")


def write_dataset(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        c = CLASSES[i % len(CLASSES)]
        folder = root / "train" / c
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.uniform(40, 200, 3)
        img = np.broadcast_to(base, (480, 640, 3)).copy()
        cx, cy, r = rng.uniform(160, 480), rng.uniform(120, 360), rng.uniform(60, 140)
        if c == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
        elif c == "square":
            mask = (abs(xx - cx) < r) & (abs(yy - cy) < r)
        else:
            mask = ((xx + yy) // 40) % 2 == 0
        img[mask] = 255 - base
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg",
                                                                    quality=90)


class PlainDataset:
    """The usual per-epoch pipeline: open, convert, resize, to tensor, for every item."""

    def __init__(self, files: list[Path], size: int):
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import torch
        with Image.open(self.files[i]) as img:
            array = np.asarray(img.convert("RGB").resize((self.size, self.size),
                                                         Image.Resampling.BILINEAR))
        return torch.from_numpy(array.copy()).permute(2, 0, 1), i % len(CLASSES)


def time_dataloader(files: list[Path], size: int, workers: int) -> float:
    from torch.utils.data import DataLoader

    start = time.perf_counter()
    seen = 0
    for x, _ in DataLoader(PlainDataset(files, size), batch_size=64, shuffle=True,
                           num_workers=workers):
        seen += len(x)
    return seen / (time.perf_counter() - start)


def time_imclass(root: Path, cache: Path, size: int, workers: int) -> tuple[float, bool]:
    from imclass.config import DataConfig
    from imclass.data.own import load_folder

    cfg = DataConfig(source=str(root), cache_dir=str(cache), image_size=size, workers=workers)
    start = time.perf_counter()
    data = load_folder(cfg)
    n = sum(len(s) for s in data.sets.values())
    return n / (time.perf_counter() - start), data.cache_reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--work", default="runs/bench-ingest")
    args = parser.parse_args()
    work = Path(args.work)
    root = work / "photos"
    if not root.is_dir():
        write_dataset(root, args.images)
    files = sorted(root.rglob("*.jpg"))
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    print(f"{len(files)} JPEGs 640x480, {megabytes:.0f} MB; size {args.size}, "
          f"{args.workers} workers")
    results = {"cold": [], "warm": [], "dataloader": []}
    for repeat in range(args.repeats):
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        cold, reused = time_imclass(root, cache, args.size, args.workers)
        assert not reused
        warm, reused = time_imclass(root, cache, args.size, args.workers)
        assert reused
        loader = time_dataloader(files, args.size, args.workers)
        for key, value in (("cold", cold), ("warm", warm), ("dataloader", loader)):
            results[key].append(value)
        print(f"repeat {repeat + 1}: imclass first run {cold:.0f} images/s, cached run "
              f"{warm:.0f} images/s, PIL + DataLoader epoch {loader:.0f} images/s")
    medians = {k: statistics.median(v) for k, v in results.items()}
    print(f"median: imclass first run {medians['cold']:.0f}, cached {medians['warm']:.0f}, "
          f"PIL + DataLoader {medians['dataloader']:.0f} images/s")


if __name__ == "__main__":
    main()
