"""Batches drawn by index from the in-memory uint8 tensor, augmented and normalised as a whole."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from imclass.data.augment import BatchAugment
from imclass.data.images import ImageSet, center_crop

GPU_PRELOAD_BYTES = 4 * 1024 ** 3  # a set up to 4 GiB of uint8 pixels lives on the GPU
# Pixels of one batch where the batch sizes are left unset: the activations a batch holds
# grow with its pixels. Measured on EfficientNet-Lite0 at 224 px (fp32, channels-last, 2
# cores, glibc keeping freed memory as devices.keep_freed_memory sets it): a training step
# peaks at 3.1-3.3 GB of the process at batch 16 and 4.1-4.7 GB at batch 32, at the same
# images/s (70-100 ms an image either way), so Fashion-MNIST's batch of 256 would hold about
# 20 GB; inference holds about 12 MB per image (batch 64: 0.76 GB, 1,024: 12 GB), and a CPU
# scores as many images a second at 32 a pass as at 1,024.
TRAIN_BATCH_PIXELS = 16 * 224 * 224  # 16 images at 224 px, 64 at 96 px, 1,024 at 28 px
EVAL_BATCH_PIXELS = 32 * 224 * 224   # 32 images at 224 px, 174 at 96 px, 1,024 up to 39 px


def training_batch_within(side: int) -> int:
    """The largest power of two of side x side images within TRAIN_BATCH_PIXELS."""
    return 2 ** max(0, (TRAIN_BATCH_PIXELS // max(1, side) ** 2).bit_length() - 1)


def eval_batch_within(side: int) -> int:
    """Images of side x side within EVAL_BATCH_PIXELS (at least 8)."""
    return max(8, EVAL_BATCH_PIXELS // max(1, side) ** 2)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of images scaled to [0, 1]."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, images: "torch.Tensor | ImageSet") -> "Normalization":
        """Statistics of uint8 [N, C, H, W] images (a tensor, or an ImageSet read chunk by
        chunk), accumulated in float64."""
        chunks = images.chunks() if isinstance(images, ImageSet) else images.split(1024)
        c = images.channels if isinstance(images, ImageSet) else images.shape[1]
        total = torch.zeros(c, dtype=torch.float64)
        squares = torch.zeros(c, dtype=torch.float64)
        count = 0
        for chunk in chunks:
            x = chunk.to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
            total += x.sum(1)
            squares += (x * x).sum(1)
            count += x.shape[1]
        mean = total / count
        std = (squares / count - mean ** 2).clamp_min(1e-12).sqrt()
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = _as_tensors(self, x.dtype, x.device)
        return (x - mean) / std


@functools.lru_cache(maxsize=16)
def _as_tensors(norm: Normalization, dtype: torch.dtype, device: torch.device):
    """mean and std [1, C, 1, 1], made once per dtype and device: a tensor made from a Python
    list is a copy from the host, which on a GPU waits for the work queued before it."""
    return tuple(torch.tensor(v, dtype=dtype, device=device).view(1, -1, 1, 1)
                 for v in (norm.mean, norm.std))


class Batches:
    """Iterates (float images [B, C, H, W] normalised, int64 labels [B]) over an ImageSet.

    With `shuffle`, each pass draws a new seeded order (with `draw_weights`, a seeded draw
    with replacement); with `augment`, the whole batch is augmented at once before
    normalisation.
    """

    def __init__(self, data: ImageSet, batch_size: int, norm: Normalization, *,
                 shuffle: bool = False, augment: BatchAugment | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", drop_last: bool = False,
                 channels_last: bool = True, size: int | None = None,
                 shard: tuple[int, int] = (0, 1), draw_weights: torch.Tensor | None = None):
        # On a GPU the whole set moves over once when it fits the budget; otherwise (and on
        # the CPU) each batch gathers its rows from the set's store.
        # (The set is moved as stored: a view at a larger size is resized on the GPU per batch.)
        fits = len(data) * data.store[:1].numel() <= GPU_PRELOAD_BYTES
        self.preloaded = torch.device(device).type != "cpu" and fits
        self.data = data.on(device) if self.preloaded else data
        self.labels = data.labels.to(device)
        self.batch_size, self.norm, self.shuffle, self.augment = batch_size, norm, shuffle, augment
        self.drop_last, self.device, self.channels_last = drop_last, device, channels_last
        self.size = size  # the model's input side: larger images are centre-cropped to it
        # (rank, world): in a distributed run each global batch of `batch_size` is split into
        # `world` equal slices and this process takes slice `rank` (imclass.distributed)
        self.rank, self.world = shard
        # With `draw_weights` (one per image) each pass draws as many images as the set holds,
        # with replacement, each with probability proportional to its weight (as
        # torch.utils.data.WeightedRandomSampler: torch.multinomial): --balance sampler.
        self.draw_weights = draw_weights
        self.generator = torch.Generator().manual_seed(seed)
        # The batch order's generator as it was before the current pass drew its order, and
        # batches to skip at the start of the next pass: together they let a resumed run
        # continue an epoch in the middle (imclass.resume).
        self.pass_start_state = self.generator.get_state()
        self.skip = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        self.pass_start_state = self.generator.get_state()
        if self.draw_weights is not None:
            order = torch.multinomial(self.draw_weights, n, replacement=True,
                                      generator=self.generator)
        elif self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        if self.preloaded:  # one copy to the device a pass, not one per batch (each a sync)
            order = order.to(self.device)
        first, self.skip = self.skip * self.batch_size, 0
        for start in range(first, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            if self.world > 1:
                per = len(index) // self.world
                index = index[self.rank * per:(self.rank + 1) * per]
            x = self.data.gather(index).to(self.device, non_blocking=True).float().div_(255)
            index = index.to(self.labels.device)
            if self.augment is not None:
                x = self.augment(x)
            x = center_crop(x, self.size)
            x = self.norm.apply(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[index]
