"""Datasets: sources by name, then the split into train / validation / test and their statistics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from typing import TYPE_CHECKING

from imclass.config import DataConfig
from imclass.data.decode import sides
from imclass.errors import ConfigError, DataError

if TYPE_CHECKING:  # torch comes with them: `imclass predict` decodes without it
    from imclass.data.batches import Normalization
    from imclass.data.images import ImageSet


def _fashion_mnist(cfg: DataConfig) -> "Loaded":
    from imclass.data import fashion_mnist
    cache = f"{cfg.cache_dir}/fashion-mnist" if cfg.cache_dir else None
    train, test = fashion_mnist.load(cfg.data_dir, cache)
    if cfg.task not in ("auto", "multiclass"):
        raise ConfigError(f"fashion-mnist is a multiclass dataset; --task {cfg.task} does not "
                          "fit it (leave --task at auto)")
    return Loaded(train, test)


def _folder(cfg: DataConfig, scanned=None) -> "Loaded":
    """Your own images; analysis errors stop here, before anything is trained or written."""
    from imclass.data.audit import analyze_dataset
    from imclass.data.folders import where
    from imclass.data.own import load_folder

    data = load_folder(cfg, scanned=scanned)
    analysis = analyze_dataset(data)
    errors = [f for f in analysis["findings"] if f["level"] == "error"]
    if errors:
        raise DataError(f"{len(errors)} problem(s) in {data.root} stop training, the first: "
                        f"{where(errors[0])}: {errors[0]['message']}; run imclass analyze "
                        f"{data.root} for all")
    return Loaded(data.sets["train"], data.sets["test"], data.sets.get("val"),
                  analysis, data.input_size)


@dataclass(frozen=True)
class Loaded:
    train: ImageSet
    test: ImageSet
    val: ImageSet | None = None  # a val/ folder of its own; else split from train
    analysis: dict | None = None  # folder datasets: imclass analyze's findings
    input_size: int = 0  # the model's input side (the decoded side less any crop margin)


# name -> loader; any other --data value is a folder of your own images.
SOURCES: dict[str, Callable[[DataConfig], Loaded]] = {
    "fashion-mnist": _fashion_mnist,
}


def check_source(source: str) -> None:
    if source not in SOURCES and not Path(source).expanduser().is_dir():
        raise ConfigError(f"--data '{source}' is neither a built-in dataset "
                          f"({', '.join(SOURCES)}) nor an existing folder")


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    norm: Normalization  # computed on `train` only
    analysis: dict | None = None
    input_size: int = 0  # the side the model sees; the images may be larger (crop margin)
    val_given: bool = False  # validation from the dataset (a val/ folder), not held out here

    @property
    def task(self) -> str:
        return self.train.task

    @property
    def validated(self) -> bool:
        """False for a run on every training image (val_fraction 0, no val/ folder)."""
        return len(self.val) > 0

    def summary(self) -> dict:
        names = self.train.class_names
        out = {"source": self.train.source, "classes": list(names), "task": self.task,
               "channels": self.train.channels, "size": list(self.train.size),
               "input_size": self.input_size, "val_given": self.val_given,
               "counts": {split: dict(zip(names, s.class_counts()))
                          for split, s in (("train", self.train), ("val", self.val),
                                           ("test", self.test))}}
        if self.analysis is not None:
            out["analysis"] = {k: self.analysis[k] for k in ("root", "counts_by_level",
                                                              "skipped", "test_carved")}
        return out


def scan(cfg: DataConfig):
    """A folder dataset listed and inspected but not decoded (what a recipe is chosen from),
    to hand back to `prepare`; None for a built-in dataset."""
    from imclass.data.own import scan_folder

    check_source(cfg.source)
    return None if cfg.source in SOURCES else scan_folder(cfg)


def load_source(cfg: DataConfig, scanned=None) -> Loaded:
    check_source(cfg.source)
    if cfg.source not in SOURCES:
        return _folder(cfg, scanned)
    loaded = SOURCES[cfg.source](cfg)
    size, input_size = sides(cfg.image_size, cfg.crop_pct, loaded.train.size[0])
    mode = cfg.interpolation
    return dataclasses.replace(loaded, train=loaded.train.resized(size, mode),
                               test=loaded.test.resized(size, mode), input_size=input_size)


def prepare(cfg: DataConfig, seed: int, scanned=None) -> Splits:
    """Load (decoding a `scan` result, when given), subset, split off validation (stratified,
    seeded; none at val_fraction 0 without a val/ folder) and compute normalisation."""
    import torch

    from imclass.data.batches import Normalization
    from imclass.data.splits import stratified_split, stratified_subset

    loaded = load_source(cfg, scanned)
    full = loaded.train
    if cfg.subset:
        full = full.take(stratified_subset(full.labels, cfg.subset, seed))
    if loaded.val is not None:
        train, val = full, loaded.val
    elif cfg.val_fraction == 0:  # train on everything: an empty validation set
        train, val = full, full.take(torch.zeros(0, dtype=torch.long))
    else:
        kept, held = stratified_split(full.labels, cfg.val_fraction, seed)
        train, val = full.take(kept), full.take(held)
    return Splits(train, val, loaded.test, Normalization.of(train), loaded.analysis,
                  loaded.input_size, val_given=loaded.val is not None)
