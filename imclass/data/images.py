"""The decoded dataset: one uint8 tensor of images and one of labels, drawn from by index."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8 [N, C, H, W], decoded once
    labels: torch.Tensor  # int64 [N] index into class_names; multilabel: float32 [N, K] 0/1
    class_names: tuple[str, ...]
    source: str = ""  # where it came from, for the report
    task: str = "multiclass"
    files: tuple[str, ...] = ()  # each image's file (folder datasets), for listings

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W]; got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")
        if self.files and len(self.files) != len(self.labels):
            raise ValueError("files and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def take(self, index: torch.Tensor) -> "ImageSet":
        files = tuple(self.files[i] for i in index.tolist()) if self.files else ()
        return replace(self, images=self.images[index], labels=self.labels[index], files=files)

    def class_counts(self) -> list[int]:
        """Images per class (multilabel: images carrying each label)."""
        if self.multilabel:
            return [int(c) for c in self.labels.sum(0).tolist()]
        return torch.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def resized(self, size: int | None) -> "ImageSet":
        """The same images at size x size pixels (antialiased), still uint8; itself when unset."""
        if size is None or self.size == (size, size):
            return self
        x = torch.nn.functional.interpolate(self.images.float(), size=(size, size),
                                            mode="bilinear", antialias=True, align_corners=False)
        return replace(self, images=x.round_().clamp_(0, 255).to(torch.uint8))
