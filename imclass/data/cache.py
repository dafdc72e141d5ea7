"""The decode cache (`~/.cache/imclass/decoded`, or --cache-dir): what is in it and pruning it.

Each entry is a pair `<key>.npy` (the decoded uint8 images) + `<key>.json` (which files
decoded, their facts, and since this version the source folder and the image shape). The
JSON is written last and touched each time a run reuses the entry, so its modification time
is the entry's last use: pruning removes the least recently used first.

Only decoded images are pruned. `test-splits/` (which rows each dataset holds out as its
test split, a few kB) and downloaded datasets are kept, since removing them would change
later runs' test sets or need the network again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imclass.errors import ConfigError, DataError

MB = 1024 * 1024
DAY_S = 24 * 3600
# Free space kept beyond what a decode writes (MB): a full disk breaks more than imclass.
DISK_MARGIN_BYTES = 200 * MB


@dataclass(frozen=True)
class Entry:
    key: str
    files: tuple[Path, ...]  # the .npy and its .json (or a leftover temporary file)
    bytes: int
    last_used: float         # seconds since the epoch
    source: str              # the folder it was decoded from ("?" for an older entry)
    images: int | None
    shape: str               # channels x side x side, or "?"
    complete: bool           # False: a decode that was killed before it finished


def decoded_dir(root: Path) -> Path:
    return root / "decoded"


def entries(root: Path) -> list[Entry]:
    """Every entry of the cache under `root`, the most recently used first."""
    folder = decoded_dir(root)
    if not folder.is_dir():
        return []
    groups: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        # a leftover temporary file (a decode that was killed) is an entry of its own
        unfinished = " (unfinished)" if ".tmp" in path.name else ""
        groups.setdefault(path.name.split(".", 1)[0] + unfinished, []).append(path)
    found = [_entry(key, sorted(paths)) for key, paths in groups.items()]
    return sorted(found, key=lambda e: e.last_used, reverse=True)


def _entry(key: str, paths: list[Path]) -> Entry:
    meta_file = next((p for p in paths if p.name == f"{key}.json"), None)
    meta: dict = {}
    if meta_file is not None:
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
    stats = [p.stat() for p in paths]
    shape = meta.get("shape") or _array_shape(paths, key)
    return Entry(key=key, files=tuple(paths), bytes=sum(s.st_size for s in stats),
                 last_used=max(s.st_mtime for s in stats), source=meta.get("source", "?"),
                 images=len(meta["ok"]) if "ok" in meta else None,
                 shape="x".join(map(str, shape)) if shape else "?",
                 complete="ok" in meta and any(p.name == f"{key}.npy" for p in paths))


def _array_shape(paths: list[Path], key: str) -> list[int] | None:
    """[C, H, W] from the .npy header (entries written before the JSON recorded it)."""
    array = next((p for p in paths if p.name == f"{key}.npy"), None)
    try:
        return list(np.load(array, mmap_mode="r").shape[1:]) if array else None
    except (OSError, ValueError):
        return None


def parse_size(text: str) -> int:
    """'500MB', '2G', '1.5GB', '800' (MB) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if not match:
        raise ConfigError(f"--max-size {text!r} is not a size; write e.g. 500MB or 2GB")
    number, unit = float(match.group(1)), match.group(2).upper() or "M"
    return int(number * 1024 ** " KMGT".index(unit))


def to_prune(found: list[Entry], *, older_than_days: float | None = None,
             max_bytes: int | None = None, everything: bool = False) -> list[Entry]:
    """Which entries go: all, those unused for longer than `older_than_days`, incomplete ones
    always, then the least recently used until the rest fits in `max_bytes`."""
    if everything:
        return list(found)
    now = time.time()
    gone = [e for e in found if not e.complete or (
        older_than_days is not None and now - e.last_used > older_than_days * DAY_S)]
    if max_bytes is not None:
        kept = [e for e in found if e not in gone]  # most recently used first
        total = sum(e.bytes for e in kept)
        for e in reversed(kept):
            if total <= max_bytes:
                break
            gone.append(e)
            total -= e.bytes
    return gone


def remove(pruned: list[Entry]) -> int:
    """Delete the entries' files (the .json first: an entry without it is never reused);
    returns the bytes freed."""
    freed = 0
    for e in pruned:
        for path in sorted(e.files, key=lambda p: p.suffix != ".json"):
            try:
                size = path.stat().st_size
                path.unlink()
                freed += size
            except FileNotFoundError:
                pass
    return freed


def other_folders(root: Path) -> list[tuple[str, int]]:
    """The cache's other folders (kept by prune) with their sizes in bytes."""
    if not root.is_dir():
        return []
    return [(p.name, folder_bytes(p)) for p in sorted(root.iterdir())
            if p.is_dir() and p.name != "decoded"]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def check_room(folder: Path, needed: int, what: str) -> None:
    """Refuse, before writing, a decode that would leave the disk (nearly) full."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed + DISK_MARGIN_BYTES > free:
        raise DataError(f"decoding {what} needs {needed / MB:.0f} MB in {folder}, but only "
                        f"{free / MB:.0f} MB are free (imclass keeps "
                        f"{DISK_MARGIN_BYTES // MB} MB spare): free space, run imclass cache "
                        "prune, or point --cache-dir at a larger disk")


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock (flock) held for the block: processes decoding the same dataset
    take turns, and the second finds what the first wrote. The lock file stays (0 bytes)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def touch(path: Path) -> None:
    """Mark an entry as used now (its age for pruning); a read-only cache just stays as it is."""
    try:
        os.utime(path)
    except OSError:
        pass
