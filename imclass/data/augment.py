"""Random augmentation of whole batches, each image drawn independently, with presets.

Every operation has a probability (the share of images in a batch it touches) and a
magnitude; they come from `AugmentConfig`, whose unset fields are filled from a preset below.
Each operation (imclass.data.batch_ops) draws its parameters per image as tensors on the
batch's device and applies them to the whole batch at once: no loop over images, in Python
or inside a library, and a fixed number of tensor operations per batch whatever its size.
Only the Gaussian blur (the `strong` preset) is kornia's. They draw from torch's generator
for the batch's device, which the run seeds once at its start.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imclass.config import AUGMENT_PRESETS, AugmentConfig
from imclass.data import batch_ops as ops

PRESETS = AUGMENT_PRESETS  # the preset table lives with the other defaults


def _shift_and_scale(cfg: AugmentConfig, height: int, width: int, p: float) -> nn.Module:
    """A random shift (and zoom, when `scale` is set). A pure shift moves whole pixels, so it
    does not blur; a zoom needs the interpolating affine warp."""
    if cfg.scale:
        return ops.Affine(p, translate=cfg.shift, scale=cfg.scale)
    return ops.Shift(p, (round(cfg.shift * height), round(cfg.shift * width)))


def _blur(p: float, k: int, sigma: float) -> nn.Module:
    import kornia.augmentation as K

    return K.RandomGaussianBlur((k, k), (0.1, sigma), p=p)


def _operations(cfg: AugmentConfig, channels: int, height: int, width: int,
                out_side: int | None = None) -> list[tuple[float, nn.Module]]:
    """(probability, operation) for every operation, in the order they are applied. A
    random resized crop comes first and gives out_side x out_side images (the model's input,
    smaller than the decoded images when they were decoded with a margin)."""
    out = out_side or min(height, width)
    resized_crop = (1.0 if cfg.crop_scale else 0.0,
                    lambda p: ops.ResizedCrop(out, cfg.crop_scale))
    if cfg.crop_scale:
        height = width = out
    side = min(height, width)

    # Gaussian kernel covering +-3 sigma, odd, and no wider than the image.
    blur_k = min(2 * math.ceil(3 * cfg.blur_sigma) + 1, side - (1 - side % 2))
    return [
        resized_crop,
        (cfg.hflip_p, lambda p: ops.Flip(p, -1)),
        (cfg.vflip_p, lambda p: ops.Flip(p, -2)),
        (cfg.rotate_p, lambda p: ops.Affine(p, degrees=cfg.rotate_degrees)),
        (cfg.shift_p if cfg.shift or cfg.scale else 0.0,
         lambda p: _shift_and_scale(cfg, height, width, p)),
        (cfg.brightness_p, lambda p: ops.Brightness(p, cfg.brightness)),
        (cfg.contrast_p, lambda p: ops.Contrast(p, cfg.contrast)),
        (cfg.saturation_p if channels == 3 else 0.0,
         lambda p: ops.Saturation(p, cfg.saturation)),
        (cfg.noise_p, lambda p: ops.Noise(p, cfg.noise_std)),
        (cfg.blur_p if blur_k >= 3 else 0.0, lambda p: _blur(p, blur_k, cfg.blur_sigma)),
        (cfg.erase_p, lambda p: ops.Erase(p, cfg.erase_area)),
    ]


class BatchAugment(nn.Module):
    """Augments a float batch [N, C, H, W] with values in [0, 1]; returns a new batch in [0, 1]."""

    def __init__(self, cfg: AugmentConfig, shape: tuple[int, int, int],
                 out_side: int | None = None):
        super().__init__()
        self.ops = nn.Sequential(*[make(p) for p, make in _operations(cfg, *shape, out_side)
                                   if p > 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x).clamp_(0, 1)


def build_augment(cfg: AugmentConfig, shape: tuple[int, int, int],
                  out_side: int | None = None) -> BatchAugment | None:
    """The augmentation for a resolved config, decoded image shape (C, H, W) and model input
    side; None when it would do nothing."""
    augment = BatchAugment(cfg, shape, out_side)
    return augment if len(augment.ops) else None
