"""`imclass predict`: a finished run's decisions on image files."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from imclass.data.images import center_crop
from imclass.data.decode import read_pixels
from imclass.data.labels import ancestors, node_probabilities
from imclass.errors import ConfigError, DataError
from imclass.runfolder import load_run


def read_image(path: str | Path, channels: int, side: int, interpolation: str | None = None,
               fit: str = "squash") -> torch.Tensor:
    """One image file as uint8 [C, side, side], converted and resized the way training images
    were decoded."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    array, error = read_pixels(data, (side, side), channels, interpolation=interpolation,
                               fit=fit)
    if array is None:
        raise DataError(f"cannot read image {path}: {error}")
    return torch.from_numpy(array)


def predict(run_dir: str | Path, images: Iterable[str | Path], top_k: int = 3) -> list[dict]:
    """For each image file: the top-k classes with probabilities, and the task's decision
    (binary: the class at the tuned threshold; multilabel: every label over its threshold;
    hierarchical: the path down the tree with each node's probability)."""
    run = load_run(run_dir)
    spec = run.meta["input"]
    paths = list(images)
    if not paths:
        raise ConfigError("give at least one image to predict")
    decoded = spec.get("decoded", spec["height"])  # with a crop margin, larger than the input
    x = torch.stack([read_image(p, spec["channels"], decoded, run.config.data.interpolation,
                                spec.get("fit", "squash"))
                     for p in paths]).float().div_(255)
    x = center_crop(x, spec["height"])
    x = run.norm.apply(x).to(run.device)
    task = run.task
    with torch.no_grad():
        probs = task.probabilities(run.model(x)).cpu().numpy()
    names = run.class_names
    out = []
    for p, row in zip(paths, probs):
        top = row.argsort()[::-1][:min(top_k, len(names))]
        item = {"image": str(p), "top": [{"class": names[i], "probability": float(row[i])}
                                         for i in top]}
        decided = task.predictions(row[None], run.thresholds)[0]
        if task.name == "multilabel":
            item["labels"] = [names[k] for k in np.flatnonzero(decided)]
        elif task.name == "binary":
            item["decision"] = names[int(decided)]
        elif task.name == "hierarchical":
            nodes = node_probabilities(row[None], names, task.sep)
            item["path"] = [{"node": n, "probability": float(nodes[n][0])}
                            for n in ancestors(names[int(decided)], task.sep)]
        out.append(item)
    return out
