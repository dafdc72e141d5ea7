"""Our configurable CNN: stages of [3x3 conv -> BatchNorm -> ReLU] x depth, max-pooled between."""

from __future__ import annotations

from torch import nn

from imclass.config import ModelConfig
from imclass.models import register


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own shift.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class CNN(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, widths: tuple[int, ...],
                 depths: tuple[int, ...], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            if stage:
                layers.append(nn.MaxPool2d(2))  # halves the side between stages
            for _ in range(depth):
                layers += conv_bn_relu(c, width)
                c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # global pooling: any input size works
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c, num_outputs)
        self.num_features = c

    def embed(self, x):
        """Penultimate features [B, num_features], before dropout and the head."""
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x):
        return self.head(self.dropout(self.embed(x)))


@register("cnn")
def build_cnn(cfg: ModelConfig, in_channels: int, num_outputs: int) -> nn.Module:
    return CNN(in_channels, num_outputs, cfg.widths, cfg.depths, cfg.dropout)
