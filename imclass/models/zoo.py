"""Known architectures from timm (ResNet, VGG, Xception, Inception, EfficientNet, ConvNeXt,
...), with their head replaced to fit the task, and the input each one expects.

A timm network is wrapped so it offers what the rest of imclass asks of a model: `forward`,
`embed` (penultimate features) and `head`. Greyscale data keeps one channel: timm builds the
first convolution for `in_chans=1`, and pretrained RGB filters are summed over their input
channels when loaded (timm's `adapt_input_conv`), which computes exactly what the RGB network
computes on the grey image repeated three times, at a third of the first layer's cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from imclass.config import ModelConfig
from imclass.errors import ConfigError


@dataclass(frozen=True)
class InputSpec:
    """What a pretrained network was trained on: its input side, channels and normalisation."""
    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float = 0.875  # evaluation: the centre share of an image resized to size / it


class TimmClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, architecture: str):
        super().__init__()
        self.backbone = backbone
        self.architecture = architecture

    @property
    def head(self) -> nn.Module:
        return self.backbone.get_classifier()

    def embed(self, x):
        b = self.backbone
        return b.forward_head(b.forward_features(x), pre_logits=True).flatten(1)

    def forward(self, x):
        return self.backbone(x)

    def forward_with_embedding(self, x):
        """(logits, penultimate features) from one pass of the backbone's features (timm's
        forward is forward_head(forward_features(x))); the pooling runs twice, cheaply."""
        b = self.backbone
        features = b.forward_features(x)
        return b.forward_head(features), b.forward_head(features, pre_logits=True).flatten(1)


def is_timm_model(name: str) -> bool:
    import timm
    return timm.is_model(name)


def unknown_model_error(name: str, ours) -> ConfigError:
    import difflib

    import timm
    close = difflib.get_close_matches(name, list(ours) + timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown model '{name}'{hint} (imclass models lists them all)")


def input_spec(architecture: str) -> InputSpec:
    import timm
    cfg = timm.get_pretrained_cfg(architecture)
    if cfg is None:
        return InputSpec(224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    c, h, _w = cfg.input_size
    return InputSpec(h, c, tuple(cfg.mean), tuple(cfg.std), cfg.interpolation,
                     cfg.crop_pct or 0.875)


def build_timm(cfg: ModelConfig, in_channels: int, num_outputs: int,
               architecture: str | None = None) -> TimmClassifier:
    """The architecture with random weights, a `num_outputs` head and `cfg.dropout` before it;
    pretrained weights are loaded afterwards (imclass.models.weights)."""
    import timm
    arch = architecture or cfg.name
    net = timm.create_model(arch, pretrained=False, num_classes=num_outputs,
                            in_chans=in_channels, drop_rate=cfg.dropout)
    head = net.get_classifier()
    if isinstance(head, nn.Linear):
        # timm's EfficientNet init draws the head from +-1/sqrt(classes): logits of about 10
        # on pretrained features and a first loss near 20. A new head starts small instead.
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
    return TimmClassifier(net, arch)


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """timm's architectures matching `pattern`; a bare word matches as a substring
    (`resnet` is `*resnet*`), shell wildcards as written."""
    import timm
    return timm.list_models(as_pattern(pattern), pretrained=pretrained)


def as_pattern(text: str | None) -> str:
    """A bare word matches anywhere in a name (`resnet` is `*resnet*`); a pattern with shell
    wildcards is kept as written."""
    if not text:
        return "*"
    return text if any(ch in text for ch in "*?[") else f"*{text}*"


def parameter_count(architecture: str) -> int:
    """Parameters of the architecture as timm builds it (ImageNet head), without allocating
    the weights (built on the meta device)."""
    import timm
    import torch
    with torch.device("meta"):
        net = timm.create_model(architecture, pretrained=False)
    return sum(p.numel() for p in net.parameters())


def weights_note(architecture: str) -> str:
    """Where pretrained weights would come from: installed (offline), cached, the hub, none."""
    import timm

    from imclass.models.weights import LITE0_NAMES, hub_cache_file, lite0_package_file
    if architecture in LITE0_NAMES and lite0_package_file() is not None:
        return "pretrained: installed package (offline)"
    if hub_cache_file(architecture) is not None:
        return "pretrained: Hugging Face cache (offline)"
    cfg = timm.get_pretrained_cfg(architecture)
    if cfg is not None and (getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None)):
        return "pretrained: from the hub (needs the network once)"
    return "no pretrained weights"
