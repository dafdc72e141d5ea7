"""Your own images: find the splits of a dataset folder and list each one's files and labels.

Two layouts per split folder: a CSV of image names and labels beside an `images/` folder, or
one folder per class (nested folders make path labels such as `footwear/sneaker`). Nothing
here decodes an image; problems with the listing (unsafe paths, missing or unlisted files,
rows without a label) become findings with their file and row, for `imclass analyze`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from imclass.errors import DataError

# Extensions imclass reads, and the format Pillow should find inside such a file.
IMAGE_EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP",
                    ".gif": "GIF", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_COLUMNS = ("image", "images", "filename", "file_name", "file", "path", "image_path",
                 "img", "name", "id")
LABEL_COLUMNS = ("label", "labels", "class", "classes", "category", "tags", "tag", "target")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Finding:
    """One thing `analyze` has to say: level error (stops training), warning or info."""
    level: str
    code: str
    message: str
    split: str | None = None
    file: str | None = None
    row: int | None = None  # line number in the CSV file, header = 1


def where(finding: dict) -> str:
    """'train/images/a.jpg row 7' for a finding (as a dict); a CSV value that is not a safe
    relative path is quoted after the split instead of joined to it."""
    split, file, row = finding.get("split"), finding.get("file"), finding.get("row")
    if file and (file.startswith("/") or ".." in file):
        at = f"{split}: {file!r}"
    else:
        at = "/".join(p for p in (split, file) if p)
    return f"{at} row {row}" if row else at


@dataclass
class Entry:
    path: Path             # the image file, never outside the split folder
    labels: tuple[str, ...]
    row: int | None = None  # CSV line, None for class folders


@dataclass
class Listing:
    split: str
    folder: Path
    kind: str  # "csv" or "folders"
    entries: list[Entry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    csv_file: Path | None = None
    multi_hot: bool = False  # labels came from 0/1 columns

    def relative(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()


def find_splits(root: Path) -> dict[str, Path]:
    """{split: folder}: train/ (and val/, test/) under `root`, or `root` itself as train."""
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"dataset folder {root} {state}; give --data a folder holding "
                        "train/ (and test/), or a CSV with images/, or one folder per class")
    found = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if found and "train" not in found:
        raise DataError(f"{root} has {', '.join(found)}/ but no train/ folder; add one")
    return found or {"train": root}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_split(split: str, folder: Path, *, image_column: str | None = None,
               label_column: str | None = None, label_sep: str = ";|",
               hierarchy_sep: str = "/") -> Listing:
    csvs = sorted(p for p in folder.glob("*.csv") if p.is_file())
    if csvs:
        if len(csvs) > 1 and not (folder / "labels.csv").is_file():
            raise DataError(f"{folder} holds several CSV files ({', '.join(p.name for p in csvs)}); "
                            "keep one, or name the one to use labels.csv")
        path = folder / "labels.csv" if len(csvs) > 1 else csvs[0]
        return list_csv(split, folder, path, image_column, label_column, label_sep)
    return _list_class_folders(split, folder, hierarchy_sep)


@dataclass
class Walk:
    files: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)  # folders that could not be listed
    loops: list[Path] = field(default_factory=list)       # links back to a folder seen
    others: list[Path] = field(default_factory=list)      # files that are not images


def walk_images(folder: Path) -> Walk:
    """Every image file below `folder`, sorted, following links to folders (a class folder
    is often a link to where the photos live) but never into one already visited (a link
    loop). Python's Path.rglob neither follows such links nor reports a folder it may not
    read, and either would silently drop a whole class."""
    walk, seen = Walk(), set()

    def unreadable(exc: OSError) -> None:
        walk.unreadable.append(Path(exc.filename))
    for here, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        stat = os.stat(here)
        if (stat.st_dev, stat.st_ino) in seen:
            walk.loops.append(Path(here))
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        walk.files += [Path(here) / n for n in names if is_image(Path(n))
                       and (Path(here) / n).is_file()]
        walk.others += [Path(here) / n for n in names if not is_image(Path(n))]
    walk.files.sort()
    return walk


def _walk_findings(listing: Listing, walk: Walk) -> None:
    for path in walk.unreadable:
        listing.findings.append(Finding(
            "error", "unreadable_folder", "this folder cannot be listed (permission denied); "
            "its images would be missing from the dataset: make it readable", listing.split,
            _shown(listing, path)))
    for path in walk.loops:
        listing.findings.append(Finding(
            "warning", "link_loop", "a link leads back to a folder already listed; it was "
            "not followed again", listing.split, _shown(listing, path)))


def _shown(listing: Listing, path: Path) -> str:
    try:
        return listing.relative(path)
    except ValueError:  # outside the folder (through a link)
        return str(path)


def _list_class_folders(split: str, folder: Path, hierarchy_sep: str) -> Listing:
    listing = Listing(split, folder, "folders")
    walk = walk_images(folder)
    _walk_findings(listing, walk)
    for path in walk.files:
        parts = path.relative_to(folder).parts[:-1]
        if not parts:
            listing.findings.append(Finding(
                "warning", "not_in_class_folder", "image lies outside any class folder; "
                "move it into the folder of its class", split, listing.relative(path)))
            continue
        listing.entries.append(Entry(path, (hierarchy_sep.join(parts),)))
    if not listing.entries:
        raise DataError(f"{folder} holds no CSV file and no class folders with images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); see the README for the layouts")
    return listing


def read_rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # strips a BOM when there is one
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 "
                        "CSV") from None
    lines = text.splitlines()
    first = lines[0] if lines else ""
    delimiter = next((d for d in (",", "\t", ";") if d in first), ",")
    # csv's default cap (128 KiB a field) would crash on one absurd cell; a field of any
    # length is read, and an overlong name then becomes its row's bad_name finding.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        return list(reader)
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: {exc}; fix the quoting of that "
                        "row") from None


def pick_column(header: list[str], asked: str | None, known: tuple[str, ...], what: str,
                 path: Path) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in (asked.strip().lower(),) if asked is not None else known:
        if lowered.count(name) > 1:
            raise DataError(f"{path}: the header names column '{name}' more than once "
                            f"({', '.join(header)}); rename or remove the extra one")
    if asked is not None:
        if asked.strip().lower() not in lowered:
            raise DataError(f"{path} has no column '{asked}' (--{what}-column); its columns: "
                            f"{', '.join(header)}")
        return lowered.index(asked.strip().lower())
    return next((lowered.index(k) for k in known if k in lowered), None)


def list_csv(split: str, folder: Path, path: Path, image_column, label_column,
              label_sep: str) -> Listing:
    listing = Listing(split, folder, "csv", csv_file=path)
    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path} is empty; it needs a row per image: name, label")
    header = rows[0]
    looks_like_file = [bool(r) and is_image(Path(r[0].strip())) for r in rows[:2]]
    has_header = (image_column is not None or label_column is not None
                  or pick_column(header, None, IMAGE_COLUMNS + LABEL_COLUMNS, "", path)
                  is not None or looks_like_file == [False, True])
    if has_header:
        image_i = pick_column(header, image_column, IMAGE_COLUMNS, "image", path)
        label_i = pick_column(header, label_column, LABEL_COLUMNS, "label", path)
        if image_i is None:
            raise DataError(f"{path}: no image column among {', '.join(header)}; name it "
                            "image or pass --image-column")
        body, first_line = rows[1:], 2
    else:
        image_i, label_i, body, first_line = 0, 1, rows, 1
    hot_columns = []
    if label_i is None:  # multi-hot: every other column holds 0 or 1
        hot_columns = [i for i in range(len(header)) if i != image_i]
        if not hot_columns or any(r[i].strip() not in ("0", "1", "") for r in body
                                  for i in hot_columns if i < len(r)):
            raise DataError(f"{path}: no label column among {', '.join(header)}; name it label "
                            "(or use 0/1 columns, one per label), or pass --label-column")
        listing.multi_hot = True
    images_dir = images_root(folder)
    for line, row in enumerate(body, start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        name = row[image_i].strip() if image_i < len(row) else ""
        if hot_columns:
            labels = tuple(header[i].strip() for i in hot_columns
                           if i < len(row) and row[i].strip() == "1")
        else:
            cell = row[label_i].strip() if label_i < len(row) else ""
            labels = tuple(sorted({p.strip() for p in _split_any(cell, label_sep) if p.strip()}))
        entry = _entry(listing, images_dir, name, labels, line)
        if entry is not None:
            listing.entries.append(entry)
    listed = {e.path.resolve() for e in listing.entries}
    if images_dir.is_dir():
        walk = walk_images(images_dir)
        _walk_findings(listing, walk)
        for p in walk.files:
            if p.resolve() not in listed:
                listing.findings.append(Finding(
                    "warning", "unlisted_file", f"no row of {path.name} mentions this image; "
                    "add a row for it or remove it", split, listing.relative(p)))
    return listing


def images_root(folder: Path) -> Path:
    """Where a CSV's image names lead: its `images/` folder, or (without one) the CSV's own
    folder, as `imclass annotate` writes labels.csv beside a folder of photos."""
    return folder / "images" if (folder / "images").is_dir() else folder


def _split_any(text: str, separators: str) -> list[str]:
    for sep in separators[1:]:
        text = text.replace(sep, separators[0])
    return text.split(separators[0])


def _entry(listing: Listing, images_dir: Path, name: str, labels: tuple[str, ...],
           line: int) -> Entry | None:
    """The row's entry, or None with a finding: an empty or unsafe name, a missing file."""
    split, csv_name = listing.split, listing.csv_file.name

    def finding(level, code, message, file=None):  # file: where the image is, once known
        listing.findings.append(Finding(level, code, message, split, file or name or None,
                                        line))

    pure = PurePosixPath(name.replace("\\", "/"))
    if not name:
        finding("warning", "empty_name", f"row of {csv_name} has no image name; fill it in")
        return None
    if "\x00" in name:  # no file system takes it; os.path would raise ValueError
        finding("error", "bad_name", f"row of {csv_name} names an image with a NUL byte in "
                "it; fix the row (the CSV may be damaged or not text)")
        return None
    if not pure.parts:  # "." or "./": the folder itself
        finding("error", "bad_name", f"row of {csv_name} names '{name}', the folder itself, "
                "not an image; give the image's file name")
        return None
    if pure.is_absolute() or ".." in pure.parts or ":" in pure.parts[0]:
        finding("error", "unsafe_path", "the image path is absolute or leaves the dataset "
                "folder; it was not opened. Give paths relative to images/")
        return None
    nested = images_dir != listing.folder and pure.parts[0] == "images"
    path = images_dir.joinpath(*(pure.parts[1:] if nested else pure.parts))
    try:
        inside = path.resolve().is_relative_to(listing.folder.resolve())
        exists = path.is_file()
    except OSError as exc:  # a name too long for the file system, say
        finding("error", "bad_name", f"row of {csv_name} names an image the system cannot "
                f"look up ({exc.strerror or exc}); fix the row")
        return None
    if not inside:
        finding("error", "unsafe_path", "the image path leads outside the dataset folder "
                "(through a link); it was not opened")
        return None
    if not labels:
        finding("warning", "no_label", f"row of {csv_name} has no label; the image is skipped",
                listing.relative(path))
        return None
    if not exists:
        finding("warning", "missing_file", f"row of {csv_name} names an image that does not "
                f"exist in {'images/' if images_dir != listing.folder else 'the folder'}; fix the name "
                "or remove the row", listing.relative(path))
        return None
    return Entry(path, labels, line)


def read_corrections(path: str, action: str) -> dict[str, str]:
    """{image: new_label} of a corrections CSV's rows whose action is `action` (relabel or
    exclude; a CSV without an action column: every row), images named as in the dataset's
    listing (class/file.png, or the CSV's image column)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"corrections file {file} does not exist")
    rows = read_rows(file)
    if not rows or "image" not in [h.strip().lower() for h in rows[0]]:
        raise DataError(f"{file} needs a header with an image column (and action, new_label "
                        "for relabelling), as imclass labels writes it")
    header = [h.strip().lower() for h in rows[0]]
    col = {name: header.index(name) for name in ("image", "action", "new_label")
           if name in header}
    if action == "relabel" and "new_label" not in col:
        raise DataError(f"{file} has no new_label column to relabel from")
    chosen = {}
    for line, row in enumerate(rows[1:], start=2):
        cell = (lambda name: row[col[name]].strip() if col.get(name, 99) < len(row) else "")
        if "action" in col and cell("action").lower() != action:
            continue
        if action == "relabel" and not cell("new_label"):
            raise DataError(f"{file} line {line}: action relabel without a new_label")
        chosen[cell("image")] = cell("new_label")
    return chosen


def apply_corrections(listings: dict[str, "Listing"], relabel: str | None,
                      exclude: str | None, label_sep: str) -> list[Finding]:
    """Relabel and leave out the images the corrections files name; one info finding each,
    saying how many rows changed (the report shows it)."""
    findings = []
    for action, path in (("relabel", relabel), ("exclude", exclude)):
        if not path:
            continue
        chosen, changed = read_corrections(path, action), 0
        for listing in listings.values():
            kept = []
            for e in listing.entries:
                new = chosen.get(listing.relative(e.path))
                if new is None:
                    kept.append(e)
                    continue
                changed += 1
                if action == "relabel":
                    labels = tuple(sorted({p.strip() for p in _split_any(new, label_sep)
                                           if p.strip()}))
                    kept.append(Entry(e.path, labels, e.row))
            listing.entries = kept
        verb = "relabelled" if action == "relabel" else "left out"
        findings.append(Finding("info", "relabelled" if action == "relabel" else "excluded",
                                f"{changed} image(s) {verb} as {Path(path).name} says "
                                f"({len(chosen)} row(s) asked for it)"))
    return findings
