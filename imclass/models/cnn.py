"""Our configurable CNNs, stages max-pooled between, global average pooling, a linear head:
- cnn: each stage [3x3 conv -> BatchNorm -> ReLU] x depth;
- rescnn: each stage one 3x3 conv-BN-ReLU to the stage's width, then `depth` residual blocks
  (x + two conv-BN-ReLU), the ResNet-9 shape of the DAWNBench CIFAR-10 winners; a depth of 0
  is a plain conv stage, so `--widths 64,128,256,512 --depths 0,1,0,1` is ResNet-9 itself.
"""

from __future__ import annotations

from torch import nn

from imclass.config import ModelConfig
from imclass.models import register


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own shift.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class Residual(nn.Module):
    """x + f(x), f two conv-BN-ReLU layers at x's width (the sum is not activated again, as in
    ResNet-9: the skip path stays the identity, so a deep stack trains like a shallow one)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn_relu(width, width), *conv_bn_relu(width, width))

    def forward(self, x):
        return x + self.body(x)


class CNN(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, widths: tuple[int, ...],
                 depths: tuple[int, ...], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            if stage:
                layers.append(nn.MaxPool2d(2))  # halves the side between stages
            layers += self.stage(c, width, depth)
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # global pooling: any input size works
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c, num_outputs)
        self.num_features = c

    @staticmethod
    def stage(c_in: int, width: int, depth: int) -> list[nn.Module]:
        return [layer for i in range(depth) for layer in conv_bn_relu(c_in if i == 0 else width,
                                                                      width)]

    def embed(self, x):
        """Penultimate features [B, num_features], before dropout and the head."""
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x):
        return self.head(self.dropout(self.embed(x)))

    def forward_with_embedding(self, x):
        """(logits, penultimate features) from one pass: evaluation's figures want both."""
        features = self.embed(x)
        return self.head(self.dropout(features)), features


class ResCNN(CNN):
    @staticmethod
    def stage(c_in: int, width: int, depth: int) -> list[nn.Module]:
        return conv_bn_relu(c_in, width) + [Residual(width) for _ in range(depth)]


@register("cnn")
def build_cnn(cfg: ModelConfig, in_channels: int, num_outputs: int) -> nn.Module:
    """imclass's own CNN, random init"""
    return CNN(in_channels, num_outputs, cfg.widths, cfg.depths, cfg.dropout)


@register("rescnn")
def build_rescnn(cfg: ModelConfig, in_channels: int, num_outputs: int) -> nn.Module:
    """imclass's own residual CNN (ResNet-9's shape), random init"""
    return ResCNN(in_channels, num_outputs, cfg.widths, cfg.depths, cfg.dropout)
