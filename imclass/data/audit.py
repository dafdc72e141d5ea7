"""The audit of a folder dataset (`imclass analyze`, and the start of every training run on
one): what is wrong with it, before a long training finds out.

Every finding names its split, file and CSV row. Levels: error (stops `imclass train`),
warning (shown; the image is skipped where it cannot be used), info.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from imclass.atomic import atomic_write_text
from imclass.data.folders import IMAGE_EXTENSIONS, Finding, where
from imclass.data.own import FolderDataset, load_folder

MIN_IMAGES_PER_LABEL = 30       # our users' documented minimum per label
MAX_FILE_BYTES = 6 * 1024 ** 2  # larger files: warning (6 MB)
MIN_SHORT_EDGE = 256            # pixels users are told to aim for
IMBALANCE_WARNING = 10.0        # largest / smallest class
MIN_TEST_PER_LABEL = 10         # fewer test images: a recall measured in steps over 10 points
NEAR_DUPLICATE_BITS = 4         # perceptual-hash bits (of 64) that may differ
NEAR_DUPLICATE_MAX_IMAGES = 20_000  # above this, only identical perceptual hashes are compared
# Shortest edge (px) under which only identical perceptual hashes count as near duplicates: a
# 64-bit hash of a 28 px image is coarse, and Fashion-MNIST's items (centred, on black) are
# within 4 bits of each other by the hundred (744 "near duplicates" among 4,950 images, none
# at 0 bits).
NEAR_DUPLICATE_MIN_EDGE = 64


def _file_findings(data: FolderDataset) -> list[Finding]:
    out = []
    for split, listing in data.listings.items():
        for entry, info in zip(listing.entries, data.infos.get(split, [])):
            at = dict(split=split, file=listing.relative(entry.path), row=entry.row)
            if "error" in info:
                code = "empty_file" if info.get("bytes") == 0 else "broken_file"
                out.append(Finding("warning", code, f"{info['error']}; the image is skipped",
                                   **at))
                continue
            expected = IMAGE_EXTENSIONS.get(entry.path.suffix.lower())
            if info.get("format") and expected and info["format"] != expected:
                out.append(Finding("warning", "wrong_extension", f"holds {info['format']} data "
                                   f"but is named {entry.path.suffix}; rename it", **at))
            if info.get("bytes", 0) > MAX_FILE_BYTES:
                out.append(Finding("warning", "large_file", f"{info['bytes'] / 1e6:.1f} MB, "
                                   "over 6 MB; consider re-encoding it", **at))
            if "width" in info and min(info["width"], info["height"]) < MIN_SHORT_EDGE:
                out.append(Finding("warning", "small_image", f"{info['width']}x{info['height']}"
                                   f" px, shortest edge under {MIN_SHORT_EDGE}", **at))
    return out


def _count_findings(counts: dict[str, dict[str, int]], test_carved: bool) -> list[Finding]:
    out = []
    train = counts.get("train", {})
    for label, n in train.items():
        if n < MIN_IMAGES_PER_LABEL:
            out.append(Finding("warning", "tiny_class", f"label {label!r} has {n} training "
                               f"image(s), fewer than {MIN_IMAGES_PER_LABEL}; add more",
                               "train"))
    for label, n in counts.get("test", {}).items():
        if n < MIN_TEST_PER_LABEL and train.get(label):
            measured = (f"its recall moves in steps of {100 / n:.0f} points" if n else
                        "its recall cannot be measured")
            more = ("add images or raise --test-fraction (the test split is held out of "
                    "train)" if test_carved else "add images to test/")
            out.append(Finding("warning", "few_test_images", f"label {label!r} has {n} test "
                               f"image(s), fewer than {MIN_TEST_PER_LABEL}: {measured}; {more}",
                               "test"))
    present = [n for n in train.values() if n > 0]
    if present and max(present) / min(present) > IMBALANCE_WARNING:
        out.append(Finding("warning", "imbalance", f"the largest class has "
                           f"{max(present) / min(present):.1f}x the images of the smallest; "
                           "expect weaker recall on the small ones", "train"))
    return out


def _duplicate_findings(data: FolderDataset) -> list[Finding]:
    """Exact (content hash) and near (perceptual hash) duplicates, within and across splits;
    an exact copy of a test image in train is leakage: an error."""
    items = [(split, listing.relative(e.path), e.row, info)
             for split, listing in data.listings.items()
             for e, info in zip(listing.entries, data.infos.get(split, []))]
    out = []
    by_hash = defaultdict(list)
    for item in items:
        if "sha256" in item[3] and "error" not in item[3]:
            by_hash[item[3]["sha256"]].append(item)
    for group in by_hash.values():
        first = group[0]
        for split, file, row, _ in group[1:]:
            if (split, file) == first[:2]:  # the CSV lists one file twice
                out.append(Finding("warning", "duplicate_row", f"lists the same image as row "
                                   f"{first[2]}; remove one row", split, file, row))
                continue
            leak = split != first[0]
            out.append(Finding("error" if leak else "warning",
                               "leak_duplicate" if leak else "duplicate",
                               f"the same file as {first[0]}/{first[1]}"
                               + ("; an image in two splits inflates test scores, remove one"
                                  if leak else "; remove one copy"), split, file, row))
    out += _near_duplicates([g[0] for g in by_hash.values() if "phash" in g[0][3]])
    return out


def near_pairs(hashes: list[str], short_edges: list[int]) -> list[tuple[int, int, int]]:
    """(first, later, differing bits) of images whose 64-bit perceptual hashes (hex) are
    within NEAR_DUPLICATE_BITS (0 when either is under NEAR_DUPLICATE_MIN_EDGE px, or the
    set is over NEAR_DUPLICATE_MAX_IMAGES); each later image is paired once."""
    if len(hashes) < 2:
        return []
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    limit = NEAR_DUPLICATE_BITS if len(hashes) <= NEAR_DUPLICATE_MAX_IMAGES else 0
    out, seen = [], set()
    for a in range(len(values)):
        xor = np.bitwise_xor(values[a + 1:], values[a])
        bits = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(1)
        for offset in np.flatnonzero(bits <= limit):
            b = a + 1 + int(offset)
            if b in seen or (bits[offset] and min(short_edges[a], short_edges[b])
                             < NEAR_DUPLICATE_MIN_EDGE):
                continue
            seen.add(b)
            out.append((a, b, int(bits[offset])))
    return out


def _near_duplicates(items: list) -> list[Finding]:
    out = []
    for a, b, bits in near_pairs([i[3]["phash"] for i in items],
                                 [_short_edge(i) for i in items]):
        (sa, fa, _, _), (sb, fb, rb, _) = items[a], items[b]
        # across splits a likely leak, yet a warning: perceptual hashes of small or
        # plain images collide (thousands of pairs among Fashion-MNIST's 28 px items);
        # an exact copy across splits is an error (leak_duplicate)
        leak = sa != sb
        out.append(Finding("warning", "near_leak" if leak else "near_duplicate",
                           f"looks like {sa}/{fa} ({bits} of 64 hash bits "
                           f"differ), " + ("in another split: a likely leak; check the "
                                           "pair" if leak else "in the same split"),
                           sb, fb, rb))
    return out


def _short_edge(item) -> int:
    info = item[3]
    return min(info.get("width", 0), info.get("height", 0))


def analyze_dataset(data: FolderDataset) -> dict:
    """analysis.json's content: statistics and every finding of a loaded folder dataset."""
    counts = {split: dict(Counter(label for e in listing.entries for label in e.labels))
              for split, listing in data.listings.items()}
    counts = {split: {name: c.get(name, 0) for name in data.class_names}
              for split, c in counts.items()}
    findings = (list(data.findings) + _file_findings(data)
                + _count_findings(counts, data.test_carved))
    findings += _duplicate_findings(data)
    infos = [i for split_infos in data.infos.values() for i in split_infos]
    readable = [i for i in infos if "width" in i]
    train = [n for n in counts["train"].values() if n > 0]
    return {
        "root": str(data.root), "task": data.task, "classes": list(data.class_names),
        "counts": counts, "imbalance_ratio": max(train) / min(train) if train else None,
        "images": {split: len(listing.entries) for split, listing in data.listings.items()},
        "formats": dict(Counter(i.get("format", "unreadable") for i in infos)),
        "modes": dict(Counter(i["mode"] for i in readable)),
        "bytes": _stats([i["bytes"] for i in infos if "bytes" in i]),
        "width": _stats([i["width"] for i in readable]),
        "height": _stats([i["height"] for i in readable]),
        "channels": data.channels, "image_size": data.size, "test_carved": data.test_carved,
        "skipped": data.skipped,
        "counts_by_level": dict(Counter(f.level for f in findings)),
        "findings": [dataclasses.asdict(f) for f in sorted(findings, key=severity)],
    }


# Warnings in the order they matter: images lost or mislabelled first, then what skews the
# figures, then hints (a folder of 64 px images has hundreds of small_image findings, which
# must not bury one broken file).
WARNING_ORDER = ("broken_file", "empty_file", "missing_file", "no_label", "empty_name",
                 "unknown_label", "duplicate_row", "near_leak", "wrong_extension",
                 "not_in_class_folder", "unlisted_file", "link_loop", "few_test_images",
                 "tiny_class", "imbalance", "duplicate", "near_duplicate", "large_file",
                 "small_image")


def severity(f: Finding) -> tuple[int, int]:
    """Sort key: errors, then warnings in WARNING_ORDER (others before the hints), then info."""
    rank = WARNING_ORDER.index(f.code) if f.code in WARNING_ORDER else \
        WARNING_ORDER.index("few_test_images")
    return ("error", "warning", "info").index(f.level), rank


def _stats(values: list[int]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values)
    return {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}


def summary_text(analysis: dict, examples: int = 3) -> str:
    """The console summary: the dataset in a few lines, then findings grouped by kind."""
    images = ", ".join(f"{n} {s}" for s, n in analysis["images"].items())
    lines = [f"{analysis['root']}: {analysis['task']}, {len(analysis['classes'])} classes, "
             f"images {images}" + (" (test held out from train)" if analysis["test_carved"]
                                   else ""),
             f"formats {_counter(analysis['formats'])}; colour modes "
             f"{_counter(analysis['modes'])}; decoded as {analysis['channels']} channel(s) at "
             f"{analysis['image_size']}x{analysis['image_size']}"]
    if analysis["width"]:
        lines.append(f"width {_range(analysis['width'])} px, height {_range(analysis['height'])}"
                     f" px, file size {_range(analysis['bytes'])} bytes")
    ratio = analysis["imbalance_ratio"]
    lines.append("class counts (train): " + ", ".join(
        f"{k} {v}" for k, v in analysis["counts"]["train"].items())
        + (f"; imbalance {ratio:.1f}x" if ratio else ""))
    groups = defaultdict(list)
    for f in analysis["findings"]:
        groups[(f["level"], f["code"])].append(f)
    for (level, code), group in groups.items():
        lines.append(f"{level.upper()} {code}: {len(group)}")
        for f in group[:examples]:
            lines.append(f"  {where(f)}: {f['message']}")
        if len(group) > examples:
            lines.append(f"  ... and {len(group) - examples} more in analysis.json")
    levels = analysis["counts_by_level"]
    lines.append(f"{levels.get('error', 0)} error(s), {levels.get('warning', 0)} warning(s)"
                 + ("; errors stop imclass train" if levels.get("error") else ""))
    return "\n".join(lines)


def _counter(c: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "none"


def _range(s: dict) -> str:
    return f"{s['min']}-{s['max']} (median {s['median']:g})"


def write_analysis(analysis: dict, out: Path) -> Path:
    """analysis.json and plots/class_counts.png, sizes.png under `out`."""
    from imclass import plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    atomic_write_text(out / "analysis.json", json.dumps(analysis, indent=2))
    plots.class_counts(analysis["counts"], out / "plots" / "class_counts.png")
    return out / "analysis.json"


def analyze(cfg, out: Path | None = None, scanned: FolderDataset | None = None) -> dict:
    """Load (and decode, filling the cache train will reuse: give the data config train will
    use, run_setup.plan's) and analyse `cfg.source`; `scanned` is reused, not listed again."""
    analysis = analyze_dataset(load_folder(cfg, scanned=scanned))
    if out is not None:
        write_analysis(analysis, out)
    return analysis
