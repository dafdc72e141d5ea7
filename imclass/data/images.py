"""The decoded dataset: one uint8 tensor of images and one of labels, drawn from by index.

A set can be a view of rows of a larger store (a memory-mapped decode cache, say): `take`
composes row indices instead of copying pixels, so splitting a dataset larger than memory
into train and validation reads nothing; batches gather their rows when they are drawn.

A set can also be a view at another size: `resized` and `center_cropped` record the side and
the crop, and each `gather` resizes and crops just the rows it returns. The store stays at the
size it was decoded (28 px for Fashion-MNIST), so memory is bounded by the batch, not by the
dataset at the model's input size: Fashion-MNIST's 70,000 images at 224 px would be 3.5 GB of
uint8 (and 14 GB of float while resizing them all at once); per batch of 256 they are 13 MB.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

CHUNK_BYTES = 16 * 1024 ** 2  # uint8 pixels per chunk of a pass over a whole set (16 MB; as
# float64 in Normalization.of, with its squares, about 0.4 GB at once)


def center_crop(x: torch.Tensor, side: int | None) -> torch.Tensor:
    """The central side x side pixels of images [..., H, W] (unchanged when that size)."""
    h, w = x.shape[-2:]
    if side is None or (h, w) == (side, side):
        return x
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top:top + side, left:left + side]


def resize_uint8(x: torch.Tensor, side: int, mode: str | None = None) -> torch.Tensor:
    """uint8 images [B, C, H, W] at side x side (antialiased bilinear or bicubic, or
    nearest), rounded back to uint8. Each image is resized on its own, so a batch gives the
    same pixels as resizing the whole set would."""
    if tuple(x.shape[-2:]) == (side, side):
        return x
    mode = mode or "bilinear"
    smooth = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
    out = torch.nn.functional.interpolate(x.float(), size=(side, side), mode=mode, **smooth)
    return out.round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class ImageSet:
    store: torch.Tensor   # uint8 [M, C, H, W], decoded once (may be memory-mapped)
    labels: torch.Tensor  # int64 [N] index into class_names; multilabel: float32 [N, K] 0/1
    class_names: tuple[str, ...]
    source: str = ""  # where it came from, for the report
    task: str = "multiclass"
    files: tuple[str, ...] = ()  # each image's file (folder datasets), for listings
    rows: torch.Tensor | None = None  # int64 [N]: the store's rows in this set; all when None
    # The view: gathered rows are resized to side x side (None: as stored) with
    # `interpolation`, then centre-cropped to crop x crop (None: not cropped).
    side: int | None = None
    interpolation: str | None = None
    crop: int | None = None

    def __post_init__(self):
        if self.store.dtype != torch.uint8 or self.store.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W]; got {self.store.dtype} "
                             f"{tuple(self.store.shape)}")
        n = len(self.store) if self.rows is None else len(self.rows)
        if n != len(self.labels):
            raise ValueError("images and labels differ in length")
        if self.files and len(self.files) != len(self.labels):
            raise ValueError("files and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> torch.Tensor:
        """This whole set's pixels at the view's size, as one tensor (a copy unless the set is
        its whole store as stored). For small sets and tests: stages stream with `gather` and
        `chunks`, whose memory is bounded by the batch."""
        if self.rows is None and self.side is None and self.crop is None:
            return self.store
        return self.gather(torch.arange(len(self)))

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Pixels of the set's images at `index` (positions in this set), uint8 [B, C, H, W]
        at the view's size, on the store's device."""
        rows = index if self.rows is None else self.rows[index.to(self.rows.device)]
        x = self.store[rows.to(self.store.device)]
        if self.side is not None:
            x = resize_uint8(x, self.side, self.interpolation)
        return center_crop(x, self.crop)

    def pixels(self, position: int):
        """uint8 numpy [C, H, W] of one image, for figures."""
        return self.gather(torch.tensor([int(position)]))[0].cpu().numpy()

    def chunks(self, size: int | None = None):
        """The set's pixels in order, `size` images at a time (by default CHUNK_BYTES each)."""
        size = size or max(1, CHUNK_BYTES // self.image_bytes)
        for start in range(0, len(self), size):
            yield self.gather(torch.arange(start, min(len(self), start + size)))

    def on(self, device: torch.device | str) -> "ImageSet":
        """The set with its own rows (as stored: the view resizes on `device`) and its labels
        moved to `device`: a set that fits is moved to a GPU once, then batches index it."""
        store = self.store if self.rows is None else self.store[self.rows]
        return replace(self, store=store.to(device), rows=None, labels=self.labels.to(device))

    @property
    def image_bytes(self) -> int:
        """Bytes of one image at the view's size (uint8)."""
        return self.channels * self.size[0] * self.size[1]

    @property
    def channels(self) -> int:
        return self.store.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the images a gather returns."""
        if self.crop is not None:
            return (self.crop, self.crop)
        return (self.side, self.side) if self.side is not None else tuple(self.store.shape[2:])

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def take(self, index: torch.Tensor) -> "ImageSet":
        files = tuple(self.files[i] for i in index.tolist()) if self.files else ()
        rows = index if self.rows is None else self.rows[index]
        return replace(self, labels=self.labels[index], files=files, rows=rows)

    def class_counts(self) -> list[int]:
        """Images per class (multilabel: images carrying each label)."""
        if self.multilabel:
            return [int(c) for c in self.labels.sum(0).tolist()]
        return torch.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def resized(self, size: int | None, mode: str | None = None) -> "ImageSet":
        """The same images at size x size pixels (antialiased bilinear or bicubic, or
        nearest), still uint8, resized as they are gathered; itself when unset."""
        if size is None or self.size == (size, size):
            return self
        if self.crop is not None:
            raise ValueError("resize a set before cropping it")
        return replace(self, side=size, interpolation=mode or "bilinear")

    def center_cropped(self, side: int | None) -> "ImageSet":
        """The central side x side pixels of every image, cropped as they are gathered; itself
        when it is that size already. Evaluation sees what the model was trained to see."""
        if side is None or self.size == (side, side):
            return self
        return replace(self, crop=side)


def joined(parts: list[ImageSet]) -> ImageSet:
    """One set of several, in order, with the first's classes, task and view. Sets that are
    views of one store become one view (no pixel copied); others have their stored rows
    copied into one store (uint8 at the stored size, never at the view's)."""
    first = parts[0]
    labels = torch.cat([p.labels for p in parts])
    files = tuple(f for p in parts for f in p.files) if all(p.files for p in parts) else ()
    view = {"side": first.side, "interpolation": first.interpolation, "crop": first.crop}
    if any((p.side, p.interpolation, p.crop) != tuple(view.values()) for p in parts):
        raise ValueError("joined sets must share their view (size and crop)")
    if all(p.store is first.store for p in parts):
        rows = torch.cat([p.rows if p.rows is not None else torch.arange(len(p.store))
                          for p in parts])
        return replace(first, labels=labels, files=files, rows=rows)
    store = torch.cat([p.store if p.rows is None else p.store[p.rows] for p in parts])
    return replace(first, store=store, labels=labels, files=files, rows=None)
