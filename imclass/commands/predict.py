"""`imclass predict`: a model's decisions on image files, from a few to a few hundred thousand.

Inputs are files, folders (searched recursively for images), glob patterns or CSV files of
paths. Images are decoded in worker processes (a torch DataLoader: bounded prefetch, so memory
stays flat however many files there are) and scored in batches by the predictor (predictor.py).
A file that cannot be read becomes a row with an `error` and the rest are still scored.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from imclass.atomic import atomic_write
from imclass.contract import Contract
from imclass.data.folders import walk_images
from imclass.errors import ConfigError, DataError, memory_stage
from imclass.predictor import Predictor, load, pixels_of

PATH_COLUMNS = ("image", "path", "file", "filename")


def predict(model: str | Path, images: Iterable[str | Path], top_k: int = 3,
            backend: str | None = None) -> list[dict]:
    """For each image (files, folders, globs, CSVs of paths): the top-k classes with
    probabilities and the task's decision; {"image", "error"} for one that cannot be read."""
    predictor = load(model, backend)
    return list(predict_files(predictor, collect(images), top_k))


def collect(inputs: Iterable[str | Path], skipped: list[Path] | None = None) -> list[str]:
    """Image paths from files, folders (recursive, sorted), globs and CSV files of paths. A
    missing path or a pattern matching nothing is kept: it becomes an error row. The files
    of a folder that are not images (by their extension) go into `skipped`."""
    paths: list[str] = []
    for given in map(str, inputs):
        p = Path(given)
        if p.is_dir():  # linked folders followed, link loops not (as datasets are listed)
            walk = walk_images(p)
            paths += [str(f) for f in walk.files]
            if skipped is not None:
                skipped += walk.others
        elif p.is_file() and p.suffix.lower() == ".csv":
            paths += paths_in_csv(p)
        elif not p.exists() and any(ch in given for ch in "*?["):
            found = sorted(f for f in glob.glob(given, recursive=True) if Path(f).is_file())
            paths += found or [given]
        else:
            paths.append(given)
    if not paths:
        raise ConfigError("no images to predict: the folders given hold no image files")
    return paths


def paths_in_csv(path: Path) -> list[str]:
    """The image column of a CSV (named image, path, file or filename; else the first),
    relative paths resolved against the CSV's folder, or its images/ folder."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable CSV of image paths ({exc})") from None
    if not rows:
        raise DataError(f"{path} is empty; give one image path per row")
    header = [c.strip().lower() for c in rows[0]]
    column = next((header.index(n) for n in PATH_COLUMNS if n in header), None)
    body = rows[1:] if column is not None else rows
    out = []
    for r in body:
        name = Path(r[column or 0].strip())
        if not name.is_absolute():
            beside, under = path.parent / name, path.parent / "images" / name
            name = under if not beside.exists() and under.exists() else beside
        out.append(str(name))
    return out


class Decoding:
    """Batch b of the paths, decoded in a worker process: (positions, uint8 [n, C, D, D] of
    those that decoded, {position: error message} of those that did not). One array per
    batch crosses the process boundary, not one per image. (A map-style dataset for torch's
    DataLoader, which needs only __len__ and __getitem__: this module imports no torch.)"""

    def __init__(self, paths: list[str], contract: Contract, batch_size: int):
        self.paths, self.contract, self.batch_size = paths, contract, batch_size

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, b: int):
        c = self.contract
        positions = range(b * self.batch_size, min(len(self.paths), (b + 1) * self.batch_size))
        pixels = np.empty((len(positions), c.input_channels, c.decoded_size, c.decoded_size),
                          np.uint8)
        errors, n = {}, 0
        for k in positions:
            try:
                pixels[n] = pixels_of(self.paths[k], c)
                n += 1
            except DataError as exc:  # the row names the file: the reason alone
                errors[k] = getattr(exc, "reason", str(exc))
        return list(positions), pixels[:n], errors


def unchanged(batch):
    return batch  # numpy stays numpy (DataLoader would make tensors of it)


def decoded_batches(paths: list[str], contract: Contract, batch_size: int,
                    workers: int | None) -> Iterator[tuple[list[int], np.ndarray, dict]]:
    if workers is None:  # a process start costs more than decoding a batch or two
        workers = 0 if len(paths) <= 2 * batch_size else min(8, os.cpu_count() or 1)
    batches = Decoding(paths, contract, batch_size)
    if not workers:  # here, in order (without importing torch for its DataLoader)
        yield from (batches[b] for b in range(len(batches)))
        return
    import torch

    yield from torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=unchanged,
                                           num_workers=workers, prefetch_factor=4)


def predict_files(predictor: Predictor, paths: list[str], top_k: int = 3,
                  batch_size: int = 64, workers: int | None = None,
                  progress: bool = False) -> Iterator[dict]:
    """Results in the order of `paths`, a batch at a time."""
    from tqdm import tqdm

    bar = tqdm(total=len(paths), unit="img", disable=not progress or None,
               desc="predicting", dynamic_ncols=True)
    c = predictor.contract
    with bar:
        for positions, pixels, errors in decoded_batches(paths, c, batch_size, workers):
            with memory_stage(f"predicting {len(paths)} images at {c.input_channels}x"
                              f"{c.decoded_size}x{c.decoded_size} in batches of {batch_size}",
                              "give a smaller --batch-size"):
                decided = iter(predictor.decisions(predictor.probabilities(pixels), top_k)
                               if len(pixels) else [])
            for k in positions:
                yield ({"image": paths[k], "error": errors[k]} if k in errors
                       else {"image": paths[k], **next(decided)})
            bar.update(len(positions))


def csv_row(result: dict, top_k: int) -> dict:
    row = {"image": result["image"], "decision": "", "error": result.get("error", "")}
    if "labels" in result:
        row["decision"] = ";".join(result["labels"])
    elif "decision" in result:
        row["decision"] = result["decision"]
    for n, t in enumerate(result.get("top", [])[:top_k], start=1):
        row[f"class_{n}"], row[f"probability_{n}"] = t["class"], f"{t['probability']:.6f}"
    if "path" in result:
        row["path"] = " > ".join(f"{n['node']} ({n['probability']:.4f})" for n in result["path"])
    return row


def write_predictions(results: Iterable[dict], out: Path, top_k: int, task: str) -> dict:
    """Stream results into `out` (.csv or .jsonl) through a temporary file renamed at the end;
    returns {"images", "failed"}."""
    counts = {"images": 0, "failed": 0}
    columns = ["image", "decision"] + [f"{c}_{n}" for n in range(1, top_k + 1)
                                       for c in ("class", "probability")]
    columns += (["path"] if task == "hierarchical" else []) + ["error"]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns, restval="") if out.suffix == ".csv" else None
            if writer:
                writer.writeheader()
            for result in results:
                counts["images"] += 1
                counts["failed"] += "error" in result
                if writer:
                    writer.writerow(csv_row(result, top_k))
                else:
                    fh.write(json.dumps(result) + "\n")
    atomic_write(out, write)
    return counts


def check_output(out: Path | None) -> None:
    if out is not None and out.suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"--out {out}: give a .csv or .jsonl file")
