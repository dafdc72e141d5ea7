"""Batches drawn by index from the in-memory uint8 tensor, augmented and normalised as a whole."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imclass.data.augment import BatchAugment
from imclass.data.images import ImageSet


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of images scaled to [0, 1]."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, images: torch.Tensor) -> "Normalization":
        """Statistics of a uint8 [N, C, H, W] tensor, accumulated in float64 in chunks."""
        c = images.shape[1]
        total = torch.zeros(c, dtype=torch.float64)
        squares = torch.zeros(c, dtype=torch.float64)
        for chunk in images.split(4096):
            x = chunk.to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
            total += x.sum(1)
            squares += (x * x).sum(1)
        count = images.numel() / c
        mean = total / count
        std = (squares / count - mean ** 2).clamp_min(1e-12).sqrt()
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


class Batches:
    """Iterates (float images [B, C, H, W] normalised, int64 labels [B]) over an ImageSet.

    With `shuffle`, each pass draws a new seeded order; with `augment`, the whole batch is
    augmented at once before normalisation.
    """

    def __init__(self, data: ImageSet, batch_size: int, norm: Normalization, *,
                 shuffle: bool = False, augment: BatchAugment | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", drop_last: bool = False,
                 channels_last: bool = True):
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size, self.norm, self.shuffle, self.augment = batch_size, norm, shuffle, augment
        self.drop_last, self.device, self.channels_last = drop_last, device, channels_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            x = self.images[index].float().div_(255)
            if self.augment is not None:
                x = self.augment(x)
            x = self.norm.apply(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[index]
