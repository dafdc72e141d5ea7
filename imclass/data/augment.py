"""Random augmentation of whole batches, each image drawn independently (kornia), with presets.

Every operation has a probability (the share of images in a batch it touches) and a
magnitude; they come from `AugmentConfig`, whose unset fields are filled from a preset below.
kornia draws the parameters per image and applies them to the batch as one tensor operation,
so there is no Python loop over images. It draws from torch's global generator, which the run
seeds once at its start.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imclass.config import AUGMENT_PRESETS, AugmentConfig

PRESETS = AUGMENT_PRESETS  # the preset table lives with the other defaults


def _shift_and_scale(cfg: AugmentConfig, height: int, width: int, p: float) -> nn.Module:
    """A random shift (and zoom, when `scale` is set). A pure shift is an integer-pixel crop of
    the zero-padded image, so it does not blur; a zoom needs the interpolating affine warp."""
    import kornia.augmentation as K

    if cfg.scale:
        return K.RandomAffine(degrees=0.0, translate=(cfg.shift, cfg.shift),
                              scale=(1 - cfg.scale, 1 + cfg.scale), p=p)
    pad = (round(cfg.shift * height), round(cfg.shift * width))
    return K.RandomCrop((height, width), padding=(pad[1], pad[0]), p=p)


def _operations(cfg: AugmentConfig, channels: int, height: int, width: int,
                out_side: int | None = None) -> list[tuple[float, nn.Module]]:
    """(probability, kornia module) for every operation, in the order they are applied. A
    random resized crop comes first and gives out_side x out_side images (the model's input,
    smaller than the decoded images when they were decoded with a margin)."""
    import kornia.augmentation as K

    def span(m: float) -> tuple[float, float]:
        return (1 - m, 1 + m)

    out = out_side or min(height, width)
    resized_crop = (1.0 if cfg.crop_scale else 0.0,
                    lambda p: K.RandomResizedCrop((out, out), scale=(cfg.crop_scale, 1.0),
                                                  ratio=(3 / 4, 4 / 3), p=p))
    if cfg.crop_scale:
        height = width = out
    side = min(height, width)

    # Gaussian kernel covering +-3 sigma, odd, and no wider than the image.
    blur_k = min(2 * math.ceil(3 * cfg.blur_sigma) + 1, side - (1 - side % 2))
    return [
        resized_crop,
        (cfg.hflip_p, lambda p: K.RandomHorizontalFlip(p=p)),
        (cfg.vflip_p, lambda p: K.RandomVerticalFlip(p=p)),
        (cfg.rotate_p, lambda p: K.RandomRotation(degrees=cfg.rotate_degrees, p=p)),
        (cfg.shift_p if cfg.shift or cfg.scale else 0.0,
         lambda p: _shift_and_scale(cfg, height, width, p)),
        (cfg.brightness_p, lambda p: K.RandomBrightness(span(cfg.brightness), p=p)),
        (cfg.contrast_p, lambda p: K.RandomContrast(span(cfg.contrast), p=p)),
        (cfg.saturation_p if channels == 3 else 0.0,
         lambda p: K.RandomSaturation(span(cfg.saturation), p=p)),
        (cfg.noise_p, lambda p: K.RandomGaussianNoise(std=cfg.noise_std, p=p)),
        (cfg.blur_p if blur_k >= 3 else 0.0,
         lambda p: K.RandomGaussianBlur((blur_k, blur_k), (0.1, cfg.blur_sigma), p=p)),
        (cfg.erase_p, lambda p: K.RandomErasing(scale=(0.02, cfg.erase_area),
                                                ratio=(0.3, 3.3), value=0.0, p=p)),
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
