"""The labels of an annotation session (`imclass annotate`): every image of a folder, its labels
(none yet, some or all), and labels.csv rewritten atomically at each change.

- The images: every image file under the folder (under its `images/` when it has one), in the
  layouts imclass reads. Their labels to start from: the folder's CSV (as training reads it),
  or the class folder each image lies in when that folder is a class.
- labels.csv: `image,label` rows for the labelled images (several labels joined by ";"),
  names relative to the folder the images lie under, so `imclass train --data FOLDER` reads
  it. A CSV of another name is left as it was (training prefers labels.csv beside it); an
  existing labels.csv is copied once to `.imclass-annotate/labels.before.csv` first.
- Versions: each image's labels carry a version; a change names the version it was made on,
  and one made on an older version (another tab changed the image since) is refused with the
  labels now held, so no tab overwrites what another tab did. `changes(since)` lists what
  changed after a sequence number, for the tabs to follow each other.
- One session per folder: a lock file (released by the system when the process dies) refuses
  a second `imclass annotate` on the same folder.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from imclass.atomic import atomic_write_text
from imclass.data.folders import (list_csv, read_rows, pick_column, LABEL_COLUMNS,
                                  images_root, walk_images)
from imclass.errors import ConfigError, DataError

STATE_DIR = ".imclass-annotate"  # the session's own files, inside the folder
LABELS_FILE = "labels.csv"
JOIN = ";"  # between the labels of one image in labels.csv (imclass reads ; and |)


@dataclass
class Item:
    name: str                # relative to the images' root, with "/"
    path: Path
    labels: tuple[str, ...] = ()
    version: int = 0


class Conflict(Exception):
    """A change made on an older version of an image's labels."""

    def __init__(self, item: Item):
        super().__init__(f"{item.name} was changed meanwhile")
        self.item = item


class LabelStore:
    def __init__(self, folder: str | Path, classes: list[str] | None = None,
                 multilabel: bool = False):
        self.folder = Path(folder).expanduser().resolve()
        check_folder(self.folder)
        self.root = images_root(self.folder)
        self.csv_file = self.folder / LABELS_FILE
        self.state = self.folder / STATE_DIR
        self.state.mkdir(exist_ok=True)
        self._lock_file = hold_lock(self.state / "lock", self.folder)
        self.multilabel = multilabel
        self.items = [Item(p.relative_to(self.root).as_posix(), p)
                      for p in walk_images(self.root).files]
        if not self.items:
            raise DataError(f"{self.folder} holds no images to label; put the images there "
                            "(or under images/) and start again")
        self.by_name = {item.name: item for item in self.items}
        given = self._given_labels(classes)
        self.classes = sorted_classes(classes, given)
        if not self.classes:
            raise ConfigError(f"{self.folder} has no labels yet: name the classes with "
                              "--classes ants,bees (or --classes-from a CSV)")
        for name, labels in given.items():
            self.by_name[name].labels = labels
        self.seq = 0
        self._changed: dict[str, int] = {}  # name -> the sequence number of its last change
        self._lock = threading.Lock()

    def _given_labels(self, classes: list[str] | None) -> dict[str, tuple[str, ...]]:
        csvs = sorted(self.folder.glob("*.csv"))
        if csvs:
            path = self.csv_file if self.csv_file.is_file() else csvs[0]
            listing = list_csv("train", self.folder, path, None, None, ";|")
            named = {listing_name(self.root, e.path): e.labels for e in listing.entries}
            return {name: labels for name, labels in named.items() if name in self.by_name}
        known = set(classes or ())
        out = {}
        for item in self.items:  # class folders: the folder an image lies in is its class
            parent = item.name.rpartition("/")[0]
            if parent and (not known or parent in known):
                out[item.name] = (parent,)
        return out

    def labelled(self) -> list[Item]:
        return [item for item in self.items if item.labels]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for item in self.labelled():
            for label in item.labels:
                out[label] = out.get(label, 0) + 1
        return out

    def set(self, name: str, labels: list[str], version: int) -> Item:
        """Label `name` (no labels: unlabelled again) if `version` is still its version;
        labels.csv holds the change before this returns."""
        item = self.by_name.get(name)
        if item is None:
            raise KeyError(name)
        unknown = [label for label in labels if label not in self.classes]
        if unknown:
            raise ValueError(f"unknown class {unknown[0]!r}; the classes are "
                             f"{', '.join(self.classes)}")
        if not self.multilabel and len(labels) > 1:
            raise ValueError("one label per image (start with --multilabel for several)")
        with self._lock:
            if version != item.version:
                raise Conflict(item)
            item.labels, item.version = tuple(sorted(set(labels))), item.version + 1
            self.seq += 1
            self._changed[name] = self.seq
            self.write()
        return item

    def changes(self, since: int) -> list[Item]:
        with self._lock:
            return [self.by_name[n] for n, s in self._changed.items() if s > since]

    def write(self) -> None:
        backup = self.state / "labels.before.csv"
        if self.csv_file.is_file() and not backup.exists() and self.seq == 1:
            shutil.copy2(self.csv_file, backup)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["image", "label"])
        writer.writerows([item.name, JOIN.join(item.labels)] for item in self.labelled())
        atomic_write_text(self.csv_file, text.getvalue())

    def close(self) -> None:
        self._lock_file.close()


def check_folder(folder: Path) -> None:
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{folder} {state}; give imclass annotate the folder of your images")
    splits = [s for s in ("train", "val", "test") if (folder / s).is_dir()]
    if splits:
        raise ConfigError(f"{folder} is split into {', '.join(splits)}/; label one split at "
                          f"a time: imclass annotate {folder / splits[0]}")


def hold_lock(path: Path, folder: Path):
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(f"another imclass annotate (process {owner}) is labelling {folder}; "
                          "use its page, or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def listing_name(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def sorted_classes(asked: list[str] | None, given: dict[str, tuple[str, ...]]) -> list[str]:
    """The classes asked for, in their order, then any other label the images already have."""
    out = list(dict.fromkeys(asked or ()))
    for labels in given.values():
        out += [label for label in labels if label not in out]
    return out


def classes_from(path: str | Path) -> list[str]:
    """The classes a file names: a CSV's label column (as imclass reads it), or a text file of
    one class per line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"--classes-from {file}: no such file")
    rows = read_rows(file)
    if file.suffix.lower() != ".csv":
        return [r[0].strip() for r in rows if r and r[0].strip()]
    column = pick_column(rows[0], None, LABEL_COLUMNS, "label", file) if rows else None
    if column is None:
        raise DataError(f"{file}: no label column among {', '.join(rows[0] if rows else [])}; "
                        "name it label")
    out: list[str] = []
    for row in rows[1:]:
        cell = row[column] if column < len(row) else ""
        out += [c.strip() for c in cell.replace("|", ";").split(";") if c.strip()]
    return list(dict.fromkeys(out))
