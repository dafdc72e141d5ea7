"""Decode once: every image of a folder dataset read, converted and resized, in parallel, into
one uint8 array cached on disk (a memory-mapped .npy) and reused while the files are the same.

Each file goes through two steps in a process pool:
- `inspect`: the bytes (their hash keys the cache) and the header (format, mode, size), cheap;
- `decode`: pixels converted one consistent way (EXIF orientation applied; transparency laid on
  white; palette, CMYK and 16-bit images to 8-bit greyscale or RGB), squashed to size x size
  (JPEGs decoded at a reduced scale first), plus a perceptual hash of the result for finding
  near-duplicates.
A file that fails either step is reported with its reason and left out; it never stops a run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imclass.atomic import atomic_write_text
from imclass.data import cache

# Pillow's decompression-bomb limit (pixels); a larger image is refused, not decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
TOO_LARGE = f"larger than Pillow's limit of {MAX_PIXELS:,} pixels (refused)"
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
CACHE_VERSION = 1


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def inspect(path: str) -> dict:
    """Hash, byte size and header facts of one file; `error` set when it cannot be read."""
    info: dict = {"file": path}
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return info | {"error": f"cannot read the file: {exc.strerror or exc}"}
    info |= {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if not data:
        return info | {"error": "the file is empty (0 bytes)"}
    try:
        with _open(data) as img:
            info |= {"format": img.format, "mode": img.mode, "width": img.width,
                     "height": img.height}
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        info["error"] = TOO_LARGE
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        info["error"] = f"not an image Pillow can read ({type(exc).__name__})"
    return info


def to_8bit(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        array = np.asarray(img, dtype=np.float64)
        # 16-bit (and 32-bit holding 16-bit values) scaled to 0..255; 8-bit-range values kept
        scale = 257.0 if img.mode.startswith("I;16") or array.max() > 255 else 1.0
        img = Image.fromarray(np.clip(array / scale, 0, 255).round().astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    mode = "L" if channels == 1 else "RGB"
    return img if img.mode == mode else img.convert(mode)


RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
              "nearest": Image.Resampling.NEAREST}


def read_pixels(data: bytes, size: tuple[int, int], channels: int, with_hash: bool = False,
                interpolation: str | None = None, fit: str = "squash"
                ) -> tuple[np.ndarray | None, str]:
    """(uint8 [C, height, width], perceptual hash or "") of one encoded image, or (None, why).
    fit: squash resizes the whole image to `size`; crop resizes its shorter edge to fit and
    keeps the centre (no distortion, the usual way to feed photos to a network)."""
    import imagehash

    if not data:
        return None, "the file is empty (0 bytes)"
    try:
        with _open(data) as img:
            img.draft("RGB" if channels == 3 else "L", size)  # JPEG: decode at reduced scale
            img = fitted(img, size, channels, interpolation, fit)
            # hashed at the target size: phash works on 32x32 anyway, and it is 2x cheaper
            phash = str(imagehash.phash(img)) if with_hash else ""
            return channels_first(img, channels), phash
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, TOO_LARGE
    except UnidentifiedImageError:
        return None, "not an image Pillow can read (unknown format)"
    except (OSError, ValueError, SyntaxError) as exc:
        return None, f"cannot decode: {exc}"


def fitted(img: Image.Image, size: tuple[int, int], channels: int,
           interpolation: str | None = None, fit: str = "squash") -> Image.Image:
    """An opened image converted and resized the way every training image is."""
    resample = RESAMPLING[interpolation or "bilinear"]
    img = to_8bit(ImageOps.exif_transpose(img), channels)
    if img.size == size:  # already there (resizing would copy the same pixels)
        return img
    return ImageOps.fit(img, size, resample) if fit == "crop" else img.resize(size, resample)


def channels_first(img: Image.Image, channels: int) -> np.ndarray:
    """uint8 [C, H, W] of an 8-bit greyscale or RGB image."""
    array = np.array(img, dtype=np.uint8)
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def decode(job: tuple[str, int, int, str | None, str]) -> tuple[np.ndarray | None, dict]:
    """(uint8 [C, size, size] or None, {phash or error}) for one file."""
    path, size, channels, interpolation, fit = job
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, {"error": f"cannot read the file: {exc.strerror or exc}"}
    array, text = read_pixels(data, (size, size), channels, True, interpolation, fit)
    return array, {"phash": text} if array is not None else {"error": text}


def _pool_map(fn, jobs: list, workers: int | None) -> list:
    return list(_pool_imap(fn, jobs, workers))


def _pool_imap(fn, jobs: list, workers: int | None):
    """fn over the jobs in a process pool, results in order as they come."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 64:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(fn, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8))))


def inspect_all(paths: list[str], workers: int | None = None) -> list[dict]:
    return _pool_map(inspect, paths, workers)


def choose_channels(infos: list[dict]) -> int:
    """1 when every readable image is greyscale, else 3: one choice for the whole dataset."""
    modes = {i["mode"] for i in infos if "mode" in i}
    return 1 if modes and modes <= GREY_MODES else 3


def median_short_edge(infos: list[dict]) -> int | None:
    """The median shortest edge of the images whose header could be read, px."""
    edges = [min(i["width"], i["height"]) for i in infos if "width" in i]
    return int(np.median(edges)) if edges else None


def default_size(infos: list[dict], cap: int = 128) -> int:
    """The median shortest edge of the readable images, at most `cap` pixels (CPU-sized)."""
    edge = median_short_edge(infos)
    return min(cap, max(8, edge)) if edge is not None else cap


def sides(image_size: int | None, crop_pct: float, native: int) -> tuple[int, int]:
    """(side the images are decoded at, side the model sees). With crop_pct < 1 the decoded
    images keep a margin round the model's input: room for random crops in training, the
    centre crop in evaluation. `native` is the side used when image_size is unset."""
    if image_size:
        return max(image_size, round(image_size / crop_pct)), image_size
    return native, max(8, round(native * crop_pct))


@dataclass
class Decoded:
    images: np.ndarray  # uint8 [N_ok, C, H, W], memory-mapped from the cache
    ok: list[int]       # index into the input list of each decoded image
    infos: list[dict]   # per input file: inspect facts + phash, or error
    cache_file: Path
    reused: bool


def cache_key(infos: list[dict], size: int, channels: int, interpolation: str | None,
              fit: str = "squash") -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} {size} {channels} {interpolation} {fit}\n".encode())
    for info in infos:
        h.update(f"{info.get('sha256', 'unreadable')}\n".encode())
    return h.hexdigest()[:24]


def decode_all(infos: list[dict], size: int, channels: int, cache_dir: Path,
               workers: int | None = None, interpolation: str | None = None,
               fit: str = "squash", source: str = "?") -> Decoded:
    """Decode every inspected file (those without an error) at `size`, through the cache
    (imclass.data.cache: `source` names the folder in `imclass cache`)."""
    key = cache_key(infos, size, channels, interpolation, fit)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if source != "?":  # `imclass cache` runs from anywhere: a relative folder would mislead
        source = str(Path(source).resolve())
    # One process decodes, the others (the ranks of a distributed run, two runs started at
    # once) wait for the lock and then find the finished array.
    with cache.locked(cache_dir / f"{key}.lock"):
        return _decode_through(infos, size, channels, cache_dir, key, workers, interpolation,
                               fit, source)


def _decode_through(infos, size, channels, cache_dir: Path, key: str, workers, interpolation,
                    fit, source) -> Decoded:
    array_file, meta_file = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if array_file.is_file() and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("source") != source and source != "?":  # an older entry's relative path
            atomic_write_text(meta_file, json.dumps({**meta, "source": source}))
        cache.touch(meta_file)  # its age is the entry's last use, for imclass cache prune
        images = np.load(array_file, mmap_mode="c")  # copy-on-write: nothing read up front
        merged = [i | extra for i, extra in zip(infos, meta["extra"])]
        return Decoded(images, meta["ok"], merged, array_file, True)
    todo = [k for k, i in enumerate(infos) if "error" not in i]
    cache.check_room(cache_dir, len(todo) * channels * size * size,
                     f"{len(todo)} images at {size}x{size}")
    # Each image goes into the array on disk as it arrives, so memory holds a few chunks of
    # decoded images, not all of them (20,000 photos at 224 px are 3 GB).
    jobs = [(infos[k]["file"], size, channels, interpolation, fit) for k in todo]
    tmp = array_file.with_name(array_file.name + f".{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                    shape=(len(todo), channels, size, size))
    ok, extra = [], [{} for _ in infos]
    for k, (array, facts) in zip(todo, _pool_imap(decode, jobs, workers)):
        extra[k] = facts
        if array is not None:
            out[len(ok)] = array
            ok.append(k)
    out.flush()
    del out
    if len(ok) < len(todo):  # some failed: keep the rows that decoded
        _truncate_rows(tmp, len(ok))
    os.replace(tmp, array_file)
    # written last: its presence marks the array complete
    atomic_write_text(meta_file, json.dumps({"ok": ok, "extra": extra, "source": source,
                                             "shape": [channels, size, size]}))
    merged = [i | e for i, e in zip(infos, extra)]
    return Decoded(np.load(array_file, mmap_mode="c"), ok, merged, array_file, False)


def _truncate_rows(path: Path, rows: int, chunk: int = 1024) -> None:
    """Keep the first `rows` rows of the .npy array at `path` (copied chunk by chunk into a
    new file that replaces it: the header records the shape)."""
    full = np.load(path, mmap_mode="r")
    short = path.with_name(path.name + ".short.npy")
    out = np.lib.format.open_memmap(short, mode="w+", dtype=full.dtype,
                                    shape=(rows, *full.shape[1:]))
    for start in range(0, rows, chunk):
        out[start:start + chunk] = full[start:min(rows, start + chunk)]
    out.flush()
    del out, full
    os.replace(short, path)
