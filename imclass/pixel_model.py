"""`PixelModel`: the trained network wrapped so that it takes what a caller has, uint8 pixels
[N, C, decoded, decoded]. Scaling, the centre crop, normalization and softmax (or sigmoid)
are inside it, so the eager model, the exported graphs and every caller compute the same
probabilities from the same pixels (imclass.contract says what they are).
"""

from __future__ import annotations

import torch
from torch import nn

from imclass.contract import Contract


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

    def normalized(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float() / 255.0
        x = x[:, :, self.top:self.top + self.side, self.top:self.top + self.side]
        return (x - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalized(pixels)
        return self._with_flips(x, self.probabilities(x))

    def _with_flips(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        for dim in self.flips:  # as imclass.metrics.predict_probabilities averages them
            probs = probs + self.probabilities(x.flip(dim))
        return probs / (1 + len(self.flips))

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
        return self._with_flips(x, self._activate(logits)), features.float()

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
