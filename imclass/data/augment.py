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

from imclass.config import AugmentConfig

_ZERO = dict(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0, rotate_degrees=0.0, shift_p=0.0, shift=0.0,
             scale=0.0, brightness_p=0.0, brightness=0.0, contrast_p=0.0, contrast=0.0,
             saturation_p=0.0, saturation=0.0, noise_p=0.0, noise_std=0.0, blur_p=0.0,
             blur_sigma=1.0)


def _preset(name: str, **values: float) -> AugmentConfig:
    return AugmentConfig(preset=name, **{**_ZERO, **values})


PRESETS = {
    "none": _preset("none"),
    # Fashion-MNIST: garments are centred, upright and left-right symmetric in meaning, so a
    # horizontal flip and a small shift help; vertical flips and big rotations would not.
    "fashion": _preset("fashion", hflip_p=0.5, shift_p=0.5, shift=0.1),
    "light": _preset("light", hflip_p=0.5, shift_p=0.5, shift=0.08, scale=0.05,
                     brightness_p=0.3, brightness=0.2, contrast_p=0.3, contrast=0.2),
    "strong": _preset("strong", hflip_p=0.5, rotate_p=0.5, rotate_degrees=15.0, shift_p=0.7,
                      shift=0.12, scale=0.15, brightness_p=0.5, brightness=0.3, contrast_p=0.5,
                      contrast=0.3, saturation_p=0.5, saturation=0.3, noise_p=0.3,
                      noise_std=0.03, blur_p=0.2, blur_sigma=1.0),
}


def _shift_and_scale(cfg: AugmentConfig, height: int, width: int, p: float) -> nn.Module:
    """A random shift (and zoom, when `scale` is set). A pure shift is an integer-pixel crop of
    the zero-padded image, so it does not blur; a zoom needs the interpolating affine warp."""
    import kornia.augmentation as K

    if cfg.scale:
        return K.RandomAffine(degrees=0.0, translate=(cfg.shift, cfg.shift),
                              scale=(1 - cfg.scale, 1 + cfg.scale), p=p)
    pad = (round(cfg.shift * height), round(cfg.shift * width))
    return K.RandomCrop((height, width), padding=(pad[1], pad[0]), p=p)


def _operations(cfg: AugmentConfig, channels: int, height: int, width: int
                ) -> list[tuple[float, nn.Module]]:
    """(probability, kornia module) for every operation, in the order they are applied."""
    import kornia.augmentation as K

    def span(m: float) -> tuple[float, float]:
        return (1 - m, 1 + m)

    side = min(height, width)

    # Gaussian kernel covering +-3 sigma, odd, and no wider than the image.
    blur_k = min(2 * math.ceil(3 * cfg.blur_sigma) + 1, side - (1 - side % 2))
    return [
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
    ]


class BatchAugment(nn.Module):
    """Augments a float batch [N, C, H, W] with values in [0, 1]; returns a new batch in [0, 1]."""

    def __init__(self, cfg: AugmentConfig, shape: tuple[int, int, int]):
        super().__init__()
        self.ops = nn.Sequential(*[make(p) for p, make in _operations(cfg, *shape) if p > 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x).clamp_(0, 1)


def build_augment(cfg: AugmentConfig, shape: tuple[int, int, int]) -> BatchAugment | None:
    """The augmentation for a resolved config and image shape (C, H, W); None when it would
    do nothing."""
    augment = BatchAugment(cfg, shape)
    return augment if len(augment.ops) else None
