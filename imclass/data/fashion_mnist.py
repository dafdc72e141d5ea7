"""Fashion-MNIST from its four official IDX files (gzip), found locally or downloaded and verified.

Run `python -m imclass.data.fashion_mnist` to make sure a copy is present (it prints where).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from imclass.errors import DataError

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

URL_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# MD5 of the .gz files as served from URL_BASE (from the dataset's README); checked on download.
GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

# MD5 of the decompressed IDX bytes; checked on every load. Repackaged copies (Debian's
# dataset-fashion-mnist drops the file name from the gzip header, which changes the .gz MD5)
# hold the same bytes, so this is the check that holds for every honest copy.
RAW_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_DTYPE = {0x08: np.uint8}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "imclass" / "fashion-mnist"


def candidate_dirs(data_dir: str | Path | None = None, cache_dir: str | Path | None = None
                   ) -> list[Path]:
    """Where to look, in order: --data-dir, $IMCLASS_DATA, the cache, the Debian package's folder."""
    dirs = [data_dir, os.environ.get("IMCLASS_DATA"), cache_dir or default_cache_dir(), SYSTEM_DIR]
    return [Path(d).expanduser() for d in dirs if d]


def locate(dirs: list[Path]) -> Path | None:
    """The first folder holding all four files."""
    for d in dirs:
        if all((d / name).is_file() for name in FILES.values()):
            return d
    return None


def read_idx(path: Path, expected_md5: str | None = None) -> np.ndarray:
    """Decode one gzip-compressed IDX file into an array, checking its size and checksum."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path} is truncated or not a gzip file ({exc}); delete it and run "
                        "again to fetch a fresh copy") from None
    if expected_md5 is not None:
        digest = hashlib.md5(raw).hexdigest()
        if digest != expected_md5:
            raise DataError(f"{path} has MD5 {digest} but the official file has {expected_md5}; "
                            "it is damaged or not Fashion-MNIST: delete it and run again")
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPE or ndim < 1:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"{path} holds {len(raw) - header} values but its header promises "
                        f"{expected} (shape {shape}); the file is truncated: delete it and run again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def download(target: Path, url_base: str = URL_BASE) -> Path:
    """Fetch the four files into `target`, verifying each MD5 before it is renamed into place."""
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        if (target / name).is_file():
            continue
        with tempfile.NamedTemporaryFile(dir=target, suffix=".part", delete=False) as tmp:
            try:
                with urllib.request.urlopen(url_base + name, timeout=30) as resp:
                    shutil.copyfileobj(resp, tmp)
            except BaseException:
                os.unlink(tmp.name)
                raise
        digest = hashlib.md5(Path(tmp.name).read_bytes()).hexdigest()
        if digest != GZ_MD5[name]:
            os.unlink(tmp.name)
            raise DataError(f"downloaded {name} has MD5 {digest}, expected {GZ_MD5[name]}; "
                            "the download was corrupted, run again")
        os.replace(tmp.name, target / name)
    return target


def ensure(data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
           *, allow_download: bool = True) -> Path:
    """The folder holding the four files, downloading them into the cache when none has them."""
    dirs = candidate_dirs(data_dir, cache_dir)
    found = locate(dirs)
    if found:
        return found
    target = Path(data_dir).expanduser() if data_dir else (
        Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    reason = "downloads are switched off"
    if allow_download:
        try:
            return download(target)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = f"the download failed: {getattr(exc, 'reason', exc)}"
    raise DataError(
        f"Fashion-MNIST was not found in {', '.join(map(str, dirs))} and {reason}; install it "
        "with 'apt-get install dataset-fashion-mnist', or copy the four .gz files of "
        "github.com/zalandoresearch/fashion-mnist into one of those folders or into --data-dir.")


def load(data_dir: str | Path | None = None, cache_dir: str | Path | None = None, *,
         checksums: dict[str, str] | None = RAW_MD5, allow_download: bool = True):
    # `checksums` defaults to the RAW_MD5 table itself (not a copy), read at call time.
    """Train and test `ImageSet`s, uint8 [N, 1, 28, 28], with the ten class names."""
    import torch

    from imclass.data.images import ImageSet

    folder = ensure(data_dir, cache_dir, allow_download=allow_download)
    arrays = {key: read_idx(folder / name, (checksums or {}).get(name))
              for key, name in FILES.items()}
    splits = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{folder}: {split} images {images.shape} and labels {labels.shape} "
                            "do not match")
        if labels.size and labels.max() >= len(CLASS_NAMES):
            raise DataError(f"{folder}: {split} labels go up to {labels.max()}, but "
                            f"Fashion-MNIST has {len(CLASS_NAMES)} classes")
        splits.append(ImageSet(store=torch.from_numpy(images.copy()).unsqueeze(1),
                               labels=torch.from_numpy(labels.astype(np.int64)),
                               class_names=CLASS_NAMES, source=str(folder)))
    return splits[0], splits[1]


if __name__ == "__main__":  # the set-up's "make sure the data is here" step
    try:
        print(ensure(allow_download="--local-only" not in sys.argv[1:]))
    except DataError as exc:
        sys.exit(f"imclass: error: {exc}")
