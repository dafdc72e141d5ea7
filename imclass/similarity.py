"""Visual similarity: the training images nearest a query by the model's penultimate features.

The index embeds every labelled image the run learnt from, its training and validation
splits (for Fashion-MNIST the 60,000 training images), once (PixelModel.embed: the same
decoding, crop and normalisation as prediction, then the features the head reads), keeps the
rows centred on their mean and L2-normalised in RUN/similarity/ (embeddings.npy, float32
[N, D], and index.json: the mean, what each row is, the checksum of the weights it came
from), and is rebuilt when the best checkpoint changes. Centring matters: features after a
ReLU all point into one orthant, so raw cosine similarities crowd near 1.

Search is exact: cosine similarity against every row is one matrix product. For the 60,000
Fashion-MNIST images at 128 features (31 MB) that is 7.7 MFLOPs a query, milliseconds on a
laptop CPU (docs/benchmarks.md), so an approximate index such as faiss would add a native
dependency and lose recall for nothing at the sizes imclass's users have; past a few million
images it would pay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imclass.atomic import atomic_write, atomic_write_text
from imclass.pixel_model import PixelModel
from imclass.data import prepare
from imclass.data.batches import eval_batch_within
from imclass.data.images import ImageSet
from imclass.errors import DataError
from imclass.predictor import describe, pixels_of, pixel_model_of_run
from imclass.runfolder import load_run

FOLDER = "similarity"
EMBED_BATCH = 256  # images per forward pass while indexing


@dataclass
class Index:
    features: np.ndarray  # float32 [N, D], centred unit rows
    mean: np.ndarray      # float32 [D], the raw features' mean, taken off every query too
    items: list[dict]     # per row: {"image": file (or "train #k"), "label": ...}
    sets: list[ImageSet]  # the images themselves (train, then validation), for galleries

    def pixels(self, rows) -> np.ndarray:
        """uint8 [len(rows), C, D, D] of index rows."""
        first = len(self.sets[0])
        return np.stack([self.sets[0].pixels(r) if r < first
                         else self.sets[1].pixels(r - first) for r in rows])


def features_of(module: PixelModel, pixels, device: torch.device) -> np.ndarray:
    """Raw penultimate features [N, D] of uint8 pixels [N, C, D, D]: an array, or an ImageSet
    read a batch at a time (never whole); EMBED_BATCH images a batch, fewer when they are large."""
    step = min(EMBED_BATCH, eval_batch_within(pixels.shape[-1] if isinstance(pixels, np.ndarray)
                                              else pixels.size[0]))
    if isinstance(pixels, ImageSet):
        batches = pixels.chunks(step)
    else:
        batches = (torch.from_numpy(np.ascontiguousarray(pixels[start:start + step]))
                   for start in range(0, len(pixels), step))
    out, done = None, 0
    with torch.inference_mode():  # into one array made once (see metrics.predict_probabilities)
        for batch in batches:
            features = module.embed(batch.to(device)).float().cpu().numpy()
            if out is None:
                out = np.empty((len(pixels), features.shape[1]), dtype=np.float32)
            out[done:done + len(features)] = features
            done += len(features)
    return out


def unit(features: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = features - mean
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def label_of(labels: torch.Tensor, row: int, names: tuple[str, ...], task: str):
    if task == "multilabel":
        return [names[k] for k in torch.nonzero(labels[row]).flatten().tolist()]
    return names[int(labels[row])]


def training_images(run_dir: Path) -> list[ImageSet]:
    """The run's training and validation splits, decoded as its model expects (through the
    decode cache)."""
    run = load_run(run_dir, device="cpu")
    splits = prepare(run.data_config, run.config.train.seed)
    return [s for s in (splits.train, splits.val) if len(s)]  # no val at --val-fraction 0


def items_of(images: ImageSet) -> list[dict]:
    rows = images.rows.tolist() if images.rows is not None else list(range(len(images)))
    return [{"image": images.files[n] if images.files else f"{images.source} train #{rows[n]}",
             "label": label_of(images.labels, n, images.class_names, images.task)}
            for n in range(len(images))]


def build(run_dir: Path, module: PixelModel, device: torch.device) -> Index:
    sets = training_images(run_dir)
    raw = np.concatenate([features_of(module, s, device) for s in sets])
    mean = raw.mean(0)
    features = unit(raw, mean).astype(np.float32)
    items = [item for s in sets for item in items_of(s)]
    folder = run_dir / FOLDER
    folder.mkdir(exist_ok=True)
    atomic_write(folder / "embeddings.npy", lambda tmp: save_array(tmp, features))
    atomic_write_text(folder / "index.json", json.dumps(
        {"weights_sha256": weights_checksum(run_dir), "mean": mean.tolist(), "items": items}))
    return Index(features, mean, items, sets)


def save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # np.save given a name would add ".npy" to it
        np.save(fh, array)


def weights_checksum(run_dir: Path) -> str:
    sidecar = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    return sidecar.get("weights_sha256", "")


def load_index(run_dir: Path, module: PixelModel, device: torch.device,
               log=lambda m: None) -> Index:
    """The run's index, built now when missing or older than its best checkpoint."""
    folder = run_dir / FOLDER
    try:
        meta = json.loads((folder / "index.json").read_text())
        if meta["weights_sha256"] == weights_checksum(run_dir):
            features = np.load(folder / "embeddings.npy")
            if len(features) == len(meta["items"]):
                return Index(features, np.asarray(meta["mean"], dtype=np.float32),
                             meta["items"], training_images(run_dir))
    except (OSError, ValueError, KeyError, EOFError):
        pass  # none yet, or damaged: built again below
    log(f"indexing the training images of {run_dir} (once; kept in {folder})")
    return build(run_dir, module, device)


def nearest(index: Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row indices [Q, k], cosine similarities [Q, k]) of each query's k nearest rows,
    most similar first."""
    k = min(k, len(index.features))
    sims = queries @ index.features.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, 1)
    return top, np.take_along_axis(sims, top, 1)


class Searcher:
    """A run's model and index, loaded once, answering queries (the CLI and `serve`)."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", log=lambda m: None):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "checkpoints").is_dir():
            raise DataError(f"{run_dir} is not a run folder: similar images need the run's "
                            "model and training images (an exported file has neither)")
        self.module, self.contract = pixel_model_of_run(self.run_dir, device)
        self.device = next(self.module.parameters()).device
        self.index = load_index(self.run_dir, self.module, self.device, log)

    def search(self, items: list, k: int = 8) -> list[dict]:
        """Per query, in order: {"image", "neighbours": [{"image", "label", "similarity",
        "row"}]}, or {"image", "error"} for one that could not be read."""
        results: list[dict] = []
        decoded = []
        for n, item in enumerate(items):
            try:
                decoded.append(pixels_of(item, self.contract))
                results.append({"image": describe(item, n)})
            except DataError as exc:
                results.append({"image": describe(item, n), "error": str(exc)})
        ok = [r for r in results if "error" not in r]
        if ok:
            queries = unit(features_of(self.module, np.stack(decoded), self.device),
                           self.index.mean)
            rows, sims = nearest(self.index, queries, k)
            for result, pixels, row, sim in zip(ok, decoded, rows, sims):
                result["pixels"] = pixels
                result["neighbours"] = [{**self.index.items[r], "similarity": float(s),
                                         "row": int(r)} for r, s in zip(row, sim)]
        return results
