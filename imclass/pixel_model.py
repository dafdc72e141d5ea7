"""`PixelModel`: the trained network wrapped so that it takes what a caller has, uint8 pixels
[N, C, decoded, decoded]. Scaling, the centre crop, normalization and softmax (or sigmoid)
are inside it, so the eager model, the exported graphs and every caller compute the same
probabilities from the same pixels (imclass.contract says what they are).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from imclass.contract import Contract


def moved(x: torch.Tensor, rows: int, cols: int, black: torch.Tensor | float) -> torch.Tensor:
    """`x` [N, C, H, W] moved `rows` down and `cols` right (negative: up, left) by whole pixels,
    the uncovered border `black` (the normalised value of a black pixel, [1, C, 1, 1]): as
    imclass.data.batch_ops.Shift moves a training image, at a fixed place."""
    h, w = x.shape[-2:]
    padded = F.pad(x - black, (max(cols, 0), max(-cols, 0), max(rows, 0), max(-rows, 0)))
    top, left = max(-rows, 0), max(-cols, 0)
    return padded[:, :, top:top + h, left:left + w] + black


def view_offsets(shift: int) -> list[tuple[int, int]]:
    """(rows, cols) each test-time view moves its image by: unmoved, then `shift` px up, down,
    left and right when `shift` > 0."""
    return [(0, 0)] + ([(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if shift else [])


def view_count(flips: tuple[int, ...], shift: int) -> int:
    """How many views average_views passes through the network per image."""
    return len(view_offsets(shift)) * (1 + len(flips))


def average_views(probabilities: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  flips: tuple[int, ...] = (), shift: int = 0,
                  black: torch.Tensor | float = 0.0,
                  first: torch.Tensor | None = None) -> torch.Tensor:
    """Test-time augmentation (--tta, --tta-shift): the mean of `probabilities` over `x`
    moved by each of view_offsets(shift), each view also flipped along each dim of `flips`
    (-1 horizontal, -2 vertical). `first`: the probabilities of `x` itself, when the caller
    has them already. The one definition of the views, for the eager model and the exported."""
    total = None
    for rows, cols in view_offsets(shift):
        view = moved(x, rows, cols, black) if rows or cols else x
        p = first if first is not None and view is x else probabilities(view)
        for dim in flips:
            p = p + probabilities(view.flip(dim))
        total = p if total is None else total + p
    return total / view_count(flips, shift)


class PixelModel(nn.Module):
    """uint8 pixels [N, C, decoded, decoded] -> probabilities float32 [N, K]."""

    def __init__(self, network: nn.Module, contract: Contract):
        super().__init__()
        self.network = network
        c = contract.input_channels
        self.register_buffer("mean", torch.tensor(contract.mean, dtype=torch.float32)
                             .view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(contract.std, dtype=torch.float32)
                             .view(1, c, 1, 1))
        margin = contract.decoded_size - contract.input_size
        self.top = margin // 2  # the same centre as imclass.data.images.center_crop
        self.side = contract.input_size
        self.sigmoid = contract.task == "multilabel"
        self.flips = tuple(contract.flips)  # test-time flips (--tta), averaged in forward
        self.shift = contract.shift  # and moves, px (--tta-shift)

    def normalized(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float() / 255.0
        x = x[:, :, self.top:self.top + self.side, self.top:self.top + self.side]
        return (x - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._with_views(self.normalized(pixels))

    def _with_views(self, x: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        # as imclass.metrics.predict_probabilities averages them
        black = -self.mean / self.std  # a black pixel, normalised
        return average_views(self.probabilities, x, self.flips, self.shift, black, first)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self._activate(self.network(x))

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return logits.sigmoid() if self.sigmoid else logits.softmax(dim=1)

    def with_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [N, K] as forward gives them, penultimate features [N, D] of the
        unflipped image) from one pass of the network: the run's own ONNX network outputs both,
        so that evaluation draws its embedding figure from the test pass."""
        x = self.normalized(pixels)
        logits, features = self.network.forward_with_embedding(x)
        return self._with_views(x, self._activate(logits)), features.float()

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The penultimate features [N, D] the head reads (imclass.similarity)."""
        return self.network.embed(self.normalized(pixels))


class WithFeatures(nn.Module):
    """A PixelModel whose forward is `with_features`: the form of the run's own ONNX network
    (imclass.predictor.save_network), whose second output evaluation reads."""

    def __init__(self, pixel_model: PixelModel):
        super().__init__()
        self.pixel_model = pixel_model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixel_model.with_features(pixels)
