"""The decoded dataset: one uint8 tensor of images and one of labels, drawn from by index."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8 [N, C, H, W], decoded once
    labels: torch.Tensor  # int64 [N], index into class_names
    class_names: tuple[str, ...]
    source: str = ""  # where it came from, for the report

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W]; got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    def take(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], self.class_names, self.source)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def resized(self, size: int | None) -> "ImageSet":
        """The same images at size x size pixels (antialiased), still uint8; itself when unset."""
        if size is None or self.size == (size, size):
            return self
        x = torch.nn.functional.interpolate(self.images.float(), size=(size, size),
                                            mode="bilinear", antialias=True, align_corners=False)
        images = x.round_().clamp_(0, 255).to(torch.uint8)
        return ImageSet(images, self.labels, self.class_names, self.source)
