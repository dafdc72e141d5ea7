"""Datasets: sources by name, then the split into train / validation / test and their statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from imclass.config import DataConfig
from imclass.data.batches import Normalization
from imclass.data.images import ImageSet
from imclass.errors import ConfigError


def _fashion_mnist(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    from imclass.data import fashion_mnist
    cache = f"{cfg.cache_dir}/fashion-mnist" if cfg.cache_dir else None
    return fashion_mnist.load(cfg.data_dir, cache)


# name -> loader returning (training set, test set); the own-images sources join here.
SOURCES: dict[str, Callable[[DataConfig], tuple[ImageSet, ImageSet]]] = {
    "fashion-mnist": _fashion_mnist,
}


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    norm: Normalization  # computed on `train` only

    def summary(self) -> dict:
        names = self.train.class_names
        return {"source": self.train.source, "classes": list(names),
                "channels": self.train.channels, "size": list(self.train.size),
                "counts": {split: dict(zip(names, s.class_counts()))
                           for split, s in (("train", self.train), ("val", self.val),
                                            ("test", self.test))}}


def load_source(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    if cfg.source not in SOURCES:
        raise ConfigError(f"unknown dataset '{cfg.source}'; valid: {', '.join(SOURCES)}")
    train, test = SOURCES[cfg.source](cfg)
    return train.resized(cfg.image_size), test.resized(cfg.image_size)


def prepare(cfg: DataConfig, seed: int) -> Splits:
    """Load, subset, split off validation (stratified, seeded) and compute normalisation."""
    from imclass.data.splits import stratified_split, stratified_subset

    full, test = load_source(cfg)
    if cfg.subset:
        full = full.take(stratified_subset(full.labels, cfg.subset, seed))
    kept, held = stratified_split(full.labels, cfg.val_fraction, seed)
    train, val = full.take(kept), full.take(held)
    return Splits(train, val, test, Normalization.of(train.images))
