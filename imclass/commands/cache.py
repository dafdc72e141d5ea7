"""`imclass cache`: the decode cache listed (what each entry is, its size and last use) and
pruned (everything, entries unused for some days, or the least recently used beyond a size
cap). The stage is imclass.data.cache; this module only words it."""

from __future__ import annotations

import time
from pathlib import Path

from imclass.data import cache

MB = cache.MB


def describe(root: Path) -> str:
    """The listing `imclass cache` prints: one line per entry, then totals."""
    found = cache.entries(root)
    lines = [f"decode cache: {cache.decoded_dir(root)}"]
    if not found:
        lines.append("  (empty)")
    now = time.time()
    for e in found:
        state = "" if e.complete else "  unfinished (a killed decode; prune removes it)"
        count = f"{e.images} images" if e.images is not None else "? images"
        lines.append(f"  {e.key}  {e.bytes / MB:8.1f} MB  {count} {e.shape}  used "
                     f"{age(now - e.last_used)} ago  {e.source}{state}")
    total = sum(e.bytes for e in found)
    lines.append(f"  total {total / MB:.1f} MB in {len(found)} entries")
    for name, size in cache.other_folders(root):
        lines.append(f"kept by prune: {root / name} ({size / MB:.1f} MB)")
    return "\n".join(lines)


def age(seconds: float) -> str:
    for unit, length in (("days", cache.DAY_S), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * length:
            return f"{seconds / length:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def prune(root: Path, *, older_than_days: float | None = None, max_size: str | None = None,
          everything: bool = False, dry_run: bool = False) -> str:
    """Remove (or with `dry_run` only name) what the rules select; returns the summary."""
    found = cache.entries(root)
    max_bytes = cache.parse_size(max_size) if max_size is not None else None
    gone = cache.to_prune(found, older_than_days=older_than_days, max_bytes=max_bytes,
                          everything=everything)
    size = sum(e.bytes for e in gone)
    if dry_run:
        names = "".join(f"\n  {e.key}  {e.bytes / MB:.1f} MB  {e.source}" for e in gone)
        return f"would remove {len(gone)} of {len(found)} entries ({size / MB:.1f} MB){names}"
    freed = cache.remove(gone)
    left = sum(e.bytes for e in found) - size
    return (f"removed {len(gone)} of {len(found)} entries ({freed / MB:.1f} MB freed, "
            f"{left / MB:.1f} MB left in {cache.decoded_dir(root)})")
