"""Tiny learnable image datasets written to a temp folder, in every layout the tests need.

Each label tints the image towards its own colour, so a small CNN learns it in a few epochs:
red, green and blue are one colour channel each; orange is red plus half green.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

TINTS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "orange": (1, 0.5, 0)}
FORMATS = (".jpg", ".png", ".bmp", ".gif")
TASK_LABELS = {  # what each task's rows look like, and which tint draws each class
    "multiclass": ["red", "green", "blue"],
    "binary": ["cat", "dog"],
    "hierarchical": ["warm/red", "warm/orange", "cool/blue", "cool/green"],
}
BINARY_TINT = {"cat": "red", "dog": "blue"}


def draw(labels, rng, size: int = 20) -> np.ndarray:
    img = rng.integers(0, 70, (size, size, 3)).astype(np.float64)
    for label in labels:
        name = BINARY_TINT.get(label, label.split("/")[-1])
        img += 150 * np.asarray(TINTS[name])[None, None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


def label_sets(task: str, n: int, rng) -> list[tuple[str, ...]]:
    if task == "multilabel":
        names = ["red", "green", "blue"]
        out = []
        while len(out) < n:
            chosen = tuple(c for c in names if rng.random() < 0.5)
            if chosen:
                out.append(chosen)
        return out
    classes = TASK_LABELS[task]
    return [(classes[i % len(classes)],) for i in range(n)]


def write_csv_split(folder: Path, sets, rng, *, sep: str = ";", bom: bool = False,
                    start: int = 0) -> list[Path]:
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    rows = [["image", "label"]]
    for i, labels in enumerate(sets, start=start):
        path = images / f"img{i:04d}{FORMATS[i % len(FORMATS)]}"
        Image.fromarray(draw(labels, rng)).save(path)
        paths.append(path)
        rows.append([path.name, sep.join(labels)])
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        csv.writer(f).writerows(rows)
    return paths


def csv_dataset(root: Path, task: str, n_train: int = 60, n_test: int = 24, seed: int = 0,
                test: bool = True, **kw) -> Path:
    rng = np.random.default_rng(seed)
    write_csv_split(root / "train", label_sets(task, n_train, rng), rng, **kw)
    if test:
        write_csv_split(root / "test", label_sets(task, n_test, rng), rng, start=n_train, **kw)
    return root


def folder_dataset(root: Path, task: str = "multiclass", n_train: int = 20, n_test: int = 8,
                   seed: int = 0) -> Path:
    """train/<class>/*.ext and test/<class>/*.ext; path labels become nested folders."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in TASK_LABELS[task]:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(draw((c,), rng)).save(folder / f"{i:03d}{FORMATS[i % 4]}")
    return root


def bomb_png(path: Path, side: int = 40_000) -> Path:
    """A valid PNG whose header claims side x side pixels (1.6 billion: over Pillow's limit)
    in a few hundred bytes, for the decompression-bomb refusal."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path
