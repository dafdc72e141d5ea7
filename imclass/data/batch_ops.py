"""Random augmentation operations over whole batches, each image drawn independently.

Each operation draws its images' parameters as a few tensors on the batch's device (from
torch's generator for that device, which the run seeds) and applies them with broadcast
arithmetic, one gather or one grid_sample: the number of tensor operations and of host
operations a batch costs is fixed, whatever its size, and nothing waits on the device.

Why not kornia for these (it stays for the Gaussian blur): its parameter handling loops over
the images on the host. On an H200 one default step's augmentation took 6.34 ms against the
model's 4.65 ms for forward, backward and SGD, with about 800 aten::select, 790 aten::slice
and 255 aten::equal per step (../shared/measurements/gpu-h200-2026-12-04.md). kornia's
RandomCrop also draws its probability per batch (a whole batch shifted or not), where these
draw it per image, as the presets mean.

Every operation takes and returns float images [N, C, H, W] in [0, 1]; the distributions are
kornia's (tests/test_augment.py compares their statistics side by side).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def uniform(n: int, low: float, high: float, like: torch.Tensor, *shape: int) -> torch.Tensor:
    """n (x shape) draws from U[low, high) on `like`'s device, in its dtype."""
    return torch.rand(n, *shape, device=like.device, dtype=like.dtype) * (high - low) + low


def chosen(x: torch.Tensor, p: float) -> torch.Tensor:
    """bool [N, 1, 1, 1]: which images of the batch an operation of probability p touches."""
    return torch.rand(len(x), 1, 1, 1, device=x.device) < p


class Flip(nn.Module):
    """Mirror each chosen image along `dim` (-1: left-right, -2: upside down)."""

    def __init__(self, p: float, dim: int):
        super().__init__()
        self.p, self.dim = p, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(chosen(x, self.p), x.flip(self.dim), x)


class Shift(nn.Module):
    """Move each chosen image by whole pixels, up to `pad` = (rows, columns) either way, the
    uncovered border black: the zero-padded image cropped at a random place (kornia's
    RandomCrop with padding), by two gathers. Whole pixels: nothing is blurred."""

    def __init__(self, p: float, pad: tuple[int, int]):
        super().__init__()
        self.p, self.pad = p, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        ph, pw = self.pad
        moved = chosen(x, self.p).view(n, 1)
        # the crop's top-left corner in the padded image; (ph, pw) is the image unmoved
        top = torch.where(moved, torch.randint(0, 2 * ph + 1, (n, 1), device=x.device), ph)
        left = torch.where(moved, torch.randint(0, 2 * pw + 1, (n, 1), device=x.device), pw)
        rows = top + torch.arange(h, device=x.device)  # [N, H]
        cols = left + torch.arange(w, device=x.device)  # [N, W]
        padded = F.pad(x, (pw, pw, ph, ph))
        x = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pw))
        return x.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


class Affine(nn.Module):
    """Rotate each chosen image by up to `degrees` either way, zoom it by a factor in
    [1 - scale, 1 + scale] and shift it by up to `translate` of its side, about its centre,
    bilinear, black outside (kornia's RandomAffine and RandomRotation): one affine_grid and one
    grid_sample for the batch."""

    def __init__(self, p: float, degrees: float = 0.0, translate: float = 0.0,
                 scale: float = 0.0):
        super().__init__()
        self.p, self.degrees, self.translate, self.scale = p, degrees, translate, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        angle = uniform(n, -self.degrees, self.degrees, x) * (math.pi / 180)
        zoom = uniform(n, 1 - self.scale, 1 + self.scale, x)
        shift = uniform(n, -self.translate, self.translate, x, 2) * x.new_tensor([w, h])
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        # affine_grid maps each output position to where it samples the input, in coordinates
        # of -1..1 across each side: the inverse of "zoom and rotate about the centre, then
        # shift", in pixels about the centre, then rescaled (so that non-square images turn
        # without shearing). Pixels: p_in = R(-angle) (p_out - shift) / zoom.
        half = x.new_tensor([w / 2, h / 2])
        inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
        linear = inverse * (half.view(1, 1, 2) / half.view(1, 2, 1))  # P^-1 A P
        offset = -(inverse @ shift.unsqueeze(2)).squeeze(2) / half
        theta = torch.cat([linear, offset.unsqueeze(2)], 2)
        grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        return torch.where(chosen(x, self.p), warped, x)


class ResizedCrop(nn.Module):
    """A random crop of each image, of `min_area` to all of its area and an aspect ratio in
    [3/4, 4/3] (log-uniform), in whole pixels, resized to out x out, bilinear (kornia's and
    torchvision's RandomResizedCrop: ten tries per image, then the whole image, or as much of
    it as the ratios allow). One grid_sample for the batch."""

    TRIES = 10

    def __init__(self, out: int, min_area: float, ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        super().__init__()
        self.out, self.min_area, self.ratio = out, min_area, ratio

    def fallback(self, h: int, w: int) -> tuple[float, float]:
        """(height, width) of the crop when no try fits: the whole image, cut to the nearest
        allowed aspect ratio."""
        low, high = self.ratio
        if w / h < low:
            return float(round(w / low)), float(w)
        if w / h > high:
            return float(h), float(round(h * high))
        return float(h), float(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        area = uniform(n, self.min_area, 1.0, x, self.TRIES) * (h * w)
        ratio = uniform(n, *map(math.log, self.ratio), x, self.TRIES).exp()
        crop_w, crop_h = (area * ratio).sqrt().round(), (area / ratio).sqrt().round()
        fits = (crop_w >= 1) & (crop_w <= w) & (crop_h >= 1) & (crop_h <= h)
        first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
        none_fit = ~fits.any(1)
        whole_h, whole_w = self.fallback(h, w)
        crop_w = torch.where(none_fit, whole_w, crop_w.gather(1, first).squeeze(1))
        crop_h = torch.where(none_fit, whole_h, crop_h.gather(1, first).squeeze(1))
        left = (torch.rand_like(crop_w) * (w - crop_w + 1)).floor()
        top = (torch.rand_like(crop_h) * (h - crop_h + 1)).floor()
        # With align_corners, -1 and 1 are the centres of the first and last pixels, of the
        # output and of the input: the crop's corner pixels land on the output's corners.
        zero = torch.zeros_like(crop_w)
        theta = torch.stack([
            torch.stack([(crop_w - 1) / max(w - 1, 1), zero,
                         (2 * left + crop_w - 1) / max(w - 1, 1) - 1], 1),
            torch.stack([zero, (crop_h - 1) / max(h - 1, 1),
                         (2 * top + crop_h - 1) / max(h - 1, 1) - 1], 1)], 1)
        grid = F.affine_grid(theta, [n, c, self.out, self.out], align_corners=True)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                             align_corners=True)


class Brightness(nn.Module):
    """Add f - 1 to every pixel of each chosen image, f uniform in [1 - m, 1 + m] (kornia's
    RandomBrightness)."""

    def __init__(self, p: float, magnitude: float):
        super().__init__()
        self.p, self.magnitude = p, magnitude

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = uniform(len(x), -self.magnitude, self.magnitude, x, 1, 1, 1)
        return (x + delta * chosen(x, self.p)).clamp_(0, 1)


class Contrast(nn.Module):
    """Multiply every pixel of each chosen image by f, uniform in [1 - m, 1 + m] (kornia's
    RandomContrast: a plain scale, not about the mean)."""

    def __init__(self, p: float, magnitude: float):
        super().__init__()
        self.p, self.magnitude = p, magnitude

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = uniform(len(x), 1 - self.magnitude, 1 + self.magnitude, x, 1, 1, 1)
        return (x * torch.where(chosen(x, self.p), factor, 1.0)).clamp_(0, 1)


class Saturation(nn.Module):
    """Scale the HSV saturation of each chosen RGB image by f, uniform in [1 - m, 1 + m], and
    clamp it to [0, 1] (kornia's RandomSaturation), without the trip through hue: with value
    V = max(R, G, B) and saturation S = (V - min) / V, a channel is V - V S (1 - g) where g
    depends on the hue only, so the new saturation S' = min(S f, 1) gives
    channel' = V - (S' / S) (V - channel)."""

    def __init__(self, p: float, magnitude: float):
        super().__init__()
        self.p, self.magnitude = p, magnitude

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = uniform(len(x), 1 - self.magnitude, 1 + self.magnitude, x, 1, 1, 1)
        factor = torch.where(chosen(x, self.p), factor, 1.0)
        value = x.amax(1, keepdim=True)
        sat = (value - x.amin(1, keepdim=True)) / value.clamp_min(1e-8)
        kept = (sat * factor).clamp(0, 1) / sat.clamp_min(1e-8)  # S' / S (grey: S = 0)
        return (value - kept * (value - x)).clamp_(0, 1)


class Noise(nn.Module):
    """Add Gaussian noise of standard deviation `std` to each chosen image."""

    def __init__(self, p: float, std: float):
        super().__init__()
        self.p, self.std = p, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * (self.std * chosen(x, self.p))


class Erase(nn.Module):
    """Black out one rectangle of each chosen image, of 2% to `max_area` of its area and an
    aspect ratio in [0.3, 3.3] (kornia's RandomErasing: the ratio is below or above 1 with
    even odds, uniform on either side; sides rounded to whole pixels), by one mask."""

    def __init__(self, p: float, max_area: float, ratio: tuple[float, float] = (0.3, 3.3)):
        super().__init__()
        self.p, self.max_area, self.ratio = p, max_area, ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        area = uniform(n, 0.02, self.max_area, x) * (h * w)
        low, high = self.ratio
        ratio = torch.where(torch.rand(n, device=x.device) < 0.5, uniform(n, low, 1.0, x),
                            uniform(n, 1.0, high, x))
        rect_h = (area * ratio).sqrt().round().clamp(1, h)
        rect_w = (area / ratio).sqrt().round().clamp(1, w)
        top = (torch.rand_like(rect_h) * (h - rect_h + 1)).floor()
        left = (torch.rand_like(rect_w) * (w - rect_w + 1)).floor()
        rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
        cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
        inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + rect_h).view(n, 1, 1))
                  & (cols >= left.view(n, 1, 1)) & (cols < (left + rect_w).view(n, 1, 1)))
        return x.masked_fill(inside.unsqueeze(1) & chosen(x, self.p), 0.0)
