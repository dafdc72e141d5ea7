"""The decoded dataset: one uint8 tensor of images and one of labels, drawn from by index.

A set can be a view of rows of a larger store (a memory-mapped decode cache, say): `take`
composes row indices instead of copying pixels, so splitting a dataset larger than memory
into train and validation reads nothing; batches gather their rows when they are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


def center_crop(x: torch.Tensor, side: int | None) -> torch.Tensor:
    """The central side x side pixels of images [..., H, W] (unchanged when that size)."""
    h, w = x.shape[-2:]
    if side is None or (h, w) == (side, side):
        return x
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top:top + side, left:left + side]


@dataclass(frozen=True)
class ImageSet:
    store: torch.Tensor   # uint8 [M, C, H, W], decoded once (may be memory-mapped)
    labels: torch.Tensor  # int64 [N] index into class_names; multilabel: float32 [N, K] 0/1
    class_names: tuple[str, ...]
    source: str = ""  # where it came from, for the report
    task: str = "multiclass"
    files: tuple[str, ...] = ()  # each image's file (folder datasets), for listings
    rows: torch.Tensor | None = None  # int64 [N]: the store's rows in this set; all when None

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
        """This set's pixels as one tensor (a copy when the set is a view: use `gather` for
        a batch of a large set)."""
        return self.store if self.rows is None else self.store[self.rows]

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Pixels of the set's images at `index` (positions in this set), uint8 [B, C, H, W]."""
        return self.store[index if self.rows is None else self.rows[index]]

    def chunks(self, size: int = 4096):
        for start in range(0, len(self), size):
            yield self.gather(torch.arange(start, min(len(self), start + size)))

    @property
    def channels(self) -> int:
        return self.store.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.store.shape[2:])

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
        nearest), still uint8; itself when unset."""
        if size is None or self.size == (size, size):
            return self
        mode = mode or "bilinear"
        smooth = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
        x = torch.nn.functional.interpolate(self.images.float(), size=(size, size), mode=mode,
                                            **smooth)
        return replace(self, store=x.round_().clamp_(0, 255).to(torch.uint8), rows=None)

    def center_cropped(self, side: int | None) -> "ImageSet":
        """The central side x side pixels of every image (a copy of this set's rows); itself
        when it is that size already. Evaluation sees what the model was trained to see."""
        if side is None or self.size == (side, side):
            return self
        return replace(self, store=center_crop(self.images, side).contiguous(), rows=None)
