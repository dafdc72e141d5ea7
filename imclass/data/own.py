"""A folder dataset end to end: listings, task, the held-out test split, decoded ImageSets.

`load_folder` is shared by training (through `imclass.data.prepare`) and `imclass analyze`,
so both see the same files, the same labels and the same problems.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from imclass.atomic import atomic_write_text
from imclass.config import DataConfig
from imclass.data import cache, decode, labels as label_mod
from imclass.data.folders import (Entry, Finding, Listing, apply_corrections, find_splits,
                                  list_split)
from imclass.data.images import ImageSet
from imclass.errors import DataError

TEST_SPLIT_SEED = 0  # fixed, not the run's seed: every run of a dataset holds out the same test


def cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "imclass"


@dataclass
class FolderDataset:
    root: Path
    task: str
    class_names: tuple[str, ...]
    listings: dict[str, Listing]
    findings: list[Finding] = field(default_factory=list)
    infos: dict[str, list[dict]] = field(default_factory=dict)  # per split, as its entries
    sets: dict[str, ImageSet] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)  # {split, file, reason}
    test_carved: bool = False
    size: int = 0  # the side images are decoded at
    input_size: int = 0  # the side the model sees (smaller with a crop margin)
    channels: int = 0
    cache_reused: bool = False


def load_folder(cfg: DataConfig, decode_images: bool = True,
                scanned: FolderDataset | None = None) -> FolderDataset:
    """The dataset with its images decoded at the configured size (through the cache); a
    `scan_folder` result is reused rather than listed and inspected again."""
    data = scanned or scan_folder(cfg)
    data.size, data.input_size = decode.sides(cfg.image_size, cfg.crop_pct,
                                              decode.default_size(data.infos["train"]))
    if decode_images:
        _decode(data, cfg)
    return data


def scan_folder(cfg: DataConfig) -> FolderDataset:
    """Listings, labels, task, the test split and every file's header facts (format, mode,
    width, height): all that choosing a recipe needs, without decoding a pixel."""
    root = Path(cfg.source).expanduser()
    listings = {split: list_split(split, folder, image_column=cfg.image_column,
                                  label_column=cfg.label_column, label_sep=cfg.label_sep,
                                  hierarchy_sep=cfg.hierarchy_sep)
                for split, folder in find_splits(root).items()}
    corrected = apply_corrections(listings, cfg.relabel, cfg.exclude, cfg.label_sep)
    every = [e.labels for listing in listings.values() for e in listing.entries]
    multi_hot = any(listing.multi_hot for listing in listings.values())
    task = label_mod.infer_task(every, cfg.hierarchy_sep, cfg.task, multi_hot)
    names = label_mod.class_names_of([e.labels for e in listings["train"].entries])
    if not names:
        raise DataError(f"{listings['train'].folder} lists no usable image; run imclass "
                        f"analyze {root} to see why")
    data = FolderDataset(root, task, names, listings)
    for listing in listings.values():
        data.findings += listing.findings
    data.findings += corrected
    _drop_unknown_labels(data)
    if "test" not in listings:
        _carve_test(data, cfg)
    data.infos = {s: decode.inspect_all([str(e.path) for e in listing.entries], cfg.workers)
                  for s, listing in data.listings.items()}
    data.channels = decode.choose_channels([i for infos in data.infos.values() for i in infos])
    return data


def _drop_unknown_labels(data: FolderDataset) -> None:
    """Images of val/test whose labels never occur in train cannot be scored: left out."""
    known = set(data.class_names)
    for split, listing in data.listings.items():
        kept = []
        for e in listing.entries:
            unknown = [label for label in e.labels if label not in known]
            if split != "train" and unknown:
                data.findings.append(Finding(
                    "warning", "unknown_label", f"label {unknown[0]!r} never occurs in train; "
                    "the image is left out (add training images of it)", split,
                    listing.relative(e.path), e.row))
            else:
                kept.append(e)
        listing.entries = kept


def _carve_test(data: FolderDataset, cfg: DataConfig) -> None:
    """Hold out a stratified share of train as the test split, recorded in the cache so the
    same images stay held out on every later run (new images are split among themselves)."""
    from imclass.data.splits import stratified_split

    train = data.listings["train"]
    record_file = (cache_root(cfg) / "test-splits" /
                   f"{hashlib.sha256(str(data.root.resolve()).encode()).hexdigest()[:16]}.json")
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    held, kept = set(record.get("test", [])), set(record.get("train", []))
    rel = [train.relative(e.path) for e in train.entries]
    new = [i for i, r in enumerate(rel) if r not in held and r not in kept]
    if new:
        labels = label_mod.encode([train.entries[i].labels for i in new], data.task,
                                  data.class_names)
        _, test_index = stratified_split(labels, cfg.test_fraction, TEST_SPLIT_SEED)
        test_new = {new[i] for i in test_index.tolist()}
        held |= {rel[i] for i in test_new}
        kept |= {rel[i] for i in new if i not in test_new}
        atomic_write_text(record_file, json.dumps({"root": str(data.root.resolve()),
                                                   "test": sorted(held), "train": sorted(kept)}))
    test = Listing("test", train.folder, train.kind, csv_file=train.csv_file)
    test.entries = [e for e, r in zip(train.entries, rel) if r in held]
    train.entries = [e for e, r in zip(train.entries, rel) if r not in held]
    data.listings["test"] = test
    data.test_carved = True


def _decode(data: FolderDataset, cfg: DataConfig) -> None:
    reused = []
    for split, listing in data.listings.items():
        infos = data.infos[split]
        out = decode.decode_all(infos, data.size, data.channels,
                                cache.decoded_dir(cache_root(cfg)), cfg.workers,
                                cfg.interpolation, cfg.fit, source=str(listing.folder))
        data.infos[split] = out.infos
        reused.append(out.reused)
        good = set(out.ok)
        data.skipped += [{"split": split, "file": listing.relative(e.path),
                          "reason": info["error"]}
                         for k, (e, info) in enumerate(zip(listing.entries, out.infos))
                         if k not in good]
        entries: list[Entry] = [listing.entries[k] for k in out.ok]
        labels = label_mod.encode([e.labels for e in entries], data.task, data.class_names)
        data.sets[split] = ImageSet(torch.from_numpy(out.images), labels, data.class_names,
                                    source=str(listing.folder), task=data.task,
                                    files=tuple(listing.relative(e.path) for e in entries))
    data.cache_reused = all(reused)
    if len(data.sets["train"]) == 0:
        raise DataError(f"no image of {data.listings['train'].folder} could be decoded; run "
                        f"imclass analyze {data.root}")
